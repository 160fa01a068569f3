//! The git layer against real repositories: what `commit_file` writes, what it leaves alone,
//! how it refuses, and what `push_base`, `inspect` and `read_file` report, checked with the
//! git CLI.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use featurebot::config::Secret;
use featurebot::repo::{self, RepoError};

use crate::support::app::TestApp;
use crate::support::git::{git, repo_config, repo_with_commit, repo_with_remote};

const PLAN: &str = "# Plan\n\nDo the thing.\n";
const MESSAGE: &str = "Add plan for dark mode\n\nWritten by featurebot.\n\nFeature-Id: 42\n";

fn name(branch: &str) -> featurebot::model::BranchName {
    featurebot::model::BranchName::parse(branch).unwrap()
}

fn rev(repo: &Path, revision: &str) -> String {
    git(repo, &["rev-parse", revision]).trim().to_string()
}

fn status(repo: &Path) -> String {
    git(repo, &["status", "--porcelain=v1", "--untracked-files=all"])
}

#[test]
fn commit_adds_exactly_one_file_on_top_of_the_tip() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    let before = rev(&repo.path, "main");

    let commit =
        repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), PLAN.as_bytes(), MESSAGE)
            .unwrap();

    assert_eq!(rev(&repo.path, "main"), commit);
    assert_eq!(rev(&repo.path, &format!("{commit}^")), before);
    assert_eq!(
        git(&repo.path, &["rev-list", "--parents", "-n1", &commit])
            .split_whitespace()
            .count(),
        2,
        "exactly one parent"
    );
    assert_eq!(
        git(
            &repo.path,
            &[
                "diff-tree",
                "--no-commit-id",
                "--name-status",
                "-r",
                &commit
            ]
        ),
        "A\ttasks/plan.md\n"
    );
    assert_eq!(
        git(&repo.path, &["show", &format!("{commit}:tasks/plan.md")]),
        PLAN
    );
    assert_eq!(
        git(&repo.path, &["log", "-1", "--format=%B", &commit]),
        format!("{MESSAGE}\n")
    );
    assert_eq!(
        git(
            &repo.path,
            &[
                "log",
                "-1",
                "--format=%(trailers:key=Feature-Id,valueonly)",
                &commit
            ]
        )
        .trim(),
        "42"
    );
    assert_eq!(
        git(
            &repo.path,
            &["log", "-1", "--format=%an <%ae>|%cn <%ce>", &commit]
        )
        .trim(),
        "featurebot <featurebot@test.invalid>|featurebot <featurebot@test.invalid>"
    );
    // HEAD is main, so the file is checked out and git sees nothing to commit, even without
    // refreshing the index first.
    assert_eq!(
        std::fs::read_to_string(repo.path.join("tasks/plan.md")).unwrap(),
        PLAN
    );
    assert_eq!(status(&repo.path), "");
    git(&repo.path, &["diff-files", "--quiet"]);
    git(&repo.path, &["diff-index", "--cached", "--quiet", "HEAD"]);
}

#[test]
fn commit_ignores_dirty_and_staged_changes_of_the_user() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    std::fs::write(repo.path.join("README.md"), "edited but not staged\n").unwrap();
    std::fs::write(repo.path.join("notes.txt"), "staged\n").unwrap();
    git(&repo.path, &["add", "notes.txt"]);
    std::fs::write(repo.path.join("scratch.txt"), "untracked\n").unwrap();
    let before = status(&repo.path);
    assert_eq!(before, " M README.md\nA  notes.txt\n?? scratch.txt\n");

    let commit =
        repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), PLAN.as_bytes(), MESSAGE)
            .unwrap();

    assert_eq!(
        git(&repo.path, &["ls-tree", "-r", "--name-only", &commit]),
        "README.md\ntasks/plan.md\n"
    );
    assert_eq!(
        git(&repo.path, &["show", &format!("{commit}:README.md")]),
        "# test repository\n"
    );
    assert_eq!(status(&repo.path), before);
    assert_eq!(
        git(&repo.path, &["diff", "--cached", "--name-only"]),
        "notes.txt\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.path.join("README.md")).unwrap(),
        "edited but not staged\n"
    );
}

