//! An in-process fake of GitHub's REST API for one repository, over real HTTP on 127.0.0.1,
//! so tests drive the production client (octocrab) at the wire.
//!
//! It knows the routes featurebot uses: the repository; listing pull requests (filtered by
//! `state` and `head`), reading, creating and updating one; creating and updating an issue, and
//! replacing (`PUT`) or adding to (`POST`) the labels of an issue or pull request, or removing
//! one (`DELETE`). It answers
//! with GitHub's JSON shapes, complete enough for octocrab's models, and with GitHub's rules: a
//! token in the `Authorization` header (401 otherwise), a `User-Agent` (403 otherwise), 422 for
//! a missing base branch (`missing-branch`), for a head equal to its base, for a second open
//! pull request from the same head and for an issue without a title; issues and pull requests
//! share one sequence of numbers, and a label the repository lacks is created when first used.
//! [`FakeGithub::refuse_drafts`] makes it a private repository under GitHub Free or Pro, which
//! refuses a draft pull request with GitHub's 422.
//! Anything else is a 404 `{"message":"Not Found"}`, recorded like every request.
//! [`FakeGithub::set_pull_state`] plays a maintainer closing or merging a pull request. The
//! Actions routes (dispatch, runs, jobs, logs, cancel) and the contents API live in
//! [`actions`], with their test-facing controls. [`FakeGithub::fail_next`] queues raw answers
//! that take precedence over all of that, then [`FakeGithub::fail_route`]'s. Like the other
//! fakes it serves through [`super::http`]: one request per connection, `Connection: close`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use featurebot::config::{GithubConfig, Secret};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use super::http;
pub use super::http::Recorded;

pub mod actions;

/// The token [`FakeGithub::config`] carries and the fake accepts.
pub const TOKEN: &str = "ghp_testtoken123";
/// The fake's sha for every branch tip.
const SHA: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
const CREATED_AT: &str = "2024-05-01T12:00:00Z";
const UPDATED_AT: &str = "2024-05-01T12:30:00Z";

/// A running fake; clones share the server, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeGithub {
    addr: SocketAddr,
    state: Arc<State>,
    _servers: Arc<[http::Server; 2]>,
}

