//! The sandbox around every command the agent causes: the formatters, the tests, the check
//! tool, `agent.setup` and the `command` backend's external agent. Their code was written by an
//! LLM: they run as if an attacker had a shell.
//!
//! The mechanism is bubblewrap (`bwrap`), as Claude Code's and Codex's Linux sandboxes use: new
//! user, mount, pid, network, ipc and uts namespaces, every capability dropped, and a root
//! built from bind mounts, so that nothing of the host exists inside unless listed here:
//!
//! - the work tree, writable;
//! - the system (`/usr` and its links, a few files of `/etc`) and the toolchains on `PATH`
//!   and in the toolchain variables (`CARGO_HOME`, `RUSTUP_HOME`...), read-only, with their
//!   credential files masked;
//! - the repository's git folder, read-only (`git diff` works; config, hooks and refs cannot
//!   change);
//! - the run's own folder beside the work tree (prompts and logs), read-only;
//! - a fresh `HOME` per run and a private `/tmp`, writable; `/proc` of its own pid namespace,
//!   a minimal `/dev`.
//!
//! Not the store, the config file, other work trees, the real `HOME`, sockets, or featurebot's
//! own processes. The network is a loopback of its own unless `agent.network = "on"` (and for
//! `agent.setup`, which fetches dependencies). The sandbox dies with its parent (the command's
//! process group), so a timeout or a cancel still ends everything in it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::config::SandboxMode;

/// Where a run's commands are confined; see the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The work tree: the only folder of the host they may write to.
    pub work_tree: PathBuf,
    /// The repository's git folder (shared by its work trees), read-only.
    pub git_dir: PathBuf,
    /// Readable folders of the run (its prompts and logs).
    pub readable: Vec<PathBuf>,
    /// The run's fresh `HOME`, writable.
    pub home: PathBuf,
    /// Whether the network is the host's (`agent.network = "on"`, and `agent.setup`).
    pub network: bool,
}

/// The system's files that programs read; everything else of `/etc` stays out.
const ETC_FILES: &[&str] = &[
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/profile",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl",
    "/etc/timezone",
];

/// The top folders that merged-`/usr` systems make links into `/usr` (or real folders on
/// older ones).
const SYSTEM_DIRS: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/// The variables naming toolchain folders, readable inside when set.
const TOOLCHAIN_VARS: &[&str] = &[
    "CARGO_HOME",
    "RUSTUP_HOME",
    "GOPATH",
    "GOROOT",
    "JAVA_HOME",
    "NVM_DIR",
    "PYENV_ROOT",
    "VIRTUAL_ENV",
];

/// Files in toolchain folders that hold credentials: masked with an empty file.
const CREDENTIAL_FILES: &[&str] = &[
    "credentials",
    "credentials.toml",
    ".credentials",
    ".npmrc",
    ".pypirc",
    ".netrc",
];

