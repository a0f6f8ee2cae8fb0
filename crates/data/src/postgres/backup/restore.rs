//! Restores of PostgreSQL base backups to a moment: the snapshot's files and the WAL it needs
//! (checked, from the repository) staged in a new data directory, PostgreSQL's own targeted
//! archive recovery, then the clone's make-safe steps.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;
use turnout_netns::Network;

use super::{
    DATA_PREFIX, META_DIRS, META_END, META_LABEL, META_SEGMENT_SIZE, META_STORAGE, META_WAL_START,
    META_WAL_STOP, RecoveryTarget, STORAGE_PREFIX, is_segment,
};
use crate::backup::Repo;
use crate::postgres::{
    Cluster, ClusterSpec, Logins, PgSystem, SUPERUSER, check_cancel, db_error, quote_literal,
};
use crate::{DataError, Progress};

/// The directory, inside the restored data directory, where a restore stages the WAL it
/// replays. PostgreSQL runs `restore_command` in the data directory, so the command names it
/// relatively: no path of the machine's is ever put into a shell command.
const STAGING: &str = "turnout_restore_wal";

/// How long a restore's WAL replay may go without progress before it is given up.
const REPLAY_STALL: Duration = Duration::from_secs(120);

/// PostgreSQL's words when archive recovery ran out of WAL before its target (a FATAL exit).
const ENDED_BEFORE_TARGET: &str = "recovery ended before configured recovery target was reached";

/// PostgreSQL's words when the target lies inside the base backup itself.
const TARGET_BEFORE_CONSISTENT: &str =
    "requested recovery stop point is before consistent recovery point";