impl FakeGithub {
    pub async fn start(owner: &str, repo: &str) -> FakeGithub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Another host, as GitHub's log storage is: octocrab sends the token to the API's
        // host only.
        let storage = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(State {
            owner: owner.to_string(),
            repo: repo.to_string(),
            base: format!("http://{addr}"),
            storage_base: format!("http://{}", storage.local_addr().unwrap()),
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            pulls: Mutex::new(Vec::new()),
            issues: Mutex::new(Vec::new()),
            labels: Mutex::new(Vec::new()),
            last_number: AtomicU64::new(0),
            drafts_refused: AtomicBool::new(false),
            actions: Mutex::new(actions::Actions::default()),
        });
        let api = http::serve(listener, state.clone(), |socket, state| async move {
            // A client that hangs up early is not the fake's problem.
            let _ = serve(socket, &state, false).await;
        });
        let storage = http::serve(storage, state.clone(), |socket, state| async move {
            let _ = serve(socket, &state, true).await;
        });
        FakeGithub {
            addr,
            state,
            _servers: Arc::new([api, storage]),
        }
    }

    /// The API root, `http://127.0.0.1:PORT/`; the fake's web pages live under it too.
    pub fn api_base(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// A `[github]` config pointing here, with the token the fake accepts.
    pub fn config(&self) -> GithubConfig {
        GithubConfig {
            api_base: url::Url::parse(&self.api_base()).unwrap(),
            owner: self.state.owner.clone(),
            repo: self.state.repo.clone(),
            token: Some(Secret::new(TOKEN)),
            issue_on_approval: false,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every pull request, in GitHub's JSON, oldest first.
    pub fn pulls(&self) -> Vec<Value> {
        self.state.pulls.lock().unwrap().clone()
    }

    /// Every issue, in GitHub's JSON, oldest first.
    pub fn issues(&self) -> Vec<Value> {
        self.state.issues.lock().unwrap().clone()
    }

    /// Sets pull request `number` to `state` (`"open"` or `"closed"`), merged or not, as a
    /// maintainer would on GitHub. Panics when there is no such pull request, or when asked for
    /// an open merged one.
    pub fn set_pull_state(&self, number: u64, state: &str, merged: bool) {
        assert!(
            state == "closed" || (state == "open" && !merged),
            "fake github: no pull request is {state} and merged={merged}"
        );
        let mut pulls = self.state.pulls.lock().unwrap();
        let pr = pulls
            .iter_mut()
            .find(|pr| pr["number"] == number)
            .unwrap_or_else(|| panic!("fake github: no pull request #{number}"));
        let closed = state == "closed";
        pr["state"] = json!(state);
        pr["merged"] = json!(merged);
        pr["merged_at"] = if merged {
            json!(UPDATED_AT)
        } else {
            Value::Null
        };
        pr["merge_commit_sha"] = if merged { json!(SHA) } else { Value::Null };
        pr["closed_at"] = if closed {
            json!(UPDATED_AT)
        } else {
            Value::Null
        };
        pr["mergeable_state"] = json!(if closed { "unknown" } else { "clean" });
        pr["updated_at"] = json!(UPDATED_AT);
    }

    /// From now on the repository has no draft pull requests, as a private repository under
    /// GitHub Free or Pro: creating one is refused with GitHub's 422.
    pub fn refuse_drafts(&self) {
        self.state.drafts_refused.store(true, Ordering::SeqCst);
    }

    /// Queues a raw answer for the next request that finds the queue non-empty, whatever it
    /// asks. The body is sent as given, as JSON unless a header says otherwise.
    pub fn fail_next(&self, status: u16, body: &str, headers: Vec<(String, String)>) {
        self.state.script.lock().unwrap().push_back(Answer {
            status,
            headers,
            body: body.to_string(),
        });
    }
}

struct State {
    owner: String,
    repo: String,
    /// `http://127.0.0.1:PORT`, for the URLs in answers.
    base: String,
    /// The log storage's root, on a port of its own.
    storage_base: String,
    script: Mutex<VecDeque<Answer>>,
    requests: Mutex<Vec<Recorded>>,
    pulls: Mutex<Vec<Value>>,
    /// Locked before `pulls` and `labels` when more than one is needed.
    issues: Mutex<Vec<Value>>,
    /// The repository's labels, in GitHub's JSON.
    labels: Mutex<Vec<Value>>,
    /// The number of the newest issue or pull request; they share the sequence.
    last_number: AtomicU64,
    /// Whether a draft pull request is refused ([`FakeGithub::refuse_drafts`]).
    drafts_refused: AtomicBool,
    actions: Mutex<actions::Actions>,
}

#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(status: u16, body: Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }

    /// GitHub's error shape.
    fn error(status: u16, message: &str, docs: &str) -> Answer {
        Answer::json(
            status,
            json!({"message": message, "documentation_url": docs, "status": status.to_string()}),
        )
    }

    /// GitHub's 422 with an `errors` list.
    fn validation(error: Value) -> Answer {
        Answer::validation_for(
            error,
            "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
        )
    }

    fn validation_for(error: Value, docs: &str) -> Answer {
        Answer::json(
            422,
            json!({
                "message": "Validation Failed",
                "errors": [error],
                "documentation_url": docs,
                "status": "422",
            }),
        )
    }
}

/// Serves one connection: the API, or the log storage when `storage`.
async fn serve(mut socket: TcpStream, state: &State, storage: bool) -> std::io::Result<()> {
    let request = Recorded::from(http::read_request(&mut socket).await?);
    let answer = {
        let scripted = state.script.lock().unwrap().pop_front();
        let answer = scripted
            .or_else(|| actions::fault(state, &request))
            .unwrap_or_else(|| {
                if storage {
                    actions::log_storage(state, &request)
                } else {
                    route(state, &request)
                }
            });
        state.requests.lock().unwrap().push(request);
        answer
    };
    write_answer(&mut socket, &answer).await
}

fn route(state: &State, request: &Recorded) -> Answer {
    let (path, query) = request
        .path
        .split_once('?')
        .unwrap_or((request.path.as_str(), ""));
    let query: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if request.header("user-agent").is_none() {
        return Answer::error(
            403,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.",
            "https://docs.github.com/rest",
        );
    }
    let authorized = request
        .header("authorization")
        .is_some_and(|auth| auth == format!("Bearer {TOKEN}") || auth == format!("token {TOKEN}"));
    if !authorized {
        return Answer::error(401, "Bad credentials", "https://docs.github.com/rest");
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ours = |owner: &str, repo: &str| {
        owner.eq_ignore_ascii_case(&state.owner) && repo.eq_ignore_ascii_case(&state.repo)
    };
    if let ["repos", owner, repo, ..] = segments.as_slice() {
        let owned_param = |name: &str| param(name).map(str::to_string);
        if ours(owner, repo) {
            if let Some(answer) = actions::route(state, request, &segments, &owned_param) {
                return answer;
            }
        }
    }
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["repos", owner, repo]) if ours(owner, repo) => {
            Answer::json(200, repository_json(state))
        }
        ("GET", ["repos", owner, repo, "pulls"]) if ours(owner, repo) => {
            let wanted_state = param("state").unwrap_or("open");
            let pulls = state.pulls.lock().unwrap();
            let found: Vec<Value> = pulls
                .iter()
                .filter(|pr| wanted_state == "all" || pr["state"] == wanted_state)
                .filter(|pr| {
                    param("head").is_none_or(|head| {
                        pr["head"]["label"]
                            .as_str()
                            .is_some_and(|label| label.eq_ignore_ascii_case(head))
                    })
                })
                .filter(|pr| param("base").is_none_or(|base| pr["base"]["ref"] == base))
                .cloned()
                .collect();
            Answer::json(200, Value::Array(found))
        }
        ("POST", ["repos", owner, repo, "pulls"]) if ours(owner, repo) => {
            create_pull(state, &request.body)
        }
        ("GET", ["repos", owner, repo, "pulls", number]) if ours(owner, repo) => {
            let pulls = state.pulls.lock().unwrap();
            match pulls.iter().find(|pr| is_number(pr, number)) {
                Some(pr) => Answer::json(200, pr.clone()),
                None => not_found(),
            }
        }
        ("PATCH", ["repos", owner, repo, "pulls", number]) if ours(owner, repo) => {
            update_pull(state, number, &request.body)
        }
        ("POST", ["repos", owner, repo, "issues"]) if ours(owner, repo) => {
            create_issue(state, &request.body)
        }
        ("PATCH", ["repos", owner, repo, "issues", number]) if ours(owner, repo) => {
            update_issue(state, number, &request.body)
        }
        (method @ ("PUT" | "POST"), ["repos", owner, repo, "issues", number, "labels"])
            if ours(owner, repo) =>
        {
            set_labels(state, number, &request.body, method == "PUT")
        }
        ("DELETE", ["repos", owner, repo, "issues", number, "labels", name])
            if ours(owner, repo) =>
        {
            remove_label(state, number, name)
        }
        _ => not_found(),
    }
}

