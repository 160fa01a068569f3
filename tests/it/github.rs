//! The GitHub client (octocrab underneath) against the fake GitHub, through real HTTP on
//! 127.0.0.1: what it sends, what it makes of GitHub's answers, and when it retries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use featurebot::config::Secret;
use featurebot::github::{
    pr_number_from_url, GitHub, GithubError, Issue, IssueSpec, PrState, PullRequest,
    PullRequestSpec, ATTEMPTS,
};
use serde_json::json;

use crate::support::fake_github::{FakeGithub, TOKEN};

async fn fake() -> (FakeGithub, GitHub) {
    let fake = FakeGithub::start("acme", "shop").await;
    let github = GitHub::new(&fake.config()).unwrap();
    (fake, github)
}

fn spec(head: &str, base: &str) -> PullRequestSpec {
    PullRequestSpec {
        head: head.to_string(),
        base: base.to_string(),
        title: "Add a dark mode".to_string(),
        body: "Implements tasks/dark-mode.md.\n\n- [x] toggle".to_string(),
        draft: true,
    }
}

/// The error, after checking that neither its message nor its `Debug` shows a token.
fn no_token(err: GithubError, tokens: &[&str]) -> GithubError {
    for token in tokens.iter().chain([&TOKEN]) {
        assert!(!err.to_string().contains(token), "{err}");
        assert!(!format!("{err:?}").contains(token), "{err:?}");
    }
    err
}

#[tokio::test]
async fn check_names_the_repository_and_its_default_branch() {
    let (fake, github) = fake().await;

    assert_eq!(
        github.check().await.unwrap(),
        "acme/shop (default branch main)"
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/repos/acme/shop");
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        requests[0].header("x-github-api-version"),
        Some("2022-11-28")
    );
}

#[tokio::test]
async fn a_new_branch_gets_a_new_pull_request_with_exactly_the_spec() {
    let (fake, github) = fake().await;

    let pr = github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();

    assert_eq!(
        pr,
        PullRequest {
            number: 1,
            url: format!("{}acme/shop/pull/1", fake.api_base()),
            created: true,
        }
    );
    let requests = fake.requests();
    let calls: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            (
                "GET",
                "/repos/acme/shop/pulls?state=open&head=acme%3Afeature%2Fdark-mode&per_page=10"
            ),
            ("POST", "/repos/acme/shop/pulls"),
        ]
    );
    assert_eq!(
        requests[1].body,
        json!({
            "title": "Add a dark mode",
            "body": "Implements tasks/dark-mode.md.\n\n- [x] toggle",
            "head": "feature/dark-mode",
            "base": "main",
            "draft": true,
        })
    );
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["head"]["ref"], "feature/dark-mode");
    assert_eq!(pulls[0]["base"]["ref"], "main");
    assert_eq!(pulls[0]["draft"], true);
    assert_eq!(pulls[0]["state"], "open");
}