#[test]
fn commit_keeps_the_users_own_edits_to_the_plan_file() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"version 1\n", "Plan v1").unwrap();
    std::fs::write(repo.path.join("tasks/plan.md"), "my local notes\n").unwrap();

    let commit =
        repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"version 2\n", "Plan v2")
            .unwrap();

    assert_eq!(
        git(&repo.path, &["show", &format!("{commit}:tasks/plan.md")]),
        "version 2\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.path.join("tasks/plan.md")).unwrap(),
        "my local notes\n"
    );
    // The user's version is an unstaged change against the new commit; nothing is staged.
    assert_eq!(status(&repo.path), " M tasks/plan.md\n");
}

#[test]
fn commit_with_another_branch_checked_out_moves_only_the_base_ref() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    git(&repo.path, &["switch", "--quiet", "-c", "feature"]);
    std::fs::write(repo.path.join("README.md"), "work in progress\n").unwrap();
    let feature = rev(&repo.path, "feature");
    let before = status(&repo.path);

    let commit =
        repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), PLAN.as_bytes(), MESSAGE)
            .unwrap();

    assert_eq!(rev(&repo.path, "main"), commit);
    assert_eq!(rev(&repo.path, "HEAD"), feature);
    assert_eq!(
        git(&repo.path, &["symbolic-ref", "--short", "HEAD"]).trim(),
        "feature"
    );
    assert!(!repo.path.join("tasks").exists());
    assert_eq!(status(&repo.path), before);
}

#[test]
fn commit_with_detached_head_moves_only_the_base_ref() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    let tip = rev(&repo.path, "main");
    git(&repo.path, &["checkout", "--quiet", "--detach"]);

    let commit =
        repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), PLAN.as_bytes(), MESSAGE)
            .unwrap();

    assert_eq!(rev(&repo.path, "main"), commit);
    assert_eq!(rev(&repo.path, "HEAD"), tip);
    assert!(!repo.path.join("tasks").exists());
    assert_eq!(status(&repo.path), "");
    let status = repo::base::inspect(&cfg).unwrap();
    assert_eq!(status.head, format!("detached at {}", &tip[..7]));
    assert_eq!(status.base_commit, commit);
}

#[test]
fn missing_base_branch_names_it_and_the_head() {
    let repo = repo_with_commit("main");
    let mut cfg = repo_config(&repo);
    cfg.base_branch = "trunk".to_string();

    let err = repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"x", "x").unwrap_err();
    assert!(
        matches!(&err, RepoError::MissingBaseBranch { branch, head } if branch == "trunk" && head == "branch main"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "base branch trunk does not exist (HEAD is branch main); create it with git branch trunk <commit>, or set repo.base_branch"
    );

    let tip = rev(&repo.path, "main");
    git(&repo.path, &["checkout", "--quiet", "--detach"]);
    let err = repo::base::inspect(&cfg).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("(HEAD is detached at {})", &tip[..7])),
        "{err}"
    );
    assert!(matches!(
        repo::remote::push_base(&cfg),
        Err(RepoError::MissingBaseBranch { .. })
    ));
}

#[test]
fn unborn_repository_asks_for_a_first_commit() {
    let dir = tempfile::tempdir().unwrap();
    git(
        dir.path(),
        &["init", "--quiet", "--initial-branch", "main", "work"],
    );
    let repo = crate::support::git::TestRepo {
        path: dir.path().join("work"),
        dir,
        remote: None,
    };
    let cfg = repo_config(&repo);

    let err = repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"x", "x").unwrap_err();
    assert!(
        matches!(&err, RepoError::MissingBaseBranch { head, .. } if head == "unborn branch main"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("make a first commit on main"),
        "{err}"
    );
    assert!(matches!(
        repo::base::inspect(&cfg),
        Err(RepoError::MissingBaseBranch { .. })
    ));
}

#[test]
fn not_a_repository_is_refused() {
    let repo = repo_with_commit("main");
    let mut cfg = repo_config(&repo);
    cfg.path = repo.dir.path().join("elsewhere");
    std::fs::create_dir(&cfg.path).unwrap();

    let err = repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"x", "x").unwrap_err();
    assert!(matches!(&err, RepoError::NotARepository { path } if *path == cfg.path));
    let message = err.to_string();
    assert!(message.contains("is not a git repository"), "{message}");
    assert!(message.contains("set repo.path"), "{message}");
    assert!(matches!(
        repo::base::inspect(&cfg),
        Err(RepoError::NotARepository { .. })
    ));
}

