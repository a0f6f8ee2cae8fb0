//! Each environment's data: its database (a SQLite file, or a PostgreSQL cluster of its own)
//! and its storage directory, made, seeded, cloned, masked and removed.
//!
//! The crate knows nothing of the proxy, the API or the store's tables: the control plane calls
//! it from jobs, passing the paths it chose (built from validated names), a [`Progress`] to
//! report through and a cancellation token. Every operation that writes a new copy writes it
//! under a name of its own and leaves nothing behind when it fails or is cancelled; the caller
//! then swaps environments onto the new copy (a new *generation*) with its usual launch →
//! go-live → retire path, and removes the old one.
//!
//! - `sqlite`: one database file per generation; online copies that never block writers.
//! - `postgres`: one cluster per generation of each environment (why: docs/ARCHITECTURE.md),
//!   run from the system's binaries as the `postgres` user (root) or the daemon's user,
//!   listening inside the environment's network and on a unix socket for Turnout.
//! - `mask`: masking rules, strict checks and deterministic pseudonyms (the same formula in
//!   Rust for SQLite and in SQL for PostgreSQL).
//! - `files`: copying a storage directory (reflinks where the filesystem has them).

pub mod backup;
pub mod files;
pub mod mask;
mod offload;
pub mod postgres;
pub mod sqlite;

use std::path::PathBuf;

pub use mask::{FakeKind, MaskReport, MaskRule, MaskRules, Unmasked};

/// Which database an environment has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Engine, String> {
        match s {
            "sqlite" => Ok(Engine::Sqlite),
            "postgres" => Ok(Engine::Postgres),
            other => Err(format!(
                "unknown data engine '{other}': use \"sqlite\" or \"postgres\""
            )),
        }
    }
}

/// What an operation reports while it runs; the control plane turns each call into a job
/// event (`turnout job watch`). Calls come from the operation's own task, in order.
pub trait Progress: Send + Sync {
    /// A line of what is happening ("copying 1.2 GiB from production", a tool's output line).
    fn line(&self, text: &str);
    /// Bytes copied so far of `total` (when known).
    fn bytes(&self, done: u64, total: Option<u64>);
    /// A table was masked: its name and the rows changed.
    fn table_masked(&self, table: &str, rows: u64);
}

/// A [`Progress`] that reports nowhere (tests, and operations no one watches).
pub struct Quiet;

impl Progress for Quiet {
    fn line(&self, _: &str) {}
    fn bytes(&self, _: u64, _: Option<u64>) {}
    fn table_masked(&self, _: &str, _: u64) {}
}

/// Why a data operation failed. Every message names the thing and, where the user can act,
/// how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The operation was cancelled; nothing it wrote is left.
    #[error("cancelled")]
    Cancelled,
    /// Reading or writing a file or directory.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The data does not satisfy the masking rules (strict mode): these columns are unmasked.
    #[error("{}", mask::describe_unmasked(.0))]
    Unmasked(Vec<Unmasked>),
    /// A rule or input the user gave is wrong (a rule for a column type it cannot apply to, an
    /// unsupported access mode for the engine).
    #[error("{0}")]
    Invalid(String),
    /// PostgreSQL's binaries or its user are missing on this machine.
    #[error("{0}")]
    Unavailable(String),
    /// The database refused or failed (its own message, with what Turnout was doing).
    #[error("{0}")]
    Database(String),
}

impl DataError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> DataError {
        let path = path.into();
        move |source| DataError::Io { what, path, source }
    }
}

/// What a second environment may do with a database it is attached to
/// (`turnout data attach … --mode`). Enforced by the database where it can (PostgreSQL roles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// SELECT only.
    Read,
    /// SELECT and INSERT (and the sequences INSERT needs): no UPDATE, no DELETE.
    Append,
    /// Everything the environment's own role may do with its tables' rows.
    ReadWrite,
}
