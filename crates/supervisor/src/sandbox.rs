//! Where Turnout is not root, each environment's processes run in a sandbox of bubblewrap
//! (`bwrap`): an unprivileged user namespace with its own process and IPC namespaces, the whole
//! file system read-only, Turnout's home (and the daemon user's home) hidden under empty tmpfs,
//! only the environment's own directories writable, and a private `/tmp`. Code inside sees
//! neither the store, tokens and logs, nor other environments' files, nor any process outside
//! its sandbox (so no other `/proc/PID/environ`). It still runs as the daemon's uid on the host
//! and shares the host's network.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How to sandbox a process (see the module).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// The `bwrap` binary.
    pub bwrap: PathBuf,
    /// Covered by an empty tmpfs, in this order.
    pub hidden: Vec<PathBuf>,
    /// Bound back read-write (inside the hidden ones), in this order.
    pub writable: Vec<PathBuf>,
}

impl Sandbox {
    /// `bwrap` in the usual system directories, when it can make a sandbox here (the kernel
    /// allows unprivileged user namespaces): tried once, with `/bin/true`.
    pub fn find_bwrap() -> Result<PathBuf, String> {
        let bwrap = ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or("`bwrap` (package bubblewrap) is not installed")?;
        let tried = std::process::Command::new(&bwrap)
            .args(["--unshare-user", "--unshare-pid", "--ro-bind", "/", "/"])
            .args(["--proc", "/proc", "--dev", "/dev", "--", "/bin/true"])
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        match tried {
            Ok(status) if status.success() => Ok(bwrap),
            Ok(_) => Err(
                "the kernel does not let `bwrap` make an unprivileged user namespace here"
                    .to_owned(),
            ),
            Err(e) => Err(format!("cannot run {}: {e}", bwrap.display())),
        }
    }

    /// `bwrap`'s arguments up to and including `--`, for a process that starts in `cwd`.
    /// `die_with_parent`: the sandbox is killed when the process that started it dies.
    pub(crate) fn args(&self, cwd: &Path, die_with_parent: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = [
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        for dir in &self.hidden {
            args.extend([OsString::from("--tmpfs"), dir.into()]);
        }
        for dir in &self.writable {
            args.extend([OsString::from("--bind"), dir.into(), dir.into()]);
        }
        args.extend([OsString::from("--chdir"), cwd.into()]);
        if die_with_parent {
            args.push("--die-with-parent".into());
        }
        args.push("--".into());
        args
    }
}