#[test]
fn bare_repository_is_refused() {
    let repo = repo_with_remote("main");
    let mut cfg = repo_config(&repo);
    cfg.path = repo.remote.clone().unwrap();

    let err = repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"x", "x").unwrap_err();
    assert!(matches!(err, RepoError::Bare { .. }), "{err:?}");
    assert!(err.to_string().contains("bare repository"), "{err}");
    assert!(matches!(
        repo::base::inspect(&cfg),
        Err(RepoError::Bare { .. })
    ));
}

#[test]
fn index_lock_refuses_the_commit() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    let tip = rev(&repo.path, "main");
    let lock = repo.path.join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();

    let err = repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"x", "x").unwrap_err();
    assert!(
        matches!(&err, RepoError::Locked { path } if path.ends_with("index.lock")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("another git process is using the repository ("),
        "{err}"
    );
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(rev(&repo.path, "main"), tip);
    assert!(!repo.path.join("tasks").exists());
}

#[test]
fn ref_lock_refuses_the_commit() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    let tip = rev(&repo.path, "main");
    std::fs::write(repo.path.join(".git/refs/heads/main.lock"), "").unwrap();

    let err = repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"x", "x").unwrap_err();
    assert!(
        matches!(&err, RepoError::Locked { path } if path.ends_with("refs/heads/main.lock")),
        "{err:?}"
    );
    assert_eq!(rev(&repo.path, "main"), tip);
    assert_eq!(status(&repo.path), "");
}

#[test]
fn paths_outside_the_tasks_dir_are_refused() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    let tip = rev(&repo.path, "main");
    let check = |path: &str| {
        let err = repo::base::commit_file(&cfg, Path::new(path), b"x", "x").unwrap_err();
        assert!(
            matches!(&err, RepoError::OutsideTasksDir { path: p } if p == Path::new(path)),
            "{path}: {err:?}"
        );
        let err = repo::base::read_file(&cfg, &tip, Path::new(path)).unwrap_err();
        assert!(matches!(err, RepoError::OutsideTasksDir { .. }), "{path}");
    };
    check("../plan.md");
    check("tasks/../plan.md");
    check("tasks/../../plan.md");
    check("/tmp/tasks/plan.md");
    check("./tasks/plan.md");
    check("README.md");
    check("other/plan.md");
    check("tasksplan.md");
    check("tasks");
    check("tasks/.git/config");
    check("");
    assert_eq!(rev(&repo.path, "main"), tip);
}

#[test]
fn nested_tasks_dir_keeps_sibling_files() {
    let repo = repo_with_commit("main");
    let mut cfg = repo_config(&repo);
    cfg.tasks_dir = "docs/tasks".into();
    std::fs::create_dir(repo.path.join("docs")).unwrap();
    std::fs::write(repo.path.join("docs/guide.md"), "guide\n").unwrap();
    git(&repo.path, &["add", "docs"]);
    git(&repo.path, &["commit", "--quiet", "-m", "docs"]);

    let commit = repo::base::commit_file(
        &cfg,
        Path::new("docs/tasks/plan.md"),
        PLAN.as_bytes(),
        MESSAGE,
    )
    .unwrap();

    assert_eq!(
        git(&repo.path, &["ls-tree", "-r", "--name-only", &commit]),
        "README.md\ndocs/guide.md\ndocs/tasks/plan.md\n"
    );
    assert_eq!(
        git(
            &repo.path,
            &[
                "diff-tree",
                "--no-commit-id",
                "--name-status",
                "-r",
                &commit
            ]
        ),
        "A\tdocs/tasks/plan.md\n"
    );
    assert_eq!(status(&repo.path), "");
    assert!(matches!(
        repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"x", "x"),
        Err(RepoError::OutsideTasksDir { .. })
    ));
}