/// Whether `pr` is the pull request numbered `number` (a path segment).
fn is_number(pr: &Value, number: &str) -> bool {
    number.parse::<u64>().is_ok_and(|n| pr["number"] == n)
}

fn not_found() -> Answer {
    Answer::error(404, "Not Found", "https://docs.github.com/rest")
}

fn create_pull(state: &State, body: &Value) -> Answer {
    for field in ["head", "base"] {
        if body[field].as_str().is_none() {
            return Answer::error(
                422,
                &format!("Invalid request.\n\n\"{field}\" wasn't supplied."),
                "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
            );
        }
    }
    let head = body["head"].as_str().unwrap_or_default();
    let base = body["base"].as_str().unwrap_or_default();
    if base == "missing-branch" {
        return Answer::validation(
            json!({"resource": "PullRequest", "field": "base", "code": "invalid"}),
        );
    }
    if head == base {
        return Answer::validation(json!({
            "resource": "PullRequest",
            "code": "custom",
            "message": format!("No commits between {base} and {head}"),
        }));
    }
    let Some(title) = body["title"].as_str() else {
        return Answer::validation(
            json!({"resource": "Issue", "field": "title", "code": "missing_field"}),
        );
    };
    let draft = body["draft"].as_bool().unwrap_or(false);
    if draft && state.drafts_refused.load(Ordering::SeqCst) {
        return Answer::error(
            422,
            "Draft pull requests are not supported in this repository.",
            "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
        );
    }
    let label = format!("{}:{head}", state.owner);
    let mut pulls = state.pulls.lock().unwrap();
    if pulls
        .iter()
        .any(|pr| pr["state"] == "open" && pr["head"]["label"] == label.as_str())
    {
        return Answer::validation(json!({
            "resource": "PullRequest",
            "code": "custom",
            "message": format!("A pull request already exists for {label}."),
        }));
    }
    let number = state.last_number.fetch_add(1, Ordering::SeqCst) + 1;
    let pr = pull_json(
        state,
        number,
        title,
        body["body"].as_str(),
        head,
        base,
        draft,
    );
    pulls.push(pr.clone());
    let mut answer = Answer::json(201, pr);
    answer.headers.push((
        "location".to_string(),
        format!(
            "{}/repos/{}/{}/pulls/{number}",
            state.base, state.owner, state.repo
        ),
    ));
    answer
}

