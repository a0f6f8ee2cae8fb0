//! PostgreSQL backups: base backups of a cluster's files into the app's backup repository
//! (online, through the low-level backup API like a clone), its WAL archive (PostgreSQL's
//! `basic_archive` module writes each finished segment into the cluster's archive directory;
//! Turnout ingests them into the repository, checksummed and compressed, and removes them), and
//! restores to any moment inside the WAL window: a new cluster from the newest base backup
//! before that moment, its WAL replayed up to it, then made safe like a clone (roles,
//! passwords, subscriptions, slots) before anyone but Turnout can log in.

use std::path::Path;

use tokio_util::sync::CancellationToken;
use turnout_netns::Network;

use super::{Cluster, ClusterSpec, PgSystem};
use crate::backup::{Repo, SnapshotStats};
use crate::{DataError, Progress};

/// Where a restore stops replaying WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// The end of the base backup (the snapshot as it was).
    EndOfBackup,
    /// This moment (unix microseconds): every transaction committed at or before it.
    Time(i64),
}

/// A base backup written into the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseBackup {
    pub stats: SnapshotStats,
    /// The first WAL segment its restore needs.
    pub start_segment: String,
}

/// What one WAL ingest did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalIngest {
    pub segments: u64,
    pub stored_bytes: u64,
}

/// The WAL a stream holds in the repository: its segments' range and when the newest was
/// archived (unix seconds), the end of the window restores can reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRange {
    pub first: String,
    pub last: String,
    pub last_archived_at: i64,
}

impl Cluster {
    /// A base backup of this running cluster as snapshot `name` (with `storage`, the
    /// environment's storage directory, as `storage/…`), while it serves.
    pub async fn snapshot_into(
        &self,
        repo: &Repo,
        name: &str,
        storage: &Path,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<BaseBackup, DataError> {
        let _ = (repo, name, storage, progress, cancel);
        todo!()
    }

    /// Asks the server to finish its current WAL segment (`pg_switch_wal`) and waits until the
    /// archiver has written it into the archive directory, so the WAL reaches now.
    pub async fn flush_wal(&self, cancel: &CancellationToken) -> Result<(), DataError> {
        let _ = cancel;
        todo!()
    }

    /// Moves every finished segment from the cluster's archive directory into `repo` as WAL
    /// stream `stream` (checksummed, compressed), removing each once stored.
    pub async fn ingest_wal(
        &self,
        repo: &Repo,
        stream: &str,
        cancel: &CancellationToken,
    ) -> Result<WalIngest, DataError> {
        let _ = (repo, stream, cancel);
        todo!()
    }

    /// Removes every finished segment from the archive directory (an environment without
    /// backups: its WAL is not kept).
    pub async fn discard_archived_wal(&self) -> Result<u64, DataError> {
        todo!()
    }

    /// A new cluster at `spec`, started in `network`, holding snapshot `name` of a cluster whose
    /// spec was `source` (its database, role and passwords, renamed and replaced by `spec`'s as
    /// a clone is), with WAL stream `stream` replayed up to `target`; the storage it holds is
    /// written to `storage`. The error says when the WAL does not reach `target`.
    #[allow(clippy::too_many_arguments)]
    pub async fn restore_from(
        repo: &Repo,
        name: &str,
        stream: &str,
        target: RecoveryTarget,
        source: &ClusterSpec,
        sys: PgSystem,
        spec: ClusterSpec,
        network: &Network,
        storage: &Path,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<Cluster, DataError> {
        let _ = (
            repo, name, stream, target, source, sys, spec, network, storage, progress, cancel,
        );
        todo!()
    }
}

impl Repo {
    /// The WAL stream `stream` holds, if any.
    pub async fn wal_range(&self, stream: &str) -> Result<Option<WalRange>, DataError> {
        self.wal_range_of(stream).await
    }

    /// Removes stream `stream`'s segments older than `keep_from` (the oldest kept base
    /// backup's start segment); `None` removes the whole stream.
    pub async fn prune_wal(&self, stream: &str, keep_from: Option<&str>) -> Result<u64, DataError> {
        self.prune_wal_of(stream, keep_from).await
    }
}