#[test]
fn second_commit_of_the_same_path_is_a_new_commit() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    let path = Path::new("tasks/plan.md");

    let first = repo::base::commit_file(&cfg, path, b"version 1\n", "Plan v1").unwrap();
    let second = repo::base::commit_file(&cfg, path, b"version 2\n", "Plan v2").unwrap();
    assert_ne!(first, second);
    assert_eq!(rev(&repo.path, &format!("{second}^")), first);
    assert_eq!(
        git(
            &repo.path,
            &[
                "diff-tree",
                "--no-commit-id",
                "--name-status",
                "-r",
                &second
            ]
        ),
        "M\ttasks/plan.md\n"
    );

    // Writing the same contents again is still recorded, as a commit that changes nothing.
    let third = repo::base::commit_file(&cfg, path, b"version 2\n", "Plan v2 again").unwrap();
    assert_ne!(third, second);
    assert_eq!(rev(&repo.path, &format!("{third}^")), second);
    assert_eq!(
        git(&repo.path, &["diff-tree", "--no-commit-id", "-r", &third]),
        ""
    );
    assert_eq!(rev(&repo.path, "main"), third);
    assert_eq!(status(&repo.path), "");
}

#[test]
fn push_updates_the_bare_remote() {
    let repo = repo_with_remote("main");
    let cfg = repo_config(&repo);
    let remote = repo.remote.clone().unwrap();

    let commit =
        repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), PLAN.as_bytes(), MESSAGE)
            .unwrap();
    repo::remote::push_base(&cfg).unwrap();
    assert_eq!(rev(&remote, "main"), commit);
    assert_eq!(rev(&repo.path, "origin/main"), commit);

    // Pushing again with nothing new is fine, and so is a file:// URL.
    repo::remote::push_base(&cfg).unwrap();
    let url = format!("file://{}", remote.display());
    git(&repo.path, &["remote", "set-url", "origin", &url]);
    let commit = repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), b"v2\n", "v2").unwrap();
    repo::remote::push_base(&cfg).unwrap();
    assert_eq!(rev(&remote, "main"), commit);
}

#[test]
fn push_is_rejected_when_the_remote_moved_ahead() {
    let repo = repo_with_remote("main");
    let cfg = repo_config(&repo);
    let remote = repo.remote.clone().unwrap();
    git(
        repo.dir.path(),
        &["clone", "--quiet", remote.to_str().unwrap(), "other"],
    );
    let other = repo.dir.path().join("other");
    std::fs::write(other.join("CHANGELOG.md"), "someone else\n").unwrap();
    git(&other, &["add", "CHANGELOG.md"]);
    git(&other, &["commit", "--quiet", "-m", "meanwhile"]);
    git(&other, &["push", "--quiet", "origin", "main"]);
    let theirs = rev(&other, "main");

    repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), PLAN.as_bytes(), MESSAGE).unwrap();
    let err = repo::remote::push_base(&cfg).unwrap_err();

    match &err {
        RepoError::PushRejected {
            remote, reference, ..
        } => {
            assert_eq!(remote, "origin");
            assert_eq!(reference, "refs/heads/main");
        }
        other => panic!("expected PushRejected, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("pull or rebase main onto origin/main"),
        "{err}"
    );
    assert_eq!(rev(&remote, "main"), theirs);

    // Once the remote's commits are fetched the branch has diverged, which is refused too.
    git(&repo.path, &["fetch", "--quiet", "origin"]);
    assert!(matches!(
        repo::remote::push_base(&cfg),
        Err(RepoError::PushRejected { .. })
    ));
}

#[test]
fn push_to_a_missing_remote_says_how_to_add_it() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);

    let err = repo::remote::push_base(&cfg).unwrap_err();
    assert!(
        matches!(&err, RepoError::Remote { remote, .. } if remote == "origin"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("git remote add origin URL"),
        "{err}"
    );
}

#[test]
fn push_to_an_unreachable_ssh_remote_fails_clearly() {
    // ssh remotes use the ssh agent's keys; with nothing listening the push fails at once,
    // with the remote's address and no panic. (No ssh server runs in these tests.)
    let repo = repo_with_commit("main");
    git(
        &repo.path,
        &["remote", "add", "origin", "ssh://git@127.0.0.1:1/repo.git"],
    );
    let cfg = repo_config(&repo);
    let err = repo::remote::push_base(&cfg).unwrap_err();
    assert!(matches!(err, RepoError::Remote { .. }), "{err:?}");
    assert!(
        err.to_string().contains("ssh://git@127.0.0.1:1/repo.git")
            || err.to_string().contains("127.0.0.1"),
        "{err}"
    );
}