fn update_pull(state: &State, number: &str, body: &Value) -> Answer {
    let mut pulls = state.pulls.lock().unwrap();
    let Some(pr) = pulls.iter_mut().find(|pr| is_number(pr, number)) else {
        return not_found();
    };
    if body["base"] == "missing-branch" {
        return Answer::validation(
            json!({"resource": "PullRequest", "field": "base", "code": "invalid"}),
        );
    }
    for field in ["title", "body", "state"] {
        if let Some(value) = body[field].as_str() {
            pr[field] = json!(value);
        }
    }
    if let Some(base) = body["base"].as_str() {
        pr["base"]["ref"] = json!(base);
        pr["base"]["label"] = json!(format!("{}:{base}", state.owner));
    }
    pr["updated_at"] = json!(UPDATED_AT);
    Answer::json(200, pr.clone())
}

const ISSUE_DOCS: &str = "https://docs.github.com/rest/issues/issues#create-an-issue";
const LABELS_DOCS: &str = "https://docs.github.com/rest/issues/labels#set-labels-for-an-issue";

fn create_issue(state: &State, body: &Value) -> Answer {
    let Some(title) = body["title"].as_str().filter(|t| !t.is_empty()) else {
        return Answer::validation_for(
            json!({"resource": "Issue", "field": "title", "code": "missing_field"}),
            ISSUE_DOCS,
        );
    };
    let names = match label_names(&body["labels"], true) {
        Ok(names) => names,
        Err(answer) => return answer,
    };
    let mut issues = state.issues.lock().unwrap();
    let labels = labels_json(state, &names);
    let number = state.last_number.fetch_add(1, Ordering::SeqCst) + 1;
    let issue = issue_json(state, number, title, body["body"].as_str(), labels);
    issues.push(issue.clone());
    let mut answer = Answer::json(201, issue);
    answer.headers.push((
        "location".to_string(),
        format!(
            "{}/repos/{}/{}/issues/{number}",
            state.base, state.owner, state.repo
        ),
    ));
    answer
}