/// Where GitHub has no drafts, a draft is opened as a normal pull request marked not ready, and
/// its updates keep the marks until the spec no longer asks for a draft.
#[tokio::test]
async fn a_repository_without_drafts_gets_a_pull_request_marked_not_ready_until_it_is() {
    let (fake, github) = fake().await;
    fake.refuse_drafts();
    let pr = github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();
    assert_eq!((pr.number, pr.created), (1, true));
    let requests = fake.requests();
    let calls: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls[1..],
        [
            ("POST", "/repos/acme/shop/pulls"),
            ("POST", "/repos/acme/shop/pulls"),
            ("POST", "/repos/acme/shop/issues/1/labels"),
        ]
    );
    assert_eq!(requests[1].body["draft"], true);
    assert_eq!(requests[2].body["draft"], false);
    assert_eq!(requests[3].body, json!({"labels": ["not ready"]}));
    let marked_body = format!(
        "> **Not ready for review.** Some checks are red or the run stopped before its last step. This repository has no draft pull requests, so featurebot marks this one `[WIP]` and labels it `not ready` instead; both go once a run is green.\n\n{}",
        spec("", "").body
    );
    let check = |title: &str, body: &str, labels: &[&str]| {
        let pulls = fake.pulls();
        assert_eq!(pulls.len(), 1);
        let pr = &pulls[0];
        assert_eq!(pr["draft"], false);
        assert_eq!(pr["title"], title);
        assert_eq!(pr["body"], body);
        let names: Vec<&str> = pr["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, labels);
    };
    check("[WIP] Add a dark mode", &marked_body, &["not ready"]);

    // Still red: the update keeps the marks, and the label is not touched.
    let seen = fake.requests().len();
    github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();
    check("[WIP] Add a dark mode", &marked_body, &["not ready"]);
    let methods: Vec<String> = fake.requests()[seen..]
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(methods, ["GET", "PATCH"]);

    // Green: the marks go, the label too.
    let mut ready = spec("feature/dark-mode", "main");
    ready.draft = false;
    let pr = github.open_or_update_pr(&ready).await.unwrap();
    assert_eq!((pr.number, pr.created), (1, false));
    check("Add a dark mode", &ready.body, &[]);
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", "/repos/acme/shop/issues/1/labels/not%20ready")
    );

    // A pull request that is not a draft is opened with one request, as anywhere.
    let seen = fake.requests().len();
    let mut other = spec("feature/other", "main");
    other.draft = false;
    github.open_or_update_pr(&other).await.unwrap();
    let creates = fake.requests()[seen..]
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(creates, 1);
}

#[tokio::test]
async fn an_open_pull_request_for_the_branch_is_updated_not_duplicated() {
    let (fake, github) = fake().await;
    let first = github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();

    let mut again = spec("feature/dark-mode", "main");
    again.title = "Add a dark mode (v2)".to_string();
    again.body = "Now with a toggle.".to_string();
    let second = github.open_or_update_pr(&again).await.unwrap();

    assert_eq!(second.number, first.number);
    assert_eq!(second.url, first.url);
    assert!(!second.created);
    let requests = fake.requests();
    let last = requests.last().unwrap();
    assert_eq!(last.method, "PATCH");
    assert_eq!(last.path, "/repos/acme/shop/pulls/1");
    // octocrab also sends the number in the body; GitHub ignores it.
    assert_eq!(
        last.body,
        json!({
            "title": "Add a dark mode (v2)",
            "body": "Now with a toggle.",
            "base": "main",
            "pull_number": 1,
        })
    );
    let pulls = fake.pulls();
    assert_eq!(pulls.len(), 1);
    assert_eq!(pulls[0]["title"], "Add a dark mode (v2)");
    assert_eq!(pulls[0]["body"], "Now with a toggle.");
}

#[tokio::test]
async fn a_create_that_finds_the_pull_request_already_there_updates_it() {
    let (fake, github) = fake().await;
    github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();
    // The list misses it (as after a create whose answer was lost), so the create gets
    // GitHub's "already exists".
    fake.fail_next(200, "[]", Vec::new());

    let pr = github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();

    assert_eq!((pr.number, pr.created), (1, false));
    let methods: Vec<String> = fake.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["GET", "POST", "GET", "POST", "GET", "PATCH"]);
    assert_eq!(fake.pulls().len(), 1);
}