#[test]
fn push_to_an_unreachable_remote_hides_the_credentials() {
    let repo = repo_with_commit("main");
    git(
        &repo.path,
        &[
            "remote",
            "add",
            "origin",
            "http://someone:hunter2@127.0.0.1:1/repo.git",
        ],
    );
    let mut cfg = repo_config(&repo);
    cfg.github_token = Some(Secret::new("ghp_secret-token"));

    let err = repo::remote::push_base(&cfg).unwrap_err();
    assert!(matches!(err, RepoError::Remote { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("http://127.0.0.1:1/repo.git"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!message.contains("ghp_secret-token"), "{message}");
    assert!(!format!("{err:?}").contains("ghp_secret-token"));
}

/// Answers every HTTP request with 401 and records the requests' `Authorization` headers.
/// The server thread lives until the test binary exits; it only ever waits in `accept`.
fn refusing_http_server() -> (String, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/owner/repo.git", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut authorization = None;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(value) = line.strip_prefix("Authorization: ") {
                    authorization = Some(value.trim().to_string());
                }
                line.clear();
            }
            record.lock().unwrap().push(authorization);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (url, seen)
}

#[test]
fn the_token_is_never_offered_over_plain_http_or_to_another_host() {
    let repo = repo_with_commit("main");
    let (url, seen) = refusing_http_server();
    git(&repo.path, &["remote", "add", "origin", &url]);
    let mut cfg = repo_config(&repo);
    cfg.github_token = Some(Secret::new("ghp_secret-token"));
    // Even when the configured host is this one: plain HTTP never gets it.
    cfg.token_host = "127.0.0.1".to_string();

    let err = repo::remote::push_base(&cfg).unwrap_err();

    let message = err.to_string();
    assert!(matches!(err, RepoError::Remote { .. }), "{err:?}");
    assert!(
        message.contains("the GitHub token goes only to https://127.0.0.1"),
        "{message}"
    );
    assert!(!message.contains("ghp_secret-token"), "{message}");
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the server was asked");
    assert!(
        seen.iter().all(Option::is_none),
        "no credentials were sent: {seen:?}"
    );

    cfg.github_token = None;
    let err = repo::remote::push_base(&cfg).unwrap_err();
    assert!(err.to_string().contains("set GITHUB_TOKEN"), "{err}");
}

#[test]
fn inspect_reports_each_kind_of_head() {
    let repo = repo_with_remote("main");
    let cfg = repo_config(&repo);
    let tip = rev(&repo.path, "main");
    let check = |head: &str, dirty: bool| {
        let status = repo::base::inspect(&cfg).unwrap();
        assert_eq!(
            status,
            repo::base::RepoStatus {
                head: head.to_string(),
                base_commit: tip.clone(),
                remote_url: Some(repo.remote.clone().unwrap().display().to_string()),
                work_tree_dirty: dirty,
            }
        );
    };

    check("branch main", false);
    std::fs::write(repo.path.join("untracked.txt"), "x").unwrap();
    check("branch main", false);
    std::fs::write(repo.path.join("README.md"), "changed\n").unwrap();
    check("branch main", true);
    git(&repo.path, &["checkout", "--quiet", "README.md"]);
    git(&repo.path, &["switch", "--quiet", "-c", "feature"]);
    check("branch feature", false);
    git(&repo.path, &["checkout", "--quiet", "--detach", "main"]);
    check(&format!("detached at {}", &tip[..7]), false);
    git(&repo.path, &["switch", "--quiet", "--orphan", "fresh"]);
    check("unborn branch fresh", false);
}

#[test]
fn inspect_strips_credentials_from_the_remote_url() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    let check = |url: &str, shown: Option<&str>| {
        git(&repo.path, &["remote", "add", "origin", url]);
        assert_eq!(
            repo::base::inspect(&cfg).unwrap().remote_url.as_deref(),
            shown
        );
        git(&repo.path, &["remote", "remove", "origin"]);
    };

    check(
        "https://someone:hunter2@github.com/owner/repo.git",
        Some("https://github.com/owner/repo.git"),
    );
    check(
        "https://ghp_token@github.com/owner/repo.git",
        Some("https://github.com/owner/repo.git"),
    );
    check(
        "https://github.com/owner/repo.git",
        Some("https://github.com/owner/repo.git"),
    );
    check(
        "git@github.com:owner/repo.git",
        Some("git@github.com:owner/repo.git"),
    );
    assert_eq!(repo::base::inspect(&cfg).unwrap().remote_url, None);
}

