//! The layout of the home directory. Every path Turnout writes is built here, from validated
//! names only, so no user string becomes a path component unchecked.
//!
//! ```text
//! <home>/turnout.db              the store (SQLite, WAL)
//! <home>/serve.json              bound addresses of the running daemon
//! <home>/serve.lock              held by the running daemon
//! <home>/admin.token             the first owner's API token (mode 0600)
//! <home>/secret.key              the key that seals secret values in the store (mode 0600)
//! <home>/credential.key          derives each environment's password for the daemon's services
//! <home>/services.json           the ports of the mail catcher and the egress proxy, kept
//! <home>/apps/<app>/repo.git     bare mirror of the app's repository
//! <home>/apps/<app>/envs/<env>/  one environment:
//!     releases/<commit12>-<fp>/  immutable release trees (a detached worktree each, built in place)
//!     releases/<commit12>-<fp>.built   marker: the build in that tree finished
//!     logs/release-<id>.log      the instance's stdout and stderr
//!     logs/release-<id>-build.log
//!     data/g<N>/db.sqlite        generation N of its data: the SQLite database,
//!     data/g<N>/storage/         and the persistent storage ($TURNOUT_STORAGE_DIR)
//!     pg/g<N>/, pg/g<N>.log      generation N's PostgreSQL cluster (engine = "postgres")
//!     pgsock/g<N>/               its unix socket
//!     home/                      the environment's user's $HOME
//!     run/release-<id>.pid       process group of a running instance (or build)
//!     run/run-<token>.pid        process group of a `turnout run`
//! <home>/jobs/<id>.ndjson        every event of a job
//! ```
//!
//! Modes (see `plane::isolation`): the home, `apps/`, each app's and environment's directory
//! and `envs/` are 0711, passable but not listable; `releases/`, `data/` and `home/` belong to
//! the environment's user, 0700; `pg/` (0700) and `pgsock/` (0711) to the clusters' user; everything else is the daemon's, 0700 or 0600.
use std::path::{Path, PathBuf};

use turnout_model::{AppName, EnvName};

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
    /// Where the environments' directories are: `<root>/apps`, unless the home cannot be
    /// reached by the environments' users (see `with_envs_root`).
    envs_root: PathBuf,
}

