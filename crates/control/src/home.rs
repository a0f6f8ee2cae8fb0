//! The layout of the home directory. Every path Turnout writes is built here, from validated
//! names only, so no user string becomes a path component unchecked.
//!
//! ```text
//! <home>/turnout.db              the store (SQLite, WAL)
//! <home>/serve.json              bound addresses of the running daemon
//! <home>/serve.lock              held by the running daemon
//! <home>/admin.token             the first owner's API token (mode 0600)
//! <home>/apps/<app>/repo.git     bare mirror of the app's repository
//! <home>/apps/<app>/envs/<env>/  one environment:
//!     releases/<commit12>-<fp>/  immutable release trees (a detached worktree each, built in place)
//!     releases/<commit12>-<fp>.built   marker: the build in that tree finished
//!     logs/release-<id>.log      the instance's stdout and stderr
//!     logs/release-<id>-build.log
//!     storage/                   persistent storage ($TURNOUT_STORAGE_DIR)
//!     home/                      the environment's user's $HOME
//!     run/release-<id>.pid       process group of a running instance (or build)
//! <home>/jobs/<id>.ndjson        every event of a job
//! ```
//!
//! Modes (see `plane::isolation`): the home, `apps/`, each app's and environment's directory
//! and `envs/` are 0711, passable but not listable; `releases/`, `storage/` and `home/` belong to
//! the environment's user, 0700; everything else is the daemon's, 0700 or 0600.
use std::path::{Path, PathBuf};

use turnout_model::{AppName, EnvName};

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: PathBuf) -> Home {
        Home { root }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("turnout.db")
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
        self.app_dir(app).join("envs").join(env.as_str())
    }
    /// The directories between the home and an environment's, which its user must pass.
    pub fn passable_dirs(&self, app: &AppName, _env: &EnvName) -> [PathBuf; 4] {
        [
            self.root.clone(),
            self.apps_dir(),
            self.app_dir(app),
            self.app_dir(app).join("envs"),
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
    pub fn storage_dir(&self, app: &AppName, env: &EnvName) -> PathBuf {
        self.env_dir(app, env).join("storage")
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
    /// Every event of job `id`, one JSON line each.
    pub fn job_events(&self, id: i64) -> PathBuf {
        self.root.join("jobs").join(format!("{id}.ndjson"))
    }
    pub fn build_log(&self, app: &AppName, env: &EnvName, release: i64) -> PathBuf {
        self.logs_dir(app, env)
            .join(format!("release-{release}-build.log"))
    }

    /// Pid files of every environment, for reaping instances a killed daemon left behind.
    pub fn all_pid_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(apps) = std::fs::read_dir(self.apps_dir()) else {
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
                out.extend(
                    files
                        .flatten()
                        .map(|f| f.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "pid")),
                );
            }
        }
        out
    }
}

/// The user's data directory for Turnout: `$XDG_DATA_HOME/turnout`, else
/// `~/.local/share/turnout`.
pub fn default_home() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("turnout");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/turnout")
}