#[test]
fn read_file_returns_a_plan_at_a_commit() {
    let repo = repo_with_commit("main");
    let cfg = repo_config(&repo);
    let before = rev(&repo.path, "main");
    let path = Path::new("tasks/plan.md");
    let first = repo::base::commit_file(&cfg, path, b"version 1\n", "v1").unwrap();
    let second = repo::base::commit_file(&cfg, path, b"version 2\n", "v2").unwrap();

    assert_eq!(
        repo::base::read_file(&cfg, &first, path)
            .unwrap()
            .as_deref(),
        Some("version 1\n")
    );
    assert_eq!(
        repo::base::read_file(&cfg, &second, path)
            .unwrap()
            .as_deref(),
        Some("version 2\n")
    );
    assert_eq!(
        repo::base::read_file(&cfg, &second[..10], path)
            .unwrap()
            .as_deref(),
        Some("version 2\n")
    );
    assert_eq!(repo::base::read_file(&cfg, &before, path).unwrap(), None);
    assert_eq!(
        repo::base::read_file(&cfg, &second, Path::new("tasks/other.md")).unwrap(),
        None
    );
    assert!(matches!(
        repo::base::read_file(&cfg, "0123456789abcdef0123456789abcdef01234567", path),
        Err(RepoError::Git(_))
    ));
    assert!(matches!(
        repo::base::read_file(&cfg, "HEAD~1", path),
        Err(RepoError::Git(_))
    ));
}

#[test]
fn push_reports_a_reference_the_remote_refused_to_update() {
    let repo = repo_with_remote("main");
    let cfg = repo_config(&repo);
    let remote = repo.remote.clone().unwrap();
    let before = rev(&remote, "main");
    std::fs::write(remote.join("refs/heads/main.lock"), "").unwrap();

    repo::base::commit_file(&cfg, Path::new("tasks/plan.md"), PLAN.as_bytes(), MESSAGE).unwrap();
    let err = repo::remote::push_base(&cfg).unwrap_err();

    assert!(
        matches!(&err, RepoError::PushRejected { reference, .. } if reference == "refs/heads/main"),
        "{err:?}"
    );
    assert!(err.to_string().ends_with("main.lock' for writing"), "{err}");
    assert_eq!(rev(&remote, "main"), before);
}

#[test]
fn a_branch_pushed_elsewhere_is_fetched_and_worked_on_from_its_tip() {
    let repo = repo_with_remote("main");
    let remote = repo.remote.clone().unwrap();
    let branch = "featurebot/7-dark-mode";
    // An earlier run, on another machine, pushed a step of the branch.
    let other = repo.dir.path().join("other");
    git(
        repo.dir.path(),
        &["clone", "--quiet", remote.to_str().unwrap(), "other"],
    );
    git(&other, &["checkout", "--quiet", "-b", branch]);
    std::fs::write(other.join("step1.txt"), "done\n").unwrap();
    git(&other, &["add", "step1.txt"]);
    git(&other, &["commit", "--quiet", "-m", "step 1/2: first"]);
    git(&other, &["push", "--quiet", "origin", branch]);
    let tip = rev(&remote, branch);

    let cfg = repo_config(&repo);
    assert!(
        !repo::remote::fetch_branch(&cfg, &name("featurebot/8-nothing-pushed")).unwrap(),
        "a branch the remote lacks is no error"
    );
    assert!(repo::remote::fetch_branch(&cfg, &name(branch)).unwrap());
    assert_eq!(rev(&repo.path, &format!("origin/{branch}")), tip);
    let dir = repo.dir.path().join("worktrees/7-dark-mode");
    let worktree = repo::worktree::prepare_worktree(&cfg, &name(branch), &dir, None).unwrap();
    assert!(!worktree.created);
    assert_eq!(worktree.base_commit, tip);
    assert_eq!(
        rev(&dir, "HEAD"),
        tip,
        "the run continues on the pushed tip"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("step1.txt")).unwrap(),
        "done\n"
    );
    // A branch nobody pushed still starts from the base branch.
    let fresh = repo.dir.path().join("worktrees/8-fresh");
    let worktree =
        repo::worktree::prepare_worktree(&cfg, &name("featurebot/8-fresh"), &fresh, None).unwrap();
    assert!(worktree.created);
    assert_eq!(rev(&fresh, "HEAD"), rev(&repo.path, "main"));
}

