//! Throwaway git repositories for tests, made and inspected with the git CLI the way a user
//! would, so the tests check featurebot's git2 code against git itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use featurebot::config::RepoConfig;

/// A repository in a temporary folder, deleted on drop. `path` is the work tree; `remote` is
/// the bare repository registered as `origin`, when there is one.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub remote: Option<PathBuf>,
}

/// A work-tree repository whose `branch` has one commit adding `README.md`.
pub fn repo_with_commit(branch: &str) -> TestRepo {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("work");
    git(
        dir.path(),
        &["init", "--quiet", "--initial-branch", branch, "work"],
    );
    std::fs::write(path.join("README.md"), "# test repository\n").unwrap();
    git(&path, &["add", "README.md"]);
    git(&path, &["commit", "--quiet", "-m", "initial commit"]);
    TestRepo {
        dir,
        path,
        remote: None,
    }
}

/// Like [`repo_with_commit`], plus a bare repository as remote `origin` holding `branch`.
pub fn repo_with_remote(branch: &str) -> TestRepo {
    let mut repo = repo_with_commit(branch);
    let remote = repo.dir.path().join("remote.git");
    git(
        repo.dir.path(),
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch",
            branch,
            "remote.git",
        ],
    );
    git(
        &repo.path,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    git(&repo.path, &["push", "--quiet", "origin", branch]);
    repo.remote = Some(remote);
    repo
}

/// A script whose `add` subtracts, and a test that fails until it adds: the coding agent's
/// usual task in the tests.
pub const BROKEN_ADD: [(&str, &str); 2] = [
    ("app.sh", "add() { echo $(( $1 - $2 )); }\n"),
    (
        "test.sh",
        ". ./app.sh\n[ \"$(add 2 3)\" = 5 ] || { echo \"FAIL: add 2 3 gave $(add 2 3)\"; exit 1; }\necho ok\n",
    ),
];

/// Writes `files` (path, content) into the work tree, commits them with `message` and pushes
/// the branch to `origin`.
pub fn commit_and_push(repo: &TestRepo, files: &[(&str, &str)], message: &str) {
    for (path, content) in files {
        let path = repo.path.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(&repo.path, &["add", "."]);
    git(&repo.path, &["commit", "--quiet", "-m", message]);
    let head = git(&repo.path, &["symbolic-ref", "--short", "HEAD"]);
    git(&repo.path, &["push", "--quiet", "origin", head.trim()]);
}

/// The path of the plan file that the last commit on `main` touching `tasks/` changed.
pub fn plan_path_on_main(repo: &Path) -> String {
    let path = git(
        repo,
        &[
            "log",
            "-1",
            "--format=",
            "--name-only",
            "main",
            "--",
            "tasks",
        ],
    );
    path.trim().to_string()
}

/// The settings featurebot would have for `repo` when started now: the branch HEAD is on as base
/// (so call this before switching branches), `origin` with its URL as the clone has it now (so
/// call this again after changing it, as featurebot reads it at start-up), plans in `tasks`, no
/// pushing, a test identity and no token.
pub fn repo_config(repo: &TestRepo) -> RepoConfig {
    let head = git(&repo.path, &["symbolic-ref", "--short", "HEAD"]);
    let push_url = std::process::Command::new("git")
        .args(["remote", "get-url", "--push", "origin"])
        .current_dir(&repo.path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    RepoConfig {
        push_url,
        token_host: "github.com".to_string(),
        path: repo.path.clone(),
        base_branch: head.trim().to_string(),
        remote: "origin".to_string(),
        tasks_dir: PathBuf::from("tasks"),
        push_plans: false,
        author_name: "featurebot".to_string(),
        author_email: "featurebot@test.invalid".to_string(),
        github_token: None,
    }
}

/// Runs `git args` in `repo` and returns its stdout; panics with stderr when git fails.
///
/// The machine's and the user's git configuration are ignored (HOME is the repository's own
/// temporary folder) and an identity is set, so the tests behave the same on a bare CI machine
/// as on a developer's laptop.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", repo)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env("GIT_CONFIG_COUNT", "5")
        .env("GIT_CONFIG_KEY_0", "user.name")
        .env("GIT_CONFIG_VALUE_0", "Test User")
        .env("GIT_CONFIG_KEY_1", "user.email")
        .env("GIT_CONFIG_VALUE_1", "test@test.invalid")
        .env("GIT_CONFIG_KEY_2", "commit.gpgsign")
        .env("GIT_CONFIG_VALUE_2", "false")
        .env("GIT_CONFIG_KEY_3", "init.defaultBranch")
        .env("GIT_CONFIG_VALUE_3", "main")
        .env("GIT_CONFIG_KEY_4", "core.autocrlf")
        .env("GIT_CONFIG_VALUE_4", "false")
        .output()
        .unwrap_or_else(|e| panic!("cannot run git {args:?}: {e}"));
    assert!(
        output.status.success(),
        "git {args:?} in {} failed: {}",
        repo.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Serves the bare repositories under `root` over `git://`, one `git daemon --inetd` per
/// connection, so a push goes through `git receive-pack` and its hooks as on a real server
/// (libgit2's push to a local path writes the refs itself and runs no hook).
pub async fn git_daemon(root: &Path) -> (String, AbortOnDrop) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("git://{}", listener.local_addr().unwrap());
    let root = root.to_path_buf();
    let server = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let socket = socket.into_std().unwrap();
            socket.set_nonblocking(false).unwrap();
            let input = std::os::fd::OwnedFd::from(socket);
            let output = input.try_clone().unwrap();
            let child = tokio::process::Command::new("git")
                .arg("daemon")
                .arg("--inetd")
                .arg("--export-all")
                .arg("--enable=receive-pack")
                .arg(format!("--base-path={}", root.display()))
                .env("HOME", &root)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .stdin(Stdio::from(input))
                .stdout(Stdio::from(output))
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn();
            if let Ok(mut child) = child {
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
            }
        }
    });
    (url, AbortOnDrop(server))
}

pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
