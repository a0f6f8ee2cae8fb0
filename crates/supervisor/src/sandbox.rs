//! Where Turnout is not root, each environment's processes run in a sandbox of bubblewrap
//! (`bwrap`): an unprivileged user namespace with its own process and IPC namespaces, the whole
//! file system read-only (but for `/run/netns`, see [`host_view`]), Turnout's home (and the daemon user's home) hidden under empty tmpfs,
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
            .args(["--unshare-user", "--unshare-pid"])
            .args(host_view(Path::new("/")))
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
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        args.extend(host_view(Path::new("/")));
        args.extend(
            ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
                .into_iter()
                .map(OsString::from),
        );
        for dir in &self.hidden {
            args.extend([OsString::from("--tmpfs"), dir.into()]);
        }
        for dir in &self.writable {
            args.extend([OsString::from("--bind"), dir.into(), dir.into()]);
        }
        // The root bwrap builds the view on is a tmpfs of its own: read-only too.
        args.extend(["--remount-ro", "/"].map(OsString::from));
        args.extend([OsString::from("--chdir"), cwd.into()]);
        if die_with_parent {
            args.push("--die-with-parent".into());
        }
        args.push("--".into());
        args
    }
}

/// Where the host's files are not shown read-only as they are: `/proc`, `/dev` and `/tmp` get
/// the sandbox's own, and `/run/netns` is left out. Binding `/` whole would copy every mount
/// under it, and bwrap fails the start ("Can't bind mount /oldroot/ …: No such file or
/// directory") when one of them goes away while it walks them; the network namespaces of other
/// environments (one mount each in `/run/netns`) come and go all the time, and an app has no
/// business seeing them.
const NOT_SHOWN: [&str; 4] = ["proc", "dev", "tmp", "run/netns"];

/// bwrap's arguments that show the host's file system read-only below `root` (`/`, or a test's
/// stand-in), one top-level entry at a time so that [`NOT_SHOWN`] can be left out; symbolic
/// links stay links. An entry that vanishes before bwrap binds it is skipped (`--ro-bind-try`).
fn host_view(root: &Path) -> Vec<OsString> {
    fn walk(root: &Path, dir: &str, args: &mut Vec<OsString>) {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let rel = if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            };
            if NOT_SHOWN.contains(&rel.as_str()) {
                continue;
            }
            // `/run` is walked one level down, to leave its `netns` out.
            let hides_below = NOT_SHOWN.iter().any(|n| {
                n.strip_prefix(rel.as_str())
                    .is_some_and(|r| r.starts_with('/'))
            });
            let inside = Path::new("/").join(&rel);
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if is_link {
                if let Ok(target) = std::fs::read_link(entry.path()) {
                    args.extend([OsString::from("--symlink"), target.into(), inside.into()]);
                }
            } else if hides_below && entry.file_type().is_ok_and(|t| t.is_dir()) {
                args.extend([OsString::from("--dir"), inside.into()]);
                walk(root, &rel, args);
            } else {
                args.extend([
                    OsString::from("--ro-bind-try"),
                    entry.path().into(),
                    inside.into(),
                ]);
            }
        }
    }
    let mut args = Vec::new();
    walk(root, "", &mut args);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_host_view_binds_each_entry_and_leaves_out_the_network_namespaces() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in [
            "usr/bin",
            "etc",
            "proc",
            "dev",
            "tmp",
            "run/netns",
            "run/lock",
        ] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("run/utmp"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        let args = strings(&host_view(r));
        let at = |s: &str| format!("{}/{s}", r.display());
        assert_eq!(
            args,
            [
                "--symlink".to_owned(),
                "usr/bin".into(),
                "/bin".into(),
                "--ro-bind-try".into(),
                at("etc"),
                "/etc".into(),
                "--dir".into(),
                "/run".into(),
                "--ro-bind-try".into(),
                at("run/lock"),
                "/run/lock".into(),
                "--ro-bind-try".into(),
                at("run/utmp"),
                "/run/utmp".into(),
                "--ro-bind-try".into(),
                at("usr"),
                "/usr".into(),
            ]
        );
    }
}