/// Two targets on one clone, and many commits through both at once, as the core's plan commits
/// and the run queue's front-matter updates happen: every commit lands, none is lost to a race
/// on the base branch's ref or the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_through_every_handle_of_a_clone_happen_one_at_a_time() {
    let app = TestApp::builder()
        .with_config(|c| {
            c.targets = vec![featurebot::config::Target {
                name: "same-clone".to_string(),
                repo: c.repo.clone(),
                github: None,
                channels: Vec::new(),
            }]
        })
        .build()
        .await;
    let (repo, repos) = (&app.repo, &app.services().repos);
    let before = rev(&repo.path, "main");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let handle = repos.of((i % 2 == 1).then_some("same-clone")).clone();
        tasks.push(tokio::spawn(async move {
            handle
                .commit_file(
                    Path::new(&format!("tasks/plan-{i}.md")),
                    PLAN.as_bytes().to_vec(),
                    &format!("plan {i}"),
                )
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let commits = git(&repo.path, &["rev-list", &format!("{before}..main")]);
    assert_eq!(commits.lines().count(), 24, "{commits}");
    let files = git(&repo.path, &["ls-tree", "--name-only", "main", "tasks/"]);
    assert_eq!(files.lines().count(), 24, "{files}");
    assert_eq!(
        status(&repo.path),
        "",
        "the work tree and index match the tip"
    );
}

/// The run's branch moved both here (the bot's unpushed step) and on the remote (a reviewer's
/// commit on another file): the work tree goes on from a merge of both, nobody's commit lost;
/// when both changed the same lines, the run is refused with what to do.
#[test]
fn a_branch_that_moved_on_both_sides_is_merged_or_refused() {
    let repo = repo_with_remote("main");
    let remote = repo.remote.clone().unwrap();
    let cfg = repo_config(&repo);
    let branch = name("featurebot/9-export");
    let dir = repo.dir.path().join("worktrees/9-export");
    let worktree = repo::worktree::prepare_worktree(&cfg, &branch, &dir, None).unwrap();
    std::fs::write(worktree.path.join("a.txt"), "the bot's\n").unwrap();
    repo::worktree::commit_all(&cfg, &worktree.path, "step 1/2: a", &|_, _| false).unwrap();
    repo::remote::push_branch(&cfg, &branch).unwrap();
    std::fs::write(worktree.path.join("b.txt"), "the bot's too\n").unwrap();
    let ours = repo::worktree::commit_all(&cfg, &worktree.path, "step 2/2: b", &|_, _| false)
        .unwrap()
        .id
        .unwrap();

    let reviewer = repo.dir.path().join("reviewer");
    git(
        repo.dir.path(),
        &[
            "clone",
            "--quiet",
            "--branch",
            branch.as_str(),
            remote.to_str().unwrap(),
            "reviewer",
        ],
    );
    std::fs::write(reviewer.join("c.txt"), "the reviewer's\n").unwrap();
    git(&reviewer, &["add", "c.txt"]);
    git(&reviewer, &["commit", "--quiet", "-m", "review: c"]);
    git(&reviewer, &["push", "--quiet", "origin", branch.as_str()]);
    let theirs = rev(&remote, branch.as_str());

    assert!(repo::remote::fetch_branch(&cfg, &branch).unwrap());
    let again = repo::worktree::prepare_worktree(&cfg, &branch, &dir, None).unwrap();
    let tip = rev(&dir, "HEAD");
    assert_eq!(again.base_commit, tip);
    let parents = git(&dir, &["rev-list", "--parents", "-n1", "HEAD"]);
    assert!(
        parents.contains(&ours) && parents.contains(&theirs),
        "a merge of both: {parents}"
    );
    for (file, text) in [
        ("a.txt", "the bot's\n"),
        ("b.txt", "the bot's too\n"),
        ("c.txt", "the reviewer's\n"),
    ] {
        assert_eq!(std::fs::read_to_string(dir.join(file)).unwrap(), text);
    }
    assert_eq!(status(&dir), "", "the work tree is on the merge");
    // The next push is a fast-forward of the remote: nothing forced.
    repo::remote::push_branch(&cfg, &branch).unwrap();
    assert_eq!(rev(&remote, branch.as_str()), tip);

    // Both sides change the same line: refused, and the local branch left as it was.
    std::fs::write(dir.join("a.txt"), "the bot's second thought\n").unwrap();
    let local = repo::worktree::commit_all(&cfg, &dir, "step: a again", &|_, _| false)
        .unwrap()
        .id
        .unwrap();
    git(&reviewer, &["pull", "--quiet", "--ff-only"]);
    std::fs::write(reviewer.join("a.txt"), "the reviewer's take\n").unwrap();
    git(&reviewer, &["commit", "--quiet", "-am", "review: a"]);
    git(&reviewer, &["push", "--quiet", "origin", branch.as_str()]);
    assert!(repo::remote::fetch_branch(&cfg, &branch).unwrap());
    let err = repo::worktree::prepare_worktree(&cfg, &branch, &dir, None).unwrap_err();
    assert!(
        err.to_string().contains("both changed the same lines"),
        "{err}"
    );
    assert_eq!(rev(&repo.path, branch.as_str()), local);
}

/// A step's commit leaves out what `keep_out` refuses, however the file changed: a new file, a
/// tracked one edited, one a command staged itself, a link; the rest is committed, and what is
/// left out stays in the work tree, still changed.
#[test]
fn commit_all_leaves_out_the_files_it_is_told_to() {
    let repo = repo_with_remote("main");
    let cfg = repo_config(&repo);
    let dir = repo.dir.path().join("worktrees/3-keys");
    let worktree =
        repo::worktree::prepare_worktree(&cfg, &name("featurebot/3-keys"), &dir, None).unwrap();
    let dir = worktree.path;
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    std::fs::write(dir.join("ok.txt"), "fine\n").unwrap();
    std::fs::write(dir.join("new.env"), "KEY=hunter2hunter2\n").unwrap();
    std::fs::write(dir.join("README.md"), format!("{readme}hunter2hunter2\n")).unwrap();
    std::fs::write(dir.join("staged.env"), "hunter2hunter2").unwrap();
    git(&dir, &["add", "staged.env"]);
    std::os::unix::fs::symlink("/tmp/hunter2hunter2", dir.join("link")).unwrap();
    std::fs::write(dir.join("hunter2hunter2.txt"), "a name\n").unwrap();
    let keep_out = |path: &str, bytes: &[u8]| {
        path.contains("hunter2hunter2") || String::from_utf8_lossy(bytes).contains("hunter2hunter2")
    };

    let committed = repo::worktree::commit_all(&cfg, &dir, "step 1/1: keys", &keep_out).unwrap();
    assert_eq!(
        committed.left_out,
        [
            "README.md",
            "hunter2hunter2.txt",
            "link",
            "new.env",
            "staged.env"
        ]
    );
    let id = committed.id.expect("ok.txt is committed");
    assert_eq!(
        git(&dir, &["show", "--name-only", "--format=", &id]),
        "ok.txt\n"
    );
    assert!(!git(&dir, &["log", "-p", "--all"]).contains("hunter2hunter2"));
    // The files refused before staging never reached the object database.
    let objects = std::process::Command::new("git")
        .args(["cat-file", "--batch-all-objects", "--batch"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(objects.status.success());
    let objects = String::from_utf8_lossy(&objects.stdout);
    assert!(objects.contains("fine\n"), "{objects}");
    assert!(!objects.contains("KEY=hunter2hunter2"), "{objects}");
    assert_eq!(
        status(&dir),
        " M README.md\n?? hunter2hunter2.txt\n?? link\n?? new.env\n?? staged.env\n"
    );
    // Nothing else changed: the next commit has nothing to do, and says what it left out.
    let again = repo::worktree::commit_all(&cfg, &dir, "step 2/2", &keep_out).unwrap();
    assert_eq!(again.id, None);
    assert_eq!(again.left_out.len(), 5);
}
