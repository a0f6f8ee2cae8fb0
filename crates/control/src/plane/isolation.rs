//! Keeping environments apart from each other and from Turnout itself.
//!
//! As root, each environment's builds and instances run as its own unprivileged user (a uid of
//! Turnout's range, recorded in the store). Its release, storage and home directories belong to
//! that user, mode 0700; the directories above them are 0711 (passable, not listable) and owned
//! by the daemon; everything else of the home (store, tokens, logs, pid files, mirrors, job
//! files) is the daemon's alone (0700 directories, 0600 files: the daemon runs with umask 077).
//! Every process starts from a clean environment: an allow-list, never the daemon's own.
//!
//! Not as root, there is no other user to run as. Where bubblewrap can make unprivileged user
//! namespaces, each environment's processes run in a sandbox of their own instead
//! (`turnout_supervisor::Sandbox`): Turnout's home and the daemon user's home hidden, only the
//! environment's own directories writable, its own process namespace. Without it,
//! `--single-user` runs every environment as the daemon's user, which is unsafe for shared use
//! and says so; without that, only development environments run and the other tiers are
//! refused.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use turnout_model::{EnvRef, Isolation, IsolationMode, Tier};
use turnout_supervisor::{CgroupSpec, Identity, Sandbox};

use super::ControlPlane;
use crate::app_file::{ReleaseConfig, effective_plan};
use crate::error::ControlError;
use crate::home::Home;
use crate::store::EnvRow;

/// How environments are separated on this machine, decided once at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Separation {
    /// Turnout runs as root: each environment as its own user.
    Users,
    /// Not root: each environment in a sandbox of its own, made by this `bwrap`.
    Sandboxed(PathBuf),
    /// Not root, `--single-user`: every environment as the daemon's user.
    SingleUser,
    /// Not root: development environments as the daemon's user; other tiers refused.
    DevelopmentOnly,
}

impl Separation {
    /// Root: users. Else a sandbox where bubblewrap can make one, else `--single-user` or
    /// development only. `Err` carries why there is no sandbox, for `turnout serve` to say.
    pub fn detect(single_user: bool) -> (Separation, Option<String>) {
        if nix::unistd::geteuid().is_root() {
            return (Separation::Users, None);
        }
        match Sandbox::find_bwrap() {
            Ok(bwrap) => (Separation::Sandboxed(bwrap), None),
            Err(why) if single_user => (Separation::SingleUser, Some(why)),
            Err(why) => (Separation::DevelopmentOnly, Some(why)),
        }
    }

    /// Who `env`'s processes run as under this separation.
    fn identity(&self, env: &EnvRow) -> Result<Option<Identity>, ControlError> {
        match self {
            Separation::Users => Ok(Some(Identity {
                uid: env.uid,
                gid: env.uid,
            })),
            Separation::Sandboxed(_) | Separation::SingleUser => Ok(None),
            Separation::DevelopmentOnly if env.tier == Tier::Development => Ok(None),
            Separation::DevelopmentOnly => Err(ControlError::Conflict(format!(
                "refused: Turnout is not running as root, so {}/{} (tier {}) cannot run as a user of its own and would see every other environment; run `turnout serve` as root, or pass --single-user to accept that",
                env.app, env.name, env.tier
            ))),
        }
    }

    /// One line for `turnout serve`'s output.
    pub fn describe(&self) -> &'static str {
        match self {
            Separation::Users => "each environment runs as its own user",
            Separation::Sandboxed(_) => {
                "not root: each environment runs in a sandbox of its own (bubblewrap), which sees none of Turnout's files nor other environments' files or processes; they share the daemon's uid"
            }
            Separation::SingleUser => {
                "single user: every environment runs as the daemon's user and can read the others and Turnout's home; unsafe for shared use"
            }
            Separation::DevelopmentOnly => {
                "not root: development environments run as the daemon's user; other tiers are refused (run as root, or pass --single-user to accept that they are not isolated)"
            }
        }
    }
}

