//! The agent's commands are hostile (issue 13): a test command that an LLM wrote tries to read
//! the host, write outside its work tree, rewrite the repository's git config, reach the
//! network and see featurebot's processes. Each runs through a real agent run, in bubblewrap's
//! sandbox, and each attempt is checked on the host, not only in what the command printed.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use featurebot::agent::Event;
use featurebot::config::SandboxMode;
use featurebot::model::RunState;
use tokio_util::sync::CancellationToken;

use crate::agent::{fixture, run_agent, worktree};
use crate::support::app::TestApp;
use crate::support::scripts::finish_steps;

/// A listener on the host's loopback that counts the connections it gets.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Listener {
    fn start() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut stream) = stream {
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                    let _ = stream.read(&mut [0; 512]);
                }
            }
        });
        Listener { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// A shell line that tries to open a TCP connection to the listener (git's HTTP client,
    /// present wherever featurebot runs).
    fn connect_line(&self) -> String {
        format!(
            "timeout 5 git ls-remote http://127.0.0.1:{}/x.git >/dev/null 2>&1",
            self.port
        )
    }
}

/// Runs the agent with `test` as the only test command (red: it ends with `exit 1`, so its
/// output reaches the thread) and returns what the thread saw of it.
async fn run_hostile(f: &TestApp) -> String {
    finish_steps(&f.llm, &["nothing", "nothing"]);
    let (run, events) = run_agent(f, CancellationToken::new(), None).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChecksFailed { tail, .. } => Some(tail.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn hostile(test: String) -> impl FnOnce(&mut featurebot::config::Config) {
    move |c| {
        c.agent.format = Vec::new();
        c.agent.test = vec![test];
        c.agent.max_repair_attempts = 0;
    }
}

#[tokio::test]
async fn nothing_of_the_host_outside_the_work_tree_can_be_read() {
    let outside = tempfile::tempdir().unwrap();
    let planted = outside.path().join("planted-secret.txt");
    std::fs::write(&planted, "PLANTED-CONTENT\n").unwrap();
    // The work tree is <store>/worktrees/<name>: `../../conf` is the store's own sled file.
    let targets = [
        planted.display().to_string(),
        "../../conf".to_string(),
        "/etc/shadow".to_string(),
        "/root/.bashrc".to_string(),
        format!("/proc/{}/environ", std::process::id()),
    ];
    let line = format!(
        "for f in {}; do if cat \"$f\" >/dev/null 2>&1; then echo \"READ $f\"; else echo \"REFUSED $f\"; fi; done; cat {}; ls -a ../.. ; exit 1",
        targets.join(" "),
        planted.display()
    );
    let f = fixture().with_config(hostile(line)).build().await;
    let shown = run_hostile(&f).await;
    assert!(!shown.contains("PLANTED-CONTENT"), "{shown}");
    assert!(
        !shown.contains("READ "),
        "something outside was read: {shown}"
    );
    // Each target that exists on the host was refused inside.
    let store = f.config.store.path.clone();
    for target in &targets {
        let on_host = match target.strip_prefix("../../") {
            Some(rest) => store.join(rest),
            None => Path::new(target).to_path_buf(),
        };
        if on_host.exists() {
            assert!(
                shown.contains(&format!("REFUSED {target}")),
                "{target}: {shown}"
            );
        }
    }
    assert!(
        store.join("conf").exists(),
        "the store is where the test expects it"
    );
    // The store's folder shows only the mount points the sandbox made, none of sled's files.
    assert!(
        !shown
            .lines()
            .any(|l| l == "db" || l == "conf" || l == "blobs"),
        "{shown}"
    );
}

#[tokio::test]
async fn writes_outside_the_work_tree_and_to_its_git_folder_fail() {
    let escaped = format!("/featurebot-escaped-{}.txt", std::process::id());
    let line = "echo x > ../outside.txt; echo x > /tmp/..ESCAPED; git config user.name Mallory; echo '#!/bin/sh' > \"$(git rev-parse --git-common-dir)/hooks/pre-push\"; git remote set-url --push origin http://127.0.0.1:1/evil.git; echo inside > inside.txt; exit 1".replace("ESCAPED", &escaped);
    let f = fixture().with_config(hostile(line)).build().await;
    let config_before = std::fs::read_to_string(f.repo.path.join(".git/config")).unwrap();
    run_hostile(&f).await;
    let tree = worktree(&f);
    assert!(!tree.parent().unwrap().join("outside.txt").exists());
    assert!(!Path::new(&escaped).exists());
    assert_eq!(
        std::fs::read_to_string(f.repo.path.join(".git/config")).unwrap(),
        config_before,
        "the repository's git config is unchanged"
    );
    assert!(!f.repo.path.join(".git/hooks/pre-push").exists());
    // The work tree itself is writable (the write was committed with the step).
    assert!(tree.join("inside.txt").exists());
}

#[tokio::test]
async fn the_network_is_off_unless_asked_for_and_setup_has_it() {
    let listener = Listener::start();
    let line = format!("{}; exit 1", listener.connect_line());
    let f = fixture()
        .with_config(hostile(line.clone()))
        .with_config({
            let setup = listener.connect_line();
            move |c| c.agent.setup = vec![format!("{setup} || true")]
        })
        .build()
        .await;
    run_hostile(&f).await;
    assert_eq!(
        listener.accepted(),
        1,
        "only agent.setup reached the network, once"
    );

    // With agent.network = "on", the steps' commands reach it too.
    let open = Listener::start();
    let line = format!("{}; exit 1", open.connect_line());
    let f = fixture()
        .with_config(hostile(line))
        .with_config(|c| c.agent.network = true)
        .build()
        .await;
    run_hostile(&f).await;
    assert!(open.accepted() >= 1, "the network was on");
}

#[tokio::test]
async fn with_the_sandbox_off_the_same_command_reads_the_host() {
    // The control: the planted file is readable without the sandbox, so the tests above can
    // fail.
    let outside = tempfile::tempdir().unwrap();
    let planted = outside.path().join("planted.txt");
    std::fs::write(&planted, "PLANTED-CONTENT\n").unwrap();
    let f = fixture()
        .with_config(hostile(format!("cat {}; exit 1", planted.display())))
        .with_config(|c| c.agent.sandbox = SandboxMode::Off)
        .build()
        .await;
    finish_steps(&f.llm, &["nothing", "nothing"]);
    let (_, events) = run_agent(&f, CancellationToken::new(), None).await;
    let shown = format!("{events:?}");
    assert!(shown.contains("PLANTED-CONTENT"), "{shown}");
    // The run says it is unconfined, once, before its first step.
    let at = events.iter().position(|e| *e == Event::Unconfined);
    let started = events
        .iter()
        .position(|e| matches!(e, Event::Started { .. }));
    assert!(at.is_some() && at < started, "{events:?}");
    assert_eq!(
        events.iter().filter(|e| **e == Event::Unconfined).count(),
        1
    );
}

/// The push URL is featurebot's, read when it started: a rewrite of the clone's config (by a
/// command run without the sandbox, or anyone else) sends nothing, token included, elsewhere.
#[tokio::test]
async fn a_rewritten_push_url_receives_nothing() {
    use crate::support::git::git;
    use featurebot::core::protocol::Input;
    use featurebot::model::Priority;

    let listener = Listener::start();
    let mut h = TestApp::builder()
        .with_remote()
        .with_github()
        .with_config(|c| c.repo.push_plans = true)
        .build()
        .await;
    let id = h.planned().await;
    let bare = h.repo.remote.clone().unwrap();
    let evil = format!("http://127.0.0.1:{}/evil.git", listener.port);
    git(
        &h.repo.path,
        &["remote", "set-url", "--push", "origin", &evil],
    );
    git(&h.repo.path, &["remote", "set-url", "origin", &evil]);
    h.send(Input::SetPriority {
        feature: id,
        priority: Priority::P0,
    })
    .await;
    let run = h.approve_and_run(id).await;
    assert_eq!(run.state, RunState::Finished, "{:?}", run.message);
    assert_eq!(listener.accepted(), 0, "nothing went to the rewritten URL");
    let subject = git(&bare, &["log", "--format=%s", "main"]);
    assert!(subject.contains("priority p0"), "{subject}");
    assert!(!git(&bare, &["branch", "--list", &run.branch.to_string()])
        .trim()
        .is_empty());
}