fn update_issue(state: &State, number: &str, body: &Value) -> Answer {
    if body
        .get("title")
        .is_some_and(|t| t.as_str().is_none_or(str::is_empty))
    {
        return Answer::validation_for(
            json!({"resource": "Issue", "field": "title", "code": "missing_field"}),
            ISSUE_DOCS,
        );
    }
    let names = match body.get("labels") {
        Some(labels) => match label_names(labels, false) {
            Ok(names) => Some(names),
            Err(answer) => return answer,
        },
        None => None,
    };
    with_issue(state, number, |issue| {
        for field in ["title", "body"] {
            if let Some(value) = body.get(field).filter(|v| v.is_string() || v.is_null()) {
                issue[field] = value.clone();
            }
        }
        match body["state"].as_str() {
            Some("closed") => {
                issue["state"] = json!("closed");
                issue["closed_at"] = json!(UPDATED_AT);
                issue["state_reason"] = json!(body["state_reason"].as_str().unwrap_or("completed"));
            }
            Some("open") => {
                issue["state"] = json!("open");
                issue["closed_at"] = Value::Null;
                issue["state_reason"] = json!("reopened");
            }
            _ => {}
        }
        if let Some(names) = &names {
            issue["labels"] = labels_json(state, names);
        }
        issue["updated_at"] = json!(UPDATED_AT);
        Answer::json(200, issue.clone())
    })
}

/// `PUT` (`replace`) or `POST` the labels of an issue or pull request; the answer is the
/// labels it has afterwards.
fn set_labels(state: &State, number: &str, body: &Value, replace: bool) -> Answer {
    // GitHub takes `{"labels": [...]}` or the bare list.
    let labels = if body.is_array() {
        body
    } else {
        &body["labels"]
    };
    if labels.is_null() && !replace {
        return Answer::validation_for(
            json!({"resource": "Label", "field": "labels", "code": "missing_field"}),
            LABELS_DOCS,
        );
    }
    let names = match label_names(labels, true) {
        Ok(names) => names,
        Err(answer) => return answer,
    };
    with_issue(state, number, |issue| {
        let mut all: Vec<String> = if replace {
            Vec::new()
        } else {
            issue["labels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|label| label["name"].as_str().map(str::to_string))
                .collect()
        };
        for name in names {
            if !all.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
                all.push(name);
            }
        }
        issue["labels"] = labels_json(state, &all);
        issue["updated_at"] = json!(UPDATED_AT);
        Answer::json(200, issue["labels"].clone())
    })
}