impl Cluster {
    /// A new cluster at `spec`, started in `network`, holding snapshot `name` of a cluster whose
    /// spec was `source` (its database, role and passwords, renamed and replaced by `spec`'s as
    /// a clone is), with WAL stream `stream` replayed up to `target`; the storage it holds is
    /// written to `storage`. The error says when the WAL does not reach `target`.
    ///
    /// The snapshot's files are written under the spec's `.partial` name with its backup label
    /// and `recovery.signal`; the WAL it needs (from the backup's first segment on, every
    /// segment checked against its hash) is staged inside it, where `restore_command` copies
    /// each segment from as PostgreSQL asks for it. PostgreSQL insists on a `restore_command`
    /// for a targeted recovery, and segments it restores that way are not archived again as
    /// the new cluster's own WAL. The first start allows only Turnout's login; once promoted,
    /// the cluster is made safe like a clone and restarted without any recovery setting.
    /// A failure or cancel leaves nothing.
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
        spec.check()?;
        if storage.exists() {
            return Err(DataError::Invalid(format!(
                "{} already exists: a restore writes a storage directory of its own",
                storage.display()
            )));
        }
        let cluster = Cluster { sys, spec };
        let restored = cluster
            .restore_steps(
                repo, name, stream, target, source, network, storage, progress, cancel,
            )
            .await;
        match restored {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.discard().await;
                if let Err(e) = std::fs::remove_dir_all(storage)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!(dir = %storage.display(), error = %e, "could not remove a failed restore's storage");
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn restore_steps(
        &self,
        repo: &Repo,
        name: &str,
        stream: &str,
        target: RecoveryTarget,
        source: &ClusterSpec,
        network: &Network,
        storage: &Path,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let (sys, spec) = (&self.sys, &self.spec);
        let meta = |key: &'static str| async move {
            repo.meta(name, key).await?.ok_or_else(|| {
                DataError::Invalid(format!(
                    "snapshot {name} is not a PostgreSQL base backup (it has no {key})"
                ))
            })
        };
        let label = meta(META_LABEL).await?;
        let start = meta(META_WAL_START).await?;
        let stop = meta(META_WAL_STOP).await?;
        let dirs = meta(META_DIRS).await?;
        let segment_size: u64 = meta(META_SEGMENT_SIZE)
            .await?
            .parse()
            .ok()
            .filter(|size: &u64| size.is_power_of_two() && *size <= 1 << 30)
            .ok_or_else(|| {
                DataError::Invalid(format!("snapshot {name} has no valid WAL segment size"))
            })?;
        // What the restore needs from the stream, checked before anything is written.
        let stored = repo.wal_segments(stream).await?;
        let names: Vec<String> = stored.iter().map(|(segment, _)| segment.clone()).collect();
        let plan = wal_plan(&names, &start, &stop, segment_size, target).map_err(|missing| {
            DataError::Database(format!(
                "WAL segment {missing} of stream {stream} is missing from the backup repository, and snapshot {name} cannot be restored without it"
            ))
        })?;
        if let RecoveryTarget::Time(at) = target {
            // Replay cannot go back: before the backup's end, PostgreSQL would stop at the
            // first transaction after it, silently later than asked.
            let end: i64 = meta(META_END).await?.parse().map_err(|_| {
                DataError::Invalid(format!("snapshot {name} has no valid end time"))
            })?;
            if at < end {
                return Err(DataError::Invalid(format!(
                    "{} is before the end of snapshot {name}'s base backup ({}): restore from an earlier snapshot",
                    format_utc(at),
                    format_utc(end)
                )));
            }
            // The staged WAL holds every transaction committed before its last segment was
            // archived (known to the second): a moment after that is out of reach.
            let reach = plan
                .files
                .last()
                .and_then(|last| stored.iter().find(|(segment, _)| segment == last))
                .map_or(0, |(_, archived_at)| archived_at.saturating_mul(1_000_000));
            if at > reach {
                let reach = format_utc(reach);
                return Err(match &plan.missing {
                    Some(missing) => DataError::Database(format!(
                        "WAL segment {missing} of stream {stream} is missing from the backup repository, so the WAL archive of {stream} reaches only up to {reach}; restore to an earlier moment"
                    )),
                    None => DataError::Invalid(format!(
                        "the WAL archive of {stream} reaches only up to {reach}; restore to an earlier moment"
                    )),
                });
            }
        }

        let partial = spec.partial_dir();
        if let Some(parent) = partial.parent()
            && !parent.exists()
        {
            sys.make_dir(parent, 0o711)?;
        }
        self.make_socket_dir_and_log()?;
        progress.line(&format!("restoring the files of snapshot {name}"));
        repo.restore_tree(name, &format!("{DATA_PREFIX}/"), &partial, progress, cancel)
            .await?;
        for dir in dirs.lines().chain(["pg_wal/archive_status", STAGING]) {
            if dir
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(DataError::Database(format!(
                    "snapshot {name} lists a directory {dir:?} outside the data directory"
                )));
            }
            let dir = partial.join(dir);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(DataError::io("cannot create directory", &dir))?;
        }
        progress.line(&format!(
            "staging {} WAL files of {stream} from {start}",
            plan.files.len()
        ));
        for file in &plan.files {
            check_cancel(cancel)?;
            repo.restore_wal(stream, file, &partial.join(STAGING).join(file))
                .await?;
        }
        std::fs::write(partial.join("backup_label"), &label)
            .map_err(DataError::io("cannot write", partial.join("backup_label")))?;
        std::fs::write(partial.join("recovery.signal"), "").map_err(DataError::io(
            "cannot write",
            partial.join("recovery.signal"),
        ))?;
        give_tree(sys, &partial)?;
        std::fs::rename(&partial, &spec.dir).map_err(DataError::io("cannot rename", &partial))?;
        check_cancel(cancel)?;