fn issue_spec(labels: &[&str]) -> IssueSpec {
    IssueSpec {
        title: "Dark mode".to_string(),
        body: "Planned in tasks/dark-mode.md.".to_string(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// The names of an issue's labels in the fake's JSON.
fn label_names(issue: &serde_json::Value) -> Vec<&str> {
    issue["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn an_issue_is_opened_with_exactly_the_spec() {
    let (fake, github) = fake().await;

    let issue = github
        .create_issue(&issue_spec(&["featurebot", "status: planned"]))
        .await
        .unwrap();

    assert_eq!(
        issue,
        Issue {
            number: 1,
            url: format!("{}acme/shop/issues/1", fake.api_base()),
        }
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/repos/acme/shop/issues");
    assert_eq!(
        requests[0].body,
        json!({
            "title": "Dark mode",
            "body": "Planned in tasks/dark-mode.md.",
            "labels": ["featurebot", "status: planned"],
        })
    );
    let issues = fake.issues();
    assert_eq!(issues.len(), 1);
    assert_eq!(label_names(&issues[0]), ["featurebot", "status: planned"]);
}

#[tokio::test]
async fn issues_and_pull_requests_share_numbers() {
    let (_fake, github) = fake().await;

    let pr = github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();
    let issue = github.create_issue(&issue_spec(&[])).await.unwrap();

    assert_eq!((pr.number, issue.number), (1, 2));
}

#[tokio::test]
async fn setting_labels_replaces_them_all() {
    let (fake, github) = fake().await;
    let issue = github
        .create_issue(&issue_spec(&["featurebot", "status: planned"]))
        .await
        .unwrap();

    github
        .set_issue_labels(issue.number, &strings(&["featurebot", "status: building"]))
        .await
        .unwrap();

    let last = fake.requests().pop().unwrap();
    assert_eq!(last.method, "PUT");
    assert_eq!(last.path, "/repos/acme/shop/issues/1/labels");
    assert_eq!(
        last.body,
        json!({"labels": ["featurebot", "status: building"]})
    );
    assert_eq!(
        label_names(&fake.issues()[0]),
        ["featurebot", "status: building"]
    );

    github.set_issue_labels(issue.number, &[]).await.unwrap();
    assert!(label_names(&fake.issues()[0]).is_empty());
}

#[tokio::test]
async fn a_pull_request_takes_labels_like_an_issue() {
    let (fake, github) = fake().await;
    let pr = github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();

    github
        .set_issue_labels(pr.number, &strings(&["featurebot"]))
        .await
        .unwrap();

    assert_eq!(label_names(&fake.pulls()[0]), ["featurebot"]);
}

#[tokio::test]
async fn labels_on_a_missing_issue_are_not_found() {
    let (_fake, github) = fake().await;

    let err = no_token(
        github
            .set_issue_labels(7, &strings(&["featurebot"]))
            .await
            .unwrap_err(),
        &[],
    );

    assert!(
        matches!(&err, GithubError::NotFound { what } if what == "issue #7 of acme/shop"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_pull_request_is_open_merged_or_closed() {
    let (fake, github) = fake().await;
    let merged = github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();
    let closed = github
        .open_or_update_pr(&spec("feature/light-mode", "main"))
        .await
        .unwrap();
    let open = github
        .open_or_update_pr(&spec("feature/sepia", "main"))
        .await
        .unwrap();
    fake.set_pull_state(merged.number, "closed", true);
    fake.set_pull_state(closed.number, "closed", false);

    let check = |number: u64, expected: PrState| {
        let github = github.clone();
        async move {
            assert_eq!(
                github.pull_request_state(number).await.unwrap(),
                expected,
                "#{number}"
            );
        }
    };
    check(open.number, PrState::Open).await;
    check(merged.number, PrState::Merged).await;
    check(closed.number, PrState::Closed).await;

    let last = fake.requests().pop().unwrap();
    assert_eq!(last.method, "GET");
    assert_eq!(
        last.path,
        format!("/repos/acme/shop/pulls/{}", closed.number)
    );
}

#[tokio::test]
async fn a_missing_pull_request_is_not_found() {
    let (fake, github) = fake().await;

    let err = no_token(github.pull_request_state(42).await.unwrap_err(), &[]);

    assert!(
        matches!(&err, GithubError::NotFound { what } if what == "pull request #42 of acme/shop"),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), 1, "a 404 is not retried");
}

#[test]
fn pull_request_numbers_come_from_their_urls() {
    let check = |url: &str, expected: Option<u64>| {
        assert_eq!(pr_number_from_url(url), expected, "for {url:?}");
    };
    check("https://github.com/acme/shop/pull/123", Some(123));
    check("https://github.com/acme/shop/pull/123/", Some(123));
    check("https://github.com/acme/shop/pull/123/files", Some(123));
    check(
        "https://github.com/acme/shop/pull/7#issuecomment-1",
        Some(7),
    );
    check("https://github.com/acme/shop/pull/7?w=1", Some(7));
    check("http://127.0.0.1:8080/acme/shop/pull/1", Some(1));
    check("https://github.com/pull/pull/pull/5", Some(5));
    check("https://github.com/acme/shop/issues/123", None);
    check("https://github.com/acme/shop/pull/", None);
    check("https://github.com/acme/shop/pull/abc", None);
    check("https://github.com/acme/shop/pull/+5", None);
    check("https://github.com/acme/shop/pull/0", None);
    check(
        "https://github.com/acme/shop/pull/99999999999999999999999",
        None,
    );
    check("https://github.com/pull/5", None);
    check("github.com/acme/shop/pull/123", None);
    check("", None);
}

#[tokio::test]
async fn a_refused_token_is_unauthorized_and_never_shown() {
    let fake = FakeGithub::start("acme", "shop").await;
    let mut config = fake.config();
    config.token = Some(Secret::new("ghp_wrongtoken456"));
    let github = GitHub::new(&config).unwrap();
    assert!(!format!("{github:?}").contains("ghp_wrongtoken456"));

    let err = no_token(github.check().await.unwrap_err(), &["ghp_wrongtoken456"]);

    assert!(matches!(err, GithubError::Unauthorized), "{err:?}");
    assert!(err.to_string().contains("GITHUB_TOKEN"), "{err}");
    assert_eq!(fake.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn no_log_line_shows_the_token_even_at_trace_level() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // While only one dispatcher exists, tracing caches a callsite's interest from whichever
    // thread reaches it first, so a parallel test without a subscriber could switch ours off;
    // a second (silent) dispatcher makes tracing ask every dispatcher instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let fake = FakeGithub::start("acme", "shop").await;
    fake.fail_next(500, r#"{"message":"Server Error"}"#, Vec::new());
    let github = GitHub::new(&fake.config()).unwrap();
    github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();
    let mut config = fake.config();
    config.token = Some(Secret::new("ghp_wrongtoken456"));
    GitHub::new(&config).unwrap().check().await.unwrap_err();

    let logs = logs.text();
    assert!(logs.contains("GitHub request failed, retrying"), "{logs}");
    assert!(logs.contains("GitHub refused the token"), "{logs}");
    for token in [TOKEN, "ghp_wrongtoken456"] {
        assert!(!logs.contains(token), "{logs}");
    }
}

#[tokio::test]
async fn a_missing_token_is_refused_before_any_request() {
    let fake = FakeGithub::start("acme", "shop").await;
    let mut config = fake.config();
    config.token = None;

    let err = GitHub::new(&config).unwrap_err().to_string();

    assert!(err.contains("GITHUB_TOKEN is not set"), "{err}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn forbidden_passes_on_githubs_message_without_retrying() {
    let (fake, github) = fake().await;
    fake.fail_next(
        403,
        r#"{"message":"Resource not accessible by personal access token","documentation_url":"https://docs.github.com/rest/pulls/pulls#create-a-pull-request","status":"403"}"#,
        Vec::new(),
    );

    let err = no_token(github.check().await.unwrap_err(), &[]);

    match &err {
        GithubError::Forbidden { message } => {
            assert_eq!(message, "Resource not accessible by personal access token")
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert!(err.to_string().contains("rate limit"), "{err}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn an_unknown_repository_is_not_found_and_names_the_config_keys() {
    let fake = FakeGithub::start("acme", "shop").await;
    let mut config = fake.config();
    config.repo = "shpo".to_string();
    let github = GitHub::new(&config).unwrap();

    let err = no_token(github.check().await.unwrap_err(), &[]);

    assert!(
        matches!(&err, GithubError::NotFound { what } if what == "repository acme/shpo"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("acme/shpo"), "{message}");
    assert!(message.contains("github.repo"), "{message}");
    assert_eq!(fake.requests()[0].path, "/repos/acme/shpo");
}

#[tokio::test]
async fn validation_failures_pass_on_githubs_message() {
    let check = |base: &'static str, expected: &'static str| async move {
        let (fake, github) = fake().await;
        let err = github
            .open_or_update_pr(&spec("feature/dark-mode", base))
            .await
            .unwrap_err();
        match no_token(err, &[]) {
            GithubError::Unprocessable { message } => assert_eq!(message, expected),
            other => panic!("expected Unprocessable, got {other:?}"),
        }
        assert!(fake.pulls().is_empty());
    };
    check(
        "missing-branch",
        "Validation Failed: base is invalid (is that branch on GitHub?)",
    )
    .await;
    check(
        "feature/dark-mode",
        "Validation Failed: No commits between feature/dark-mode and feature/dark-mode",
    )
    .await;
}

#[tokio::test]
async fn a_server_error_is_retried() {
    let (fake, github) = fake().await;
    fake.fail_next(500, r#"{"message":"Server Error"}"#, Vec::new());

    assert_eq!(
        github.check().await.unwrap(),
        "acme/shop (default branch main)"
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn server_errors_give_up_after_a_bounded_number_of_attempts() {
    let (fake, github) = fake().await;
    for _ in 0..ATTEMPTS + 2 {
        fake.fail_next(502, "<html>Bad Gateway</html>", vec![text_html()]);
    }
    let started = Instant::now();

    let err = no_token(github.check().await.unwrap_err(), &[]);

    assert!(
        matches!(err, GithubError::Server { status: 502 }),
        "{err:?}"
    );
    assert_eq!(fake.requests().len(), ATTEMPTS as usize);
    // Bounded backoff: nowhere near a long wait.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_secondary_rate_limit_is_waited_out_as_asked() {
    let (fake, github) = fake().await;
    fake.fail_next(
        403,
        r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits","status":"403"}"#,
        vec![("retry-after".to_string(), "1".to_string())],
    );
    let started = Instant::now();

    let pr = github
        .open_or_update_pr(&spec("feature/dark-mode", "main"))
        .await
        .unwrap();

    assert!(pr.created);
    assert!(started.elapsed() >= Duration::from_secs(1));
    let methods: Vec<String> = fake.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["GET", "GET", "POST"]);
}

#[tokio::test]
async fn a_long_rate_limit_goes_back_to_the_caller_at_once() {
    let (fake, github) = fake().await;
    fake.fail_next(
        429,
        r#"{"message":"API rate limit exceeded for user ID 583231.","status":"429"}"#,
        vec![("retry-after".to_string(), "3600".to_string())],
    );

    let err = no_token(github.check().await.unwrap_err(), &[]);

    assert!(
        matches!(err, GithubError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(3600)),
        "{err:?}"
    );
    assert!(err.to_string().contains("3600s"), "{err}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_a_network_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let fake = FakeGithub::start("acme", "shop").await;
    let mut config = fake.config();
    config.api_base = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let github = GitHub::new(&config).unwrap();

    let err = no_token(github.check().await.unwrap_err(), &[]);

    assert!(matches!(err, GithubError::Network(_)), "{err:?}");
    assert!(err.to_string().contains("github.api_base"), "{err}");
}

#[tokio::test]
async fn file_urls_point_at_the_web_pages() {
    let (fake, github) = fake().await;
    assert_eq!(
        github.file_url("main", "tasks/dark-mode.md"),
        format!("{}acme/shop/blob/main/tasks/dark-mode.md", fake.api_base())
    );

    let mut config = fake.config();
    config.api_base = url::Url::parse("https://api.github.com/").unwrap();
    let github = GitHub::new(&config).unwrap();
    assert_eq!(
        github.file_url("feature/dark-mode", "tasks/dark mode #2.md"),
        "https://github.com/acme/shop/blob/feature/dark-mode/tasks/dark%20mode%20%232.md"
    );
    assert!(fake.requests().is_empty());
}

fn text_html() -> (String, String) {
    ("content-type".to_string(), "text/html".to_string())
}

/// Log output collected in memory, for the current thread's subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}