/// `DELETE .../labels/{name}`: the labels left, or GitHub's 404 when the issue lacks it.
fn remove_label(state: &State, number: &str, name: &str) -> Answer {
    // A path segment, percent-encoded; octocrab encodes every character but letters and digits,
    // so form decoding (which would read a literal `+` as a space) decodes it exactly.
    let name: String = url::form_urlencoded::parse(name.as_bytes())
        .map(|(key, _)| key.into_owned())
        .collect();
    with_issue(state, number, |issue| {
        let labels = issue["labels"].as_array().cloned().unwrap_or_default();
        let left: Vec<Value> = labels
            .iter()
            .filter(|l| {
                !l["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&name))
            })
            .cloned()
            .collect();
        if left.len() == labels.len() {
            return Answer::error(
                404,
                "Label does not exist",
                "https://docs.github.com/rest/issues/labels#remove-a-label-from-an-issue",
            );
        }
        issue["labels"] = Value::Array(left);
        issue["updated_at"] = json!(UPDATED_AT);
        Answer::json(200, issue["labels"].clone())
    })
}

/// Runs `change` on issue `number` (a path segment), which may be a pull request: GitHub's
/// issue routes take both. A 404 when there is neither.
fn with_issue(state: &State, number: &str, change: impl FnOnce(&mut Value) -> Answer) -> Answer {
    let mut issues = state.issues.lock().unwrap();
    if let Some(issue) = issues.iter_mut().find(|issue| is_number(issue, number)) {
        return change(issue);
    }
    drop(issues);
    let mut pulls = state.pulls.lock().unwrap();
    match pulls.iter_mut().find(|pr| is_number(pr, number)) {
        Some(pr) => change(pr),
        None => not_found(),
    }
}

/// The names in a `labels` list of names or of `{"name": ...}` objects; a missing list is
/// empty when `missing_ok`.
fn label_names(labels: &Value, missing_ok: bool) -> Result<Vec<String>, Answer> {
    let invalid = || {
        Answer::validation_for(
            json!({"resource": "Label", "field": "labels", "code": "invalid"}),
            LABELS_DOCS,
        )
    };
    let Some(list) = labels.as_array() else {
        return if labels.is_null() && missing_ok {
            Ok(Vec::new())
        } else {
            Err(invalid())
        };
    };
    list.iter()
        .map(|label| {
            label
                .as_str()
                .or_else(|| label["name"].as_str())
                .filter(|name| !name.trim().is_empty())
                .map(str::to_string)
                .ok_or_else(invalid)
        })
        .collect()
}

/// The repository's labels called `names` (case-insensitively), each created (grey, no
/// description) if missing, as GitHub does when a label is put on an issue.
fn labels_json(state: &State, names: &[String]) -> Value {
    let mut labels = state.labels.lock().unwrap();
    let mut found: Vec<Value> = Vec::new();
    for name in names {
        let existing = labels.iter().find(|l| {
            l["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        });
        let label = match existing {
            Some(label) => label.clone(),
            None => {
                let id = 208_045_946 + labels.len() as u64;
                let encoded: String =
                    url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
                let label = json!({
                    "id": id,
                    "node_id": format!("LA_kwDOAAAAAM8{id:010}"),
                    "url": format!(
                        "{}/repos/{}/{}/labels/{}",
                        state.base,
                        state.owner,
                        state.repo,
                        encoded.replace('+', "%20")
                    ),
                    "name": name,
                    "color": "ededed",
                    "default": false,
                    "description": null,
                });
                labels.push(label.clone());
                label
            }
        };
        if !found.iter().any(|l| l["id"] == label["id"]) {
            found.push(label);
        }
    }
    Value::Array(found)
}

/// An issue as GitHub returns it from create and update.
fn issue_json(state: &State, number: u64, title: &str, body: Option<&str>, labels: Value) -> Value {
    let repo_api = format!("{}/repos/{}/{}", state.base, state.owner, state.repo);
    let api = format!("{repo_api}/issues/{number}");
    json!({
        "id": 2_000_000 + number,
        "node_id": format!("I_kwDOAAAAAM4{number:08}"),
        "url": api,
        "repository_url": repo_api,
        "labels_url": format!("{api}/labels{{/name}}"),
        "comments_url": format!("{api}/comments"),
        "events_url": format!("{api}/events"),
        "html_url": format!("{}/{}/{}/issues/{number}", state.base, state.owner, state.repo),
        "number": number,
        "state": "open",
        "state_reason": null,
        "title": title,
        "body": body,
        "user": user_json(state, &state.owner),
        "labels": labels,
        "assignee": null,
        "assignees": [],
        "milestone": null,
        "locked": false,
        "active_lock_reason": null,
        "comments": 0,
        "closed_at": null,
        "closed_by": null,
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
        "author_association": "OWNER",
        "timeline_url": format!("{api}/timeline"),
        "performed_via_github_app": null,
        "reactions": {
            "url": format!("{api}/reactions"),
            "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
            "confused": 0, "heart": 0, "rocket": 0, "eyes": 0,
        },
    })
}

/// A user as GitHub embeds it (`simple-user`), every URL field included: octocrab requires
/// them all.
fn user_json(state: &State, login: &str) -> Value {
    let api = format!("{}/users/{login}", state.base);
    json!({
        "login": login,
        "id": 583231,
        "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": format!("{}/{login}", state.base),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": "User",
        "user_view_type": "public",
        "site_admin": false,
    })
}

/// The repository as `GET /repos/{owner}/{repo}` returns it (most fields).
fn repository_json(state: &State) -> Value {
    let full = format!("{}/{}", state.owner, state.repo);
    let api = format!("{}/repos/{full}", state.base);
    let host = state.base.trim_start_matches("http://");
    let mut repo = json!({
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": state.repo,
        "full_name": full,
        "owner": user_json(state, &state.owner),
        "private": false,
        "html_url": format!("{}/{full}", state.base),
        "description": "The repository featurebot works on",
        "fork": false,
        "url": api,
        "git_url": format!("git://{host}/{full}.git"),
        "ssh_url": format!("git@{host}:{full}.git"),
        "clone_url": format!("{}/{full}.git", state.base),
        "svn_url": format!("{}/{full}", state.base),
    });
    // In two parts: one json! for all would pass the macro recursion limit.
    let settings = json!({
        "mirror_url": null,
        "homepage": null,
        "language": "Rust",
        "forks_count": 0,
        "stargazers_count": 3,
        "watchers_count": 3,
        "size": 108,
        "default_branch": "main",
        "open_issues_count": 0,
        "is_template": false,
        "topics": [],
        "has_issues": true,
        "has_projects": false,
        "has_wiki": false,
        "has_pages": false,
        "has_downloads": true,
        "has_discussions": false,
        "archived": false,
        "disabled": false,
        "visibility": "public",
        "pushed_at": UPDATED_AT,
        "created_at": CREATED_AT,
        "updated_at": UPDATED_AT,
        "permissions": {"admin": false, "maintain": false, "push": true, "triage": true, "pull": true},
        "allow_rebase_merge": true,
        "allow_squash_merge": true,
        "allow_merge_commit": true,
        "allow_auto_merge": false,
        "delete_branch_on_merge": false,
        "allow_forking": true,
        "web_commit_signoff_required": false,
        "license": null,
        "forks": 0,
        "open_issues": 0,
        "watchers": 3,
        "network_count": 0,
        "subscribers_count": 1,
    });
    if let (Some(repo), Value::Object(settings)) = (repo.as_object_mut(), settings) {
        repo.extend(settings);
    }
    // The API URL templates, `{api}/<suffix>` each.
    let templates = [
        ("archive_url", "{archive_format}{/ref}"),
        ("assignees_url", "assignees{/user}"),
        ("blobs_url", "git/blobs{/sha}"),
        ("branches_url", "branches{/branch}"),
        ("collaborators_url", "collaborators{/collaborator}"),
        ("comments_url", "comments{/number}"),
        ("commits_url", "commits{/sha}"),
        ("compare_url", "compare/{base}...{head}"),
        ("contents_url", "contents/{+path}"),
        ("contributors_url", "contributors"),
        ("deployments_url", "deployments"),
        ("downloads_url", "downloads"),
        ("events_url", "events"),
        ("forks_url", "forks"),
        ("git_commits_url", "git/commits{/sha}"),
        ("git_refs_url", "git/refs{/sha}"),
        ("git_tags_url", "git/tags{/sha}"),
        ("hooks_url", "hooks"),
        ("issue_comment_url", "issues/comments{/number}"),
        ("issue_events_url", "issues/events{/number}"),
        ("issues_url", "issues{/number}"),
        ("keys_url", "keys{/key_id}"),
        ("labels_url", "labels{/name}"),
        ("languages_url", "languages"),
        ("merges_url", "merges"),
        ("milestones_url", "milestones{/number}"),
        (
            "notifications_url",
            "notifications{?since,all,participating}",
        ),
        ("pulls_url", "pulls{/number}"),
        ("releases_url", "releases{/id}"),
        ("stargazers_url", "stargazers"),
        ("statuses_url", "statuses/{sha}"),
        ("subscribers_url", "subscribers"),
        ("subscription_url", "subscription"),
        ("tags_url", "tags"),
        ("teams_url", "teams"),
        ("trees_url", "git/trees{/sha}"),
    ];
    for (key, suffix) in templates {
        repo[key] = json!(format!("{api}/{suffix}"));
    }
    repo
}

/// A branch end of a pull request (`head` or `base`).
fn branch_json(state: &State, branch: &str) -> Value {
    json!({
        "label": format!("{}:{branch}", state.owner),
        "ref": branch,
        "sha": SHA,
        "user": user_json(state, &state.owner),
        "repo": repository_json(state),
    })
}

/// A pull request as GitHub returns it from create, update and list.
fn pull_json(
    state: &State,
    number: u64,
    title: &str,
    body: Option<&str>,
    head: &str,
    base: &str,
    draft: bool,
) -> Value {
    let repo_api = format!("{}/repos/{}/{}", state.base, state.owner, state.repo);
    let api = format!("{repo_api}/pulls/{number}");
    let html = format!(
        "{}/{}/{}/pull/{number}",
        state.base, state.owner, state.repo
    );
    let issue = format!("{repo_api}/issues/{number}");
    let links = json!({
        "self": {"href": api},
        "html": {"href": html},
        "issue": {"href": issue},
        "comments": {"href": format!("{issue}/comments")},
        "review_comments": {"href": format!("{api}/comments")},
        "review_comment": {"href": format!("{repo_api}/pulls/comments{{/number}}")},
        "commits": {"href": format!("{api}/commits")},
        "statuses": {"href": format!("{repo_api}/statuses/{SHA}")},
    });
    let mut pr = json!({
        "url": api,
        "id": 1_000_000 + number,
        "node_id": format!("PR_kwDOAAAAAM4{number:08}"),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": issue,
        "commits_url": format!("{api}/commits"),
        "review_comments_url": format!("{api}/comments"),
        "review_comment_url": format!("{repo_api}/pulls/comments{{/number}}"),
        "comments_url": format!("{issue}/comments"),
        "statuses_url": format!("{repo_api}/statuses/{SHA}"),
        "number": number,
        "state": "open",
        "locked": false,
        "title": title,
        "user": user_json(state, &state.owner),
        "body": body,
        "labels": [],
        "milestone": null,
        "active_lock_reason": null,
        "created_at": CREATED_AT,
        "updated_at": CREATED_AT,
        "closed_at": null,
        "merged_at": null,
        "merge_commit_sha": null,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": branch_json(state, head),
        "base": branch_json(state, base),
        "_links": links,
    });
    // In two parts: one json! for all would pass the macro recursion limit.
    let rest = json!({
        "author_association": "OWNER",
        "auto_merge": null,
        "draft": draft,
        "merged": false,
        "mergeable": null,
        "rebaseable": null,
        "mergeable_state": "unknown",
        "merged_by": null,
        "comments": 0,
        "review_comments": 0,
        "maintainer_can_modify": false,
        "commits": 1,
        "additions": 10,
        "deletions": 0,
        "changed_files": 1,
    });
    if let (Some(pr), Value::Object(rest)) = (pr.as_object_mut(), rest) {
        pr.extend(rest);
    }
    pr
}

/// Writes an answer with the headers GitHub puts on every one, as JSON unless the answer names
/// another content type.
async fn write_answer(socket: &mut TcpStream, answer: &Answer) -> std::io::Result<()> {
    let mut headers = vec![
        ("server".to_string(), "github.com".to_string()),
        ("x-github-request-id".to_string(), "FAKE:0001".to_string()),
    ];
    headers.extend(http::with_content_type(
        &answer.headers,
        "application/json; charset=utf-8",
    ));
    http::write_response(socket, answer.status, &headers, answer.body.as_bytes()).await
}