impl Sandbox {
    /// The program and arguments that run `sh -c line` in `dir` in this sandbox, for a command
    /// whose environment is `env` (which names its toolchains). The command is started with
    /// [`Sandbox::env`], which bubblewrap passes on.
    pub fn command(
        &self,
        line: &str,
        dir: &Path,
        env: &[(String, String)],
    ) -> (String, Vec<String>) {
        let mut args: Vec<String> = vec![
            "--unshare-all".into(),
            "--die-with-parent".into(),
            "--cap-drop".into(),
            "ALL".into(),
        ];
        if self.network {
            args.push("--share-net".into());
        }
        let ro = |args: &mut Vec<String>, path: &Path| {
            let p = path.to_string_lossy().into_owned();
            args.extend(["--ro-bind-try".into(), p.clone(), p]);
        };
        ro(&mut args, Path::new("/usr"));
        for dir in SYSTEM_DIRS {
            let path = Path::new(dir);
            match std::fs::read_link(path) {
                Ok(target) => args.extend([
                    "--symlink".into(),
                    target.to_string_lossy().into_owned(),
                    (*dir).to_string(),
                ]),
                Err(_) if path.is_dir() => ro(&mut args, path),
                Err(_) => {}
            }
        }
        for file in ETC_FILES {
            ro(&mut args, Path::new(file));
        }
        args.extend([
            "--proc".into(),
            "/proc".into(),
            "--dev".into(),
            "/dev".into(),
        ]);
        args.extend(["--tmpfs".into(), "/tmp".into()]);
        for dir in toolchains(env) {
            ro(&mut args, &dir);
            for name in CREDENTIAL_FILES {
                let file = dir.join(name);
                if file.is_file() {
                    args.extend([
                        "--ro-bind".into(),
                        "/dev/null".into(),
                        file.to_string_lossy().into_owned(),
                    ]);
                }
            }
        }
        for dir in &self.readable {
            ro(&mut args, dir);
        }
        ro(&mut args, &self.git_dir);
        let work = self.work_tree.to_string_lossy().into_owned();
        args.extend(["--bind".into(), work.clone(), work]);
        let home = self.home.to_string_lossy().into_owned();
        args.extend(["--bind".into(), home.clone(), home]);
        args.extend([
            "--chdir".into(),
            dir.to_string_lossy().into_owned(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            line.to_string(),
        ]);
        let program = bwrap().map_or_else(|| "bwrap".to_string(), |p| p.display().to_string());
        (program, args)
    }

    /// `env` with the run's own `HOME`; toolchains that lived under the real one keep their
    /// folders through `CARGO_HOME` and `RUSTUP_HOME`.
    pub fn env(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        let real_home = env
            .iter()
            .find(|(n, _)| n == "HOME")
            .map(|(_, v)| v.clone());
        let mut out: Vec<(String, String)> =
            env.iter().filter(|(n, _)| n != "HOME").cloned().collect();
        if let Some(home) = real_home.filter(|h| !h.is_empty()) {
            for (var, dir) in [("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup")] {
                let path = Path::new(&home).join(dir);
                if !out.iter().any(|(n, _)| n == var) && path.is_dir() {
                    out.push((var.to_string(), path.to_string_lossy().into_owned()));
                }
            }
        }
        out.push(("HOME".to_string(), self.home.to_string_lossy().into_owned()));
        out.sort();
        out
    }
}

/// The toolchain folders a command may need: those the toolchain variables name, and the
/// folders on `PATH` outside the system ones (`~/.cargo/bin`, a pyenv's shims...), with the
/// toolchain root above a `bin` folder.
fn toolchains(env: &[(String, String)]) -> Vec<PathBuf> {
    let get = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let mut dirs: Vec<PathBuf> = TOOLCHAIN_VARS
        .iter()
        .filter_map(|name| get(name))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .collect();
    // Without CARGO_HOME and RUSTUP_HOME, rustup's tools look under HOME.
    if let Some(home) = get("HOME").filter(|h| !h.is_empty()) {
        for (var, dir) in [("CARGO_HOME", ".cargo"), ("RUSTUP_HOME", ".rustup")] {
            if get(var).is_none() {
                dirs.push(Path::new(home).join(dir));
            }
        }
    }
    for entry in get("PATH").unwrap_or_default().split(':') {
        let path = Path::new(entry);
        if !path.is_absolute()
            || path.starts_with("/usr")
            || SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
        {
            continue;
        }
        let root = match path.file_name().and_then(|n| n.to_str()) {
            Some("bin" | "shims") => path.parent().unwrap_or(path),
            _ => path,
        };
        dirs.push(root.to_path_buf());
    }
    dirs.retain(|d| d.is_dir() && d != Path::new("/"));
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Whether `agent.sandbox` can confine commands on this host, tried once per process with a
/// sandboxed `true`: `Ok(true)` sandboxed, `Ok(false)` when the config opts out, and the reason
/// with its fix otherwise (a run is then refused before it starts).
pub fn available(mode: SandboxMode) -> Result<bool, String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    if mode == SandboxMode::Off {
        return Ok(false);
    }
    PROBE.get_or_init(probe).clone().map(|()| true)
}

/// bubblewrap on featurebot's own `PATH`, found once: the probe and every command run this
/// one program, whatever `PATH` a command's environment names.
fn bwrap() -> Option<&'static Path> {
    static BWRAP: OnceLock<Option<PathBuf>> = OnceLock::new();
    BWRAP
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|dir| dir.join("bwrap"))
                .find(|p| {
                    std::fs::metadata(p)
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
        })
        .as_deref()
}

fn probe() -> Result<(), String> {
    let fix = "install bubblewrap (apt-get install bubblewrap) and allow user namespaces (sysctl kernel.unprivileged_userns_clone=1; in Docker, run the container with --security-opt seccomp=unconfined), or set agent.sandbox = \"off\" to run the agent's commands unconfined";
    if bwrap().is_none() {
        return Err(format!(
            "the sandbox needs bubblewrap (bwrap), which is not installed (not on featurebot's PATH); {fix}"
        ));
    }
    let dir = std::env::temp_dir().join(format!("featurebot-sandbox-probe-{}", std::process::id()));
    let home = dir.join("home");
    std::fs::create_dir_all(&home).map_err(|e| format!("creating {}: {e}", home.display()))?;
    let sandbox = Sandbox {
        work_tree: dir.clone(),
        git_dir: dir.clone(),
        readable: Vec::new(),
        home,
        network: false,
    };
    let env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
    let (program, args) = sandbox.command("true", &dir, &env);
    let output = std::process::Command::new(&program)
        .args(&args)
        .env_clear()
        .envs(sandbox.env(&env))
        .stdin(std::process::Stdio::null())
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match output {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "the sandbox (bubblewrap) cannot start here: {}; {fix}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "the sandbox (bubblewrap) cannot start here: {e}; {fix}"
        )),
    }
}