        // Replay, with only Turnout's login and the source's superuser password (the restored
        // catalog's) until the cluster is made safe.
        let old_super = &source.superuser_password;
        progress.line(&match target {
            RecoveryTarget::EndOfBackup => {
                format!("replaying the WAL of {stream} to the end of the base backup")
            }
            RecoveryTarget::Time(at) => {
                format!("replaying the WAL of {stream} up to {}", format_utc(at))
            }
        });
        let mut replay = self
            .replay(Some(target), old_super, network, cancel)
            .await?;
        if replay == Replay::EndedBeforeTarget {
            // No transaction after the target was found: every one in the staged WAL was
            // committed at or before it, and the WAL was archived past it, so its end is the
            // target.
            progress.line("no transaction after the target: replaying to the end of the WAL");
            self.stop().await?;
            replay = self.replay(None, old_super, network, cancel).await?;
        }
        if replay != Replay::Promoted {
            return Err(DataError::Database(format!(
                "the restore's WAL replay ended before the end of the WAL of {stream}:\n{}",
                tail(&self.log_since(0))
            )));
        }
        self.stop().await?;
        let staging = spec.dir.join(STAGING);
        std::fs::remove_dir_all(&staging).map_err(DataError::io("cannot remove", &staging))?;
        check_cancel(cancel)?;
        self.make_safe(&source.database, old_super, network, progress, cancel)
            .await?;
        if repo.meta(name, META_STORAGE).await?.is_some() {
            progress.line(&format!("restoring the storage of snapshot {name}"));
            repo.restore_tree(
                name,
                &format!("{STORAGE_PREFIX}/"),
                storage,
                progress,
                cancel,
            )
            .await?;
        }
        Ok(())
    }

    /// Starts the restored cluster in archive recovery towards `target` (`None`: the end of
    /// the staged WAL) and waits until it is promoted, or has stopped short of the target.
    async fn replay(
        &self,
        target: Option<RecoveryTarget>,
        old_super: &str,
        network: &Network,
        cancel: &CancellationToken,
    ) -> Result<Replay, DataError> {
        self.write_config(Logins::TurnoutOnly, false, &recovery_settings(target))?;
        let log_len = || std::fs::metadata(&self.spec.log).map_or(0, |m| m.len());
        let log_start = log_len();
        // What the server logged since this start tells how it ended.
        let ended = || {
            let log = self.log_since(log_start);
            if log.contains(ENDED_BEFORE_TARGET) {
                Ok(Replay::EndedBeforeTarget)
            } else if log.contains(TARGET_BEFORE_CONSISTENT) {
                Err(DataError::Invalid(
                    "the moment to restore to lies before the end of the snapshot's base backup: restore from an earlier snapshot".into(),
                ))
            } else {
                Err(DataError::Database(format!(
                    "PostgreSQL stopped while replaying the restore's WAL:\n{}",
                    tail(&log)
                )))
            }
        };
        match self.start_server(network, cancel).await {
            Ok(()) => {}
            Err(DataError::Cancelled) => return Err(DataError::Cancelled),
            Err(_) if !self.is_running().await => return ended(),
            // Still replaying towards a consistent state after pg_ctl's wait: watched below.
            Err(_) => {}
        }
        // Progress: the replayed position (once the server lets Turnout in) or the log's
        // growth (a line per segment restored).
        let (mut replayed, mut logged) = (String::new(), log_len());
        let mut progressed = tokio::time::Instant::now();
        loop {
            check_cancel(cancel)?;
            match self.connect(SUPERUSER, old_super, "postgres").await {
                Ok(client) => {
                    let row = client
                        .query_one(
                            "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn()::text, '')",
                            &[],
                        )
                        .await
                        .map_err(db_error("reading the restore's recovery"))?;
                    if !row.get::<_, bool>(0) {
                        return Ok(Replay::Promoted);
                    }
                    let now: String = row.get(1);
                    if now != replayed {
                        replayed = now;
                        progressed = tokio::time::Instant::now();
                    }
                }
                Err(_) if !self.is_running().await => return ended(),
                Err(_) => {}
            }
            if log_len() != logged {
                logged = log_len();
                progressed = tokio::time::Instant::now();
            }
            if progressed.elapsed() > REPLAY_STALL {
                return Err(DataError::Database(format!(
                    "the restore's WAL replay made no progress for {} s:\n{}",
                    REPLAY_STALL.as_secs(),
                    tail(&self.log_since(log_start))
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the server logged after byte `from` of its log.
    fn log_since(&self, from: u64) -> String {
        let log = std::fs::read(&self.spec.log).unwrap_or_default();
        let from = usize::try_from(from).unwrap_or(0).min(log.len());
        String::from_utf8_lossy(&log[from..]).into_owned()
    }
}

/// The last lines of a log, for an error.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// How a recovery start ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replay {
    Promoted,
    /// PostgreSQL replayed all the WAL it had without reaching the target (and stopped).
    EndedBeforeTarget,
}

/// The settings of a restore's recovery start.
fn recovery_settings(target: Option<RecoveryTarget>) -> String {
    let mut settings = format!("restore_command = 'cp {STAGING}/%f %p'\n");
    match target {
        None => {}
        Some(RecoveryTarget::EndOfBackup) => settings.push_str("recovery_target = 'immediate'\n"),
        Some(RecoveryTarget::Time(at)) => settings.push_str(&format!(
            "recovery_target_time = {}\nrecovery_target_inclusive = on\n",
            quote_literal(&format_utc(at))
        )),
    }
    if target.is_some() {
        settings.push_str("recovery_target_action = 'promote'\n");
    }
    settings
}

/// The WAL files a restore stages: the stream's timeline history files and its segments of the
/// backup's timeline from the backup's first segment on, while they follow one another (to
/// the last segment of the backup for [`RecoveryTarget::EndOfBackup`]). A segment missing up to
/// the backup's last one is the error; one missing later ends the staged WAL there.
#[derive(Debug, PartialEq, Eq)]
struct WalPlan {
    files: Vec<String>,
    /// The first segment missing after the staged ones, when the stream goes on after a gap.
    missing: Option<String>,
}

fn wal_plan(
    stored: &[String],
    start: &str,
    stop: &str,
    segment_size: u64,
    target: RecoveryTarget,
) -> Result<WalPlan, String> {
    let per_xlogid = 0x1_0000_0000 / segment_size;
    let number = |segment: &str| -> Option<(u32, u64)> {
        if !is_segment(segment) {
            return None;
        }
        let hex = |range: std::ops::Range<usize>| u64::from_str_radix(&segment[range], 16).ok();
        let timeline = u32::try_from(hex(0..8)?).ok()?;
        Some((timeline, hex(8..16)? * per_xlogid + hex(16..24)?))
    };
    let name = |timeline: u32, n: u64| {
        format!("{timeline:08X}{:08X}{:08X}", n / per_xlogid, n % per_xlogid)
    };
    let (Some((timeline, first)), Some((_, last_needed))) = (number(start), number(stop)) else {
        return Err(start.to_owned());
    };
    let mut files: Vec<String> = stored
        .iter()
        .filter(|f| f.ends_with(".history"))
        .cloned()
        .collect();
    let mut segments: Vec<u64> = stored
        .iter()
        .filter_map(|f| number(f))
        .filter(|&(tl, n)| tl == timeline && n >= first)
        .map(|(_, n)| n)
        .collect();
    segments.sort_unstable();
    segments.dedup();
    let mut expected = first;
    let mut missing = None;
    for n in segments {
        if target == RecoveryTarget::EndOfBackup && expected > last_needed {
            break;
        }
        if n != expected {
            missing = Some(name(timeline, expected));
            break;
        }
        files.push(name(timeline, n));
        expected += 1;
    }
    if expected <= last_needed {
        return Err(name(timeline, expected));
    }
    Ok(WalPlan { files, missing })
}

/// Gives everything under `dir` (not following links) to the clusters' user, with `dir` 0700.
fn give_tree(sys: &PgSystem, dir: &Path) -> Result<(), DataError> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(DataError::io("cannot set the mode of", dir))?;
    let Some(id) = sys.run_as else {
        return Ok(());
    };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        std::os::unix::fs::lchown(&path, Some(id.uid), Some(id.gid))
            .map_err(DataError::io("cannot give to the postgres user", &path))?;
        let kind = std::fs::symlink_metadata(&path)
            .map_err(DataError::io("cannot read", &path))?
            .file_type();
        if kind.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(DataError::io("cannot read", &path))? {
                pending.push(entry.map_err(DataError::io("cannot read", &path))?.path());
            }
        }
    }
    Ok(())
}

/// Unix microseconds as PostgreSQL reads a timestamp: `2026-11-30 18:59:55.123456 UTC` (without
/// the fraction when it is zero).
fn format_utc(micros: i64) -> String {
    let (secs, micros) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    };
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}{fraction} UTC",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_postgresql_reads_them() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            format_utc(1_796_065_195_123_456),
            "2026-11-30 18:59:55.123456 UTC"
        );
        assert_eq!(
            format_utc(951_782_400_000_001),
            "2000-02-29 00:00:00.000001 UTC"
        );
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59.999999 UTC");
    }

    #[test]
    fn recovery_settings_name_only_the_staging_directory() {
        assert_eq!(
            recovery_settings(Some(RecoveryTarget::Time(0))),
            "restore_command = 'cp turnout_restore_wal/%f %p'\n\
             recovery_target_time = '1970-01-01 00:00:00 UTC'\n\
             recovery_target_inclusive = on\n\
             recovery_target_action = 'promote'\n"
        );
        assert!(
            recovery_settings(Some(RecoveryTarget::EndOfBackup))
                .contains("recovery_target = 'immediate'")
        );
        assert_eq!(
            recovery_settings(None),
            "restore_command = 'cp turnout_restore_wal/%f %p'\n"
        );
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_wal_plan_stages_what_follows_the_backup_and_names_a_missing_segment() {
        const MB16: u64 = 16 << 20;
        let stored = names(&[
            "000000010000000000000001",
            "0000000100000000000000FE",
            "0000000100000000000000FF",
            "000000010000000100000000",
            "000000010000000100000001",
            "000000010000000100000003",
            "000000020000000100000004",
            "00000002.history",
        ]);
        let time = RecoveryTarget::Time(0);
        // Across a log boundary (0xFF segments of 16 MiB), up to the gap.
        let plan = wal_plan(
            &stored,
            "0000000100000000000000FE",
            "0000000100000000000000FF",
            MB16,
            time,
        )
        .unwrap();
        assert_eq!(
            plan,
            WalPlan {
                files: names(&[
                    "00000002.history",
                    "0000000100000000000000FE",
                    "0000000100000000000000FF",
                    "000000010000000100000000",
                    "000000010000000100000001",
                ]),
                missing: Some("000000010000000100000002".into()),
            }
        );
        // To the end of the backup only.
        let plan = wal_plan(
            &stored,
            "0000000100000000000000FE",
            "0000000100000000000000FF",
            MB16,
            RecoveryTarget::EndOfBackup,
        )
        .unwrap();
        assert_eq!(plan.files.len(), 3);
        assert_eq!(plan.missing, None);
        // A segment the backup itself needs is missing.
        assert_eq!(
            wal_plan(
                &stored,
                "0000000100000000000000FE",
                "000000010000000100000002",
                MB16,
                time
            ),
            Err("000000010000000100000002".into())
        );
        assert_eq!(
            wal_plan(
                &stored,
                "0000000100000000000000FD",
                "0000000100000000000000FE",
                MB16,
                time
            ),
            Err("0000000100000000000000FD".into())
        );
        // 1 GiB segments: 4 per log.
        let big = names(&["000000010000000000000003", "000000010000000100000000"]);
        let plan = wal_plan(
            &big,
            "000000010000000000000003",
            "000000010000000000000003",
            1 << 30,
            time,
        )
        .unwrap();
        assert_eq!(plan.files, big);
    }
}