/// The PATH every process gets (the daemon's own PATH is not passed on).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl ControlPlane {
    /// Who `env`'s processes run as; refused when this daemon cannot isolate its tier.
    pub(crate) fn identity(&self, env: &EnvRow) -> Result<Option<Identity>, ControlError> {
        self.separation.identity(env)
    }

    pub(crate) fn isolation(&self, env: &EnvRow) -> Isolation {
        match self.separation {
            Separation::Users => Isolation {
                mode: IsolationMode::User,
                uid: env.uid,
                network: self.networks.namespace_name(env),
            },
            Separation::Sandboxed(_) => Isolation {
                mode: IsolationMode::Sandbox,
                uid: nix::unistd::geteuid().as_raw(),
                network: self.networks.namespace_name(env),
            },
            Separation::SingleUser | Separation::DevelopmentOnly => Isolation {
                mode: IsolationMode::SingleUser,
                uid: nix::unistd::geteuid().as_raw(),
                network: self.networks.namespace_name(env),
            },
        }
    }

    /// The allow-list every process of the environment starts from: PATH, its user's HOME,
    /// LANG. The rest (`TURNOUT_*`, the app file's `[env]`, secrets, PORT) the caller adds.
    pub(crate) fn base_env(&self, r: &EnvRef) -> Vec<(String, String)> {
        vec![
            ("PATH".to_owned(), PATH.to_owned()),
            (
                "HOME".to_owned(),
                self.home.user_home(&r.app, &r.env).display().to_string(),
            ),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ]
    }

    /// Create (or repair) the environment's directories with their owners and modes.
    pub(crate) async fn prepare_env_dirs(&self, env: &EnvRow) -> Result<(), ControlError> {
        let (home, uid) = (self.home.clone(), self.owner(env));
        let (app, name) = (env.app.clone(), env.name.clone());
        blocking(move || {
            let env_dir = home.env_dir(&app, &name);
            for dir in home.passable_dirs(&app) {
                make_dir(&dir, 0o711, None)?;
            }
            make_dir(&env_dir, 0o711, None)?;
            for dir in [home.logs_dir(&app, &name), home.run_dir(&app, &name)] {
                make_dir(&dir, 0o700, None)?;
            }
            for dir in [
                home.releases_dir(&app, &name),
                home.data_dir(&app, &name),
                home.user_home(&app, &name),
            ] {
                make_dir(&dir, 0o700, uid)?;
            }
            Ok(())
        })
        .await
    }

    /// Give a release tree to the environment's user: after its checkout, and before a launch
    /// when it still has another owner (a release written before environments had users).
    pub(crate) async fn hand_over(&self, env: &EnvRow, dir: &Path) -> Result<(), ControlError> {
        let Some(uid) = self.owner(env) else {
            return Ok(());
        };
        let dir = dir.to_path_buf();
        blocking(move || {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::symlink_metadata(&dir).map_err(|e| io_error(&dir, e))?;
            if owner.uid() == uid {
                return Ok(());
            }
            chown_tree(&dir, uid)
        })
        .await
    }

    /// The control group of the environment's processes (one leaf per process group inside
    /// it), with the release's resource plan.
    pub(crate) fn cgroup(&self, env: &EnvRow, config: &ReleaseConfig) -> CgroupSpec {
        let plan = effective_plan(&env.plan, &config.plan);
        CgroupSpec {
            name: cgroup_name(env),
            memory: plan.memory,
            cpu: plan.cpu,
            pids: plan.pids,
        }
    }

    /// Not root, with bubblewrap: the sandbox `env`'s processes run in. Hidden: the daemon
    /// user's home, Turnout's home and (when elsewhere) the environments' root; writable again:
    /// the environment's releases, data (its databases and storage) and home.
    pub(crate) fn sandbox(&self, env: &EnvRow) -> Option<Sandbox> {
        let Separation::Sandboxed(bwrap) = &self.separation else {
            return None;
        };
        let home = &self.home;
        let mut hidden: Vec<PathBuf> = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute() && dir.parent().is_some())
            .into_iter()
            .collect();
        hidden.push(home.root().to_path_buf());
        if !home.envs_root().starts_with(home.root()) {
            hidden.push(home.envs_root().to_path_buf());
        }
        Some(Sandbox {
            bwrap: bwrap.clone(),
            hidden,
            writable: vec![
                home.releases_dir(&env.app, &env.name),
                home.data_dir(&env.app, &env.name),
                home.user_home(&env.app, &env.name),
            ],
        })
    }

    /// The uid that owns the environment's files: its own user's as root, else the daemon's.
    pub(super) fn owner(&self, env: &EnvRow) -> Option<u32> {
        (self.separation == Separation::Users).then_some(env.uid)
    }
}

