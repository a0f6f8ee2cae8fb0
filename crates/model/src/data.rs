//! The API's bodies for environments' data (`turnout data …`).

use serde::{Deserialize, Serialize};

/// What an attached environment may do with the other's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DataAccess {
    Read,
    Append,
    ReadWrite,
}

impl DataAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            DataAccess::Read => "read",
            DataAccess::Append => "append",
            DataAccess::ReadWrite => "read-write",
        }
    }
}

impl std::str::FromStr for DataAccess {
    type Err = String;
    fn from_str(s: &str) -> Result<DataAccess, String> {
        match s {
            "read" => Ok(DataAccess::Read),
            "append" => Ok(DataAccess::Append),
            "read-write" => Ok(DataAccess::ReadWrite),
            other => Err(format!(
                "unknown access mode '{other}': use read, append or read-write"
            )),
        }
    }
}

impl std::fmt::Display for DataAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an environment's current data came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataOrigin {
    /// `empty`, `seed`, `clone` or `sync`.
    pub kind: String,
    /// The environment copied from (`APP/ENV`), for a clone or sync.
    pub from: Option<String>,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The job that made it, if one did.
    pub job: Option<i64>,
}

/// Another environment's database this one may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataAttachment {
    /// The environment whose database it is (`APP/ENV`).
    pub to: String,
    pub mode: DataAccess,
    /// The variable the URL is given in (e.g. `OTHER_DATABASE_URL`).
    pub var: String,
}

/// `turnout data show APP/ENV`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataInfo {
    pub app: String,
    pub env: String,
    /// `sqlite` or `postgres`.
    pub engine: String,
    /// Bumped by every seed, clone or sync (each writes a new copy, then swaps).
    pub generation: i64,
    /// The connection URL with its password hidden (`****`).
    pub url: String,
    pub storage_dir: String,
    /// Bytes of the database (and its WAL), when it could be read.
    pub size_bytes: Option<u64>,
    pub origin: DataOrigin,
    /// The re-seed schedule of the live release, if it declares one.
    pub reseed: Option<ReseedInfo>,
    pub attachments: Vec<DataAttachment>,
}

/// A scheduled re-seed (`[data] reseed` of the live release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReseedInfo {
    pub cron: String,
    pub timezone: String,
    /// The next tick (RFC 3339 in the schedule's zone).
    pub next: Option<String>,
    /// The last tick the scheduler handled and what it did (`started job N`, `skipped: …`).
    pub last_tick: Option<String>,
    pub last_result: Option<String>,
}

/// `POST …/data/clone` and `…/data/sync`: where the data comes from (`APP/ENV`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataSource {
    pub from: String,
    /// A sync only: read the source's newest backup instead of its live data (production is
    /// then not read at all).
    #[serde(default)]
    pub from_backup: bool,
}

/// `POST …/data/attachments`: give this environment access to another's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachData {
    /// The environment whose database it is (`APP/ENV`).
    pub to: String,
    pub mode: DataAccess,
    /// The variable name (default `OTHERENV_DATABASE_URL`, upper-cased, `-` → `_`).
    pub var: Option<String>,
}

/// `GET …/data/connection`: what `turnout data psql|sqlite` connects with (the password
/// included: only for those who may configure the environment, and audited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DataConnection {
    pub engine: String,
    /// A URL the daemon's machine can use (PostgreSQL: over the unix socket; SQLite: the path).
    pub url: String,
}

/// `POST …/data/seed`: new data from the live release's seed (`turnout data seed|reseed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeedData {
    /// `sqlite` or `postgres`: the engine of the new data (default: the one the live release
    /// declares), to change an environment's engine.
    #[serde(default)]
    pub engine: Option<String>,
}
