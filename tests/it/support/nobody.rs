//! featurebot as an unprivileged user, for the checks that only mean something there (root
//! reads any process's environment, bubblewrap as root needs no user namespace): the binary, a
//! config and a store in a folder `nobody` can use, and commands run unprivileged. As root (CI)
//! they run as `nobody` through util-linux's `setpriv`; as any other user they already are.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this test process runs as root.
fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        == Some("0")
}

/// A copy of the featurebot binary with a config whose LLM is unreachable and a store, all
/// usable by `nobody`.
pub struct NobodyBot {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub binary: PathBuf,
    pub config: PathBuf,
}

impl NobodyBot {
    pub fn new() -> NobodyBot {
        let dir = tempfile::tempdir().unwrap();
        let mode = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        mode(dir.path(), 0o755);
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        mode(&store, 0o777);
        let binary = dir.path().join("featurebot");
        std::fs::copy(env!("CARGO_BIN_EXE_featurebot"), &binary).unwrap();
        mode(&binary, 0o755);
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[llm]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\nmax_retries = 0\n\n[store]\npath = {store:?}\n"
            ),
        )
        .unwrap();
        mode(&config, 0o644);
        NobodyBot {
            dir,
            store,
            binary,
            config,
        }
    }

    /// `program` as an unprivileged user (`nobody` when the tests run as root), in the folder,
    /// with only `PATH` in its environment.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = if running_as_root() {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(program);
            command
        } else {
            Command::new(program)
        };
        command
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin");
        command
    }
}