/// As root, the home's ancestors must let other users pass, or no environment's user could
/// reach its own directories inside it (root's own home, `/root`, is 0700). When they do not,
/// the environments' directories go to `/var/lib/turnout/<home's hash>` instead; the rest of
/// the home stays where it is. Returns the home to use.
pub fn place_envs(home: Home, separation: &Separation) -> Home {
    use std::os::unix::fs::MetadataExt;
    if *separation != Separation::Users {
        return home;
    }
    let reachable = home
        .root()
        .ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0));
    if reachable {
        return home;
    }
    let hash = blake3::hash(home.root().as_os_str().as_encoded_bytes()).to_hex();
    let dir = PathBuf::from("/var/lib/turnout").join(&hash.as_str()[..16]);
    home.with_envs_root(dir)
}

/// An environment's control group: by its uid, unique among the environments that exist.
pub(crate) fn cgroup_name(env: &EnvRow) -> String {
    format!("env-{}", env.uid)
}

/// The home's own modes: the daemon's alone, but passable for the environments' users to reach
/// their own directories. Files an older version wrote world-readable are closed too.
pub fn secure_home(home: &Home) -> Result<(), ControlError> {
    make_dir(home.root(), 0o711, None)?;
    make_dir(&home.apps_dir(), 0o711, None)?;
    for file in [
        home.db(),
        home.admin_token(),
        home.serve_json(),
        home.lock_file(),
    ]
    .into_iter()
    .chain(["turnout.db-wal", "turnout.db-shm"].map(|f| home.root().join(f)))
    {
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&file, e)),
        }
    }
    Ok(())
}

pub(super) fn make_dir(dir: &Path, mode: u32, owner: Option<u32>) -> Result<(), ControlError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(dir, e))?;
    if let Some(uid) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(uid)).map_err(|e| io_error(dir, e))?;
    }
    Ok(())
}

/// `chown -R` without following symbolic links (a link is re-owned itself, never its target).
pub(crate) fn chown_tree(dir: &Path, uid: u32) -> Result<(), ControlError> {
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(uid)).map_err(|e| io_error(&path, e))?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| io_error(&path, e))? {
                stack.push(entry.map_err(|e| io_error(&path, e))?.path());
            }
        }
    }
    Ok(())
}

fn io_error(path: &Path, e: std::io::Error) -> ControlError {
    ControlError::internal(format!("{}: {e}", path.display()))
}

pub(super) async fn blocking(
    f: impl FnOnce() -> Result<(), ControlError> + Send + 'static,
) -> Result<(), ControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ControlError::internal(format!("file task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(tier: Tier) -> EnvRow {
        EnvRow {
            id: 1,
            app_id: 1,
            app: "shop".parse().unwrap(),
            name: "prod".parse().unwrap(),
            branch: "main".into(),
            tier,
            current_release_id: None,
            stopped: false,
            plan: Default::default(),
            deploy_on: Default::default(),
            sleep_after: None,
            tier_sleep_after: None,
            made_for_branch: false,
            sleeping: false,
            uid: 201_007,
            created_at: 0,
        }
    }

    #[test]
    fn who_an_environment_runs_as_on_each_kind_of_daemon() {
        let id = Separation::Users.identity(&env(Tier::Production)).unwrap();
        assert_eq!(id.map(|i| (i.uid, i.gid)), Some((201_007, 201_007)));
        assert!(
            Separation::SingleUser
                .identity(&env(Tier::Production))
                .unwrap()
                .is_none()
        );
        assert!(
            Separation::DevelopmentOnly
                .identity(&env(Tier::Development))
                .unwrap()
                .is_none()
        );
        for tier in Tier::ALL.into_iter().filter(|t| *t != Tier::Development) {
            let err = Separation::DevelopmentOnly
                .identity(&env(tier))
                .unwrap_err();
            assert!(err.to_string().contains("--single-user"), "{err}");
        }
    }
}
