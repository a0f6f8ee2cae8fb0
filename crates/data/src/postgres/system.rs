//! The PostgreSQL installation: where its binaries are, whom clusters run as, and how its
//! tools are run and its files written.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use turnout_netns::Network;
use turnout_supervisor::{Identity, ProgramSpec};

use crate::DataError;

/// How to get PostgreSQL where it is missing.
const INSTALL_HINT: &str = "install Debian's `postgresql` package (apt-get install postgresql)";

/// Time limits for the tools: initdb and a server's start or stop take seconds; a base backup
/// of a large database takes as long as it takes (a cancel stops it).
pub(super) const QUICK: Duration = Duration::from_secs(120);
pub(super) const COPY: Duration = Duration::from_secs(24 * 3600);

/// The PostgreSQL installation and the user clusters run as.
#[derive(Clone, Debug)]
pub struct PgSystem {
    /// Where initdb, pg_ctl and postgres are.
    pub bin_dir: PathBuf,
    /// Who the clusters run as: the `postgres` user when Turnout is root, else None (the
    /// daemon's own user).
    pub run_as: Option<turnout_supervisor::Identity>,
}

impl PgSystem {
    /// Finds the binaries and, as root, the `postgres` user; a clear error says what to install
    /// when either is missing.
    pub fn find() -> Result<PgSystem, DataError> {
        let bin_dir = find_bin_dir().ok_or_else(|| {
            DataError::Unavailable(format!(
                "PostgreSQL's initdb and pg_ctl were found neither on PATH nor under /usr/lib/postgresql/*/bin: {INSTALL_HINT}"
            ))
        })?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or_else(|| {
                    DataError::Unavailable(format!(
                        "Turnout runs as root and PostgreSQL refuses to, but there is no `postgres` user to run it as: {INSTALL_HINT}"
                    ))
                })?;
            Some(Identity {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            })
        } else {
            None
        };
        Ok(PgSystem { bin_dir, run_as })
    }

    fn has_tools(dir: &Path) -> bool {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    }

    /// A tool of this installation as the clusters' user, from a clean environment.
    pub(super) fn tool(
        &self,
        name: &str,
        args: Vec<OsString>,
        extra_env: &[(&str, &str)],
    ) -> ProgramSpec {
        let mut env = vec![
            (
                "PATH".to_owned(),
                format!("{}:/usr/bin:/bin", self.bin_dir.display()),
            ),
            ("LC_ALL".to_owned(), "C".to_owned()),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        ProgramSpec {
            program: self.bin_dir.join(name),
            args,
            cwd: PathBuf::from("/"),
            env,
            identity: self.run_as,
            network: Network::Host,
            timeout: QUICK,
        }
    }

    /// Gives `path` to the clusters' user (when that is not the daemon's).
    pub(super) fn give(&self, path: &Path) -> Result<(), DataError> {
        if let Some(id) = self.run_as {
            std::os::unix::fs::chown(path, Some(id.uid), Some(id.gid))
                .map_err(DataError::io("cannot give to the postgres user", path))?;
        }
        Ok(())
    }

    /// Makes `dir` (which must not exist) with `mode`, and its missing parents (0711), all
    /// given to the clusters' user.
    pub(super) fn make_dir(&self, dir: &Path, mode: u32) -> Result<(), DataError> {
        if let Some(parent) = dir.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            self.make_dir(parent, 0o711)?;
        }
        std::fs::create_dir(dir).map_err(DataError::io("cannot create directory", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .map_err(DataError::io("cannot set the mode of", dir))?;
        self.give(dir)
    }

    /// Writes a file the server reads (0600, the clusters' user's).
    pub(super) fn write_file(&self, path: &Path, contents: &str) -> Result<(), DataError> {
        std::fs::write(path, contents).map_err(DataError::io("cannot write", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(DataError::io("cannot set the mode of", path))?;
        self.give(path)
    }
}

/// initdb's directory: from PATH (following a symlink such as /usr/local/bin/initdb), else the
/// newest /usr/lib/postgresql/VERSION/bin.
fn find_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_owned))
        .find(|dir| PgSystem::has_tools(dir));
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let version = e.file_name().to_str()?.parse().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, dir)| PgSystem::has_tools(dir))
            .collect();
        versions.sort();
        versions.pop().map(|(_, dir)| dir)
    })
}