impl Home {
    pub fn new(root: PathBuf) -> Home {
        Home {
            envs_root: root.join("apps"),
            root,
        }
    }
    /// Keep the environments' directories (`<app>/envs/<env>/…`) under `dir` instead: for a
    /// home inside a directory other users cannot pass (such as root's own `/root`), where the
    /// environments' users could never reach their own directories.
    pub fn with_envs_root(self, dir: PathBuf) -> Home {
        Home {
            envs_root: dir,
            ..self
        }
    }
    pub fn envs_root(&self) -> &Path {
        &self.envs_root
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("turnout.db")
    }
    /// The sockets of the instances' supervising processes (the daemon's alone).
    pub fn sockets_dir(&self) -> PathBuf {
        self.root.join("instances")
    }
    pub fn serve_json(&self) -> PathBuf {
        self.root.join("serve.json")
    }
    /// The token of the owner the first `serve` creates (mode 0600).
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("serve.lock")
    }
    /// Where the running daemon hands its listening sockets to `turnout serve --upgrade`.
    pub fn upgrade_socket(&self) -> PathBuf {
        self.root.join("upgrade.sock")
    }
    /// The data plane's control socket (the daemon's user alone: 0600 in its home).
    pub fn dataplane_socket(&self) -> PathBuf {
        self.root.join("dataplane.sock")
    }
    /// What the data plane logs (appended by every data plane of this home).
    pub fn dataplane_log(&self) -> PathBuf {
        self.root.join("dataplane.log")
    }
    pub fn apps_dir(&self) -> PathBuf {
        self.root.join("apps")
    }
    pub fn app_dir(&self, app: &AppName) -> PathBuf {
        self.apps_dir().join(app.as_str())
    }
    pub fn mirror(&self, app: &AppName) -> PathBuf {
        self.app_dir(app).join("repo.git")
    }
    pub fn env_dir(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.app_envs_dir(app).join(env.as_str())
    }
    /// The directory of an app's environments.
    pub fn app_envs_dir(&self, app: &AppName) -> PathBuf {
        self.envs_root.join(app.as_str()).join("envs")
    }
    /// The directories Turnout made between a reachable directory and an environment's own,
    /// which its user must pass.
    pub fn passable_dirs(&self, app: &AppName) -> Vec<PathBuf> {
        let first = if self.envs_root.starts_with(&self.root) {
            self.root.clone()
        } else {
            self.envs_root
                .parent()
                .unwrap_or(&self.envs_root)
                .to_path_buf()
        };
        vec![
            first,
            self.envs_root.clone(),
            self.envs_root.join(app.as_str()),
            self.app_envs_dir(app),
        ]
    }
    /// `$HOME` of the environment's user.
    pub fn user_home(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.env_dir(app, env).join("home")
    }
    pub fn run_dir(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.env_dir(app, env).join("run")
    }
    pub fn releases_dir(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.env_dir(app, env).join("releases")
    }
    pub fn logs_dir(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.env_dir(app, env).join("logs")
    }
    /// Every generation of the environment's data (its user's, 0700): `g<N>/db.sqlite` and
    /// `g<N>/storage/`.
    pub fn data_dir(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.env_dir(app, env).join("data")
    }
    /// One generation of the environment's data.
    pub fn generation_dir(&self, app: &AppName, env: &EnvName, generation: i64) -> PathBuf {
        self.data_dir(app, env).join(format!("g{generation}"))
    }
    /// The SQLite database of a generation.
    pub fn sqlite_path(&self, app: &AppName, env: &EnvName, generation: i64) -> PathBuf {
        self.generation_dir(app, env, generation).join("db.sqlite")
    }
    /// The persistent storage of a generation (`$TURNOUT_STORAGE_DIR`).
    pub fn storage_dir(&self, app: &AppName, env: &EnvName, generation: i64) -> PathBuf {
        self.generation_dir(app, env, generation).join("storage")
    }
    /// The PostgreSQL clusters' data directories and logs (the cluster user's, 0700).
    pub fn pg_root(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.env_dir(app, env).join("pg")
    }
    /// The data directory of a generation's cluster.
    pub fn pg_dir(&self, app: &AppName, env: &EnvName, generation: i64) -> PathBuf {
        self.pg_root(app, env).join(format!("g{generation}"))
    }
    /// The server log of a generation's cluster.
    pub fn pg_log(&self, app: &AppName, env: &EnvName, generation: i64) -> PathBuf {
        self.pg_root(app, env).join(format!("g{generation}.log"))
    }
    /// The clusters' socket directories (the cluster user's, 0711: attached environments pass).
    pub fn pg_socket_root(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.env_dir(app, env).join("pgsock")
    }
    /// The socket directory of a generation's cluster.
    pub fn pg_socket_dir(&self, app: &AppName, env: &EnvName, generation: i64) -> PathBuf {
        self.pg_socket_root(app, env).join(format!("g{generation}"))
    }
    /// The WAL archive directory of a generation's cluster (`pg/g<N>.wal`, the cluster user's),
    /// which backups ingest into the app's repository.
    pub fn pg_archive_dir(&self, app: &AppName, env: &EnvName, generation: i64) -> PathBuf {
        self.pg_root(app, env).join(format!("g{generation}.wal"))
    }
    /// The app's backup repository (`backups/<app>`).
    pub fn backup_repo(&self, app: &AppName) -> PathBuf {
        self.root.join("backups").join(app.as_str())
    }
    pub fn pid_file(&self, app: &AppName, env: &EnvName, release: i64) -> PathBuf {
        self.env_dir(app, env)
            .join("run")
            .join(format!("release-{release}.pid"))
    }
    pub fn run_log(&self, app: &AppName, env: &EnvName, release: i64) -> PathBuf {
        self.logs_dir(app, env)
            .join(format!("release-{release}.log"))
    }
    /// Records a build's process group, so a daemon killed during the build has it killed at
    /// its next start (`all_pid_files`).
    pub fn build_pid_file(&self, app: &AppName, env: &EnvName, release: i64) -> PathBuf {
        self.env_dir(app, env)
            .join("run")
            .join(format!("release-{release}-build.pid"))
    }
    /// The log of a release's data command (`seed`, `migrate`).
    pub fn task_log(&self, app: &AppName, env: &EnvName, release: i64, task: &str) -> PathBuf {
        self.logs_dir(app, env)
            .join(format!("release-{release}-{task}.log"))
    }
    /// Records a data command's process group, like a build's (`all_pid_files`).
    pub fn task_pid_file(&self, app: &AppName, env: &EnvName, release: i64, task: &str) -> PathBuf {
        self.run_dir(app, env)
            .join(format!("release-{release}-{task}.pid"))
    }
    /// Every event of job `id`, one JSON line each.
    pub fn job_events(&self, id: i64) -> PathBuf {
        self.root.join("jobs").join(format!("{id}.ndjson"))
    }
    pub fn build_log(&self, app: &AppName, env: &EnvName, release: i64) -> PathBuf {
        self.logs_dir(app, env)
            .join(format!("release-{release}-build.log"))
    }

    /// Records the `pasta` that connects the environment's network namespace out; it is not a
    /// process group with a token, so it is not among `all_pid_files`.
    pub fn pasta_pid_file(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.run_dir(app, env).join(PASTA_PID_FILE)
    }

    /// The pid files of every environment's process groups (instances, builds, data commands,
    /// `turnout run`s: every `*.pid` but pasta's), for reaping what a killed daemon left behind.
    pub fn all_pid_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(apps) = std::fs::read_dir(&self.envs_root) else {
            return out;
        };
        for app in apps.flatten() {
            let Ok(envs) = std::fs::read_dir(app.path().join("envs")) else {
                continue;
            };
            for env in envs.flatten() {
                let Ok(files) = std::fs::read_dir(env.path().join("run")) else {
                    continue;
                };
                out.extend(files.flatten().map(|f| f.path()).filter(|p| {
                    p.extension().is_some_and(|e| e == "pid")
                        && p.file_name().is_some_and(|n| n != PASTA_PID_FILE)
                }));
            }
        }
        out
    }
}

/// `pasta`'s pid file in an environment's run directory: a bare pid, not a process group.
const PASTA_PID_FILE: &str = "pasta.pid";

/// The user's data directory for Turnout: `$XDG_DATA_HOME/turnout`, else
/// `~/.local/share/turnout`.
pub fn default_home() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("turnout");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/turnout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pid_file_is_a_group_to_reap_but_pastas() {
        let root = tempfile::tempdir().unwrap();
        let home = Home::new(root.path().to_owned());
        let (app, env) = (AppName::new("shop").unwrap(), EnvName::new("qa").unwrap());
        let run = home.run_dir(&app, &env);
        std::fs::create_dir_all(&run).unwrap();
        let groups = [
            home.pid_file(&app, &env, 3),
            home.build_pid_file(&app, &env, 4),
            home.task_pid_file(&app, &env, 4, "seed"),
            run.join("run-0123abcd.pid"),
        ];
        for file in groups.iter().chain([
            &home.pasta_pid_file(&app, &env),
            &run.join("release-5.pid.partial"),
        ]) {
            std::fs::write(file, "1\n").unwrap();
        }
        let mut found = home.all_pid_files();
        found.sort();
        let mut groups = groups.to_vec();
        groups.sort();
        assert_eq!(found, groups);
    }
}
