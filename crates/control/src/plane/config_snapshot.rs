//! The configuration each launch ran with: the values set through Turnout, resolved for the
//! environment (the most specific level per key), kept as a snapshot sealed as a whole, once
//! per distinct content per environment, and referenced by the release at go-live.
//!
//! A deploy, promotion, restart, start or wake runs with what is set now; a rollback and the
//! daemon's start-up restore run with the snapshot the release recorded, so code and
//! configuration come back together. `env show` compares the two (`config_state`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use turnout_model::{ConfigLevel, ConfigState};

use super::ControlPlane;
use crate::error::ControlError;
use crate::store::config::{self as cq, SnapshotRow};
use crate::store::{EnvRow, Tx};

/// One key of a snapshot.
#[derive(Clone, Serialize, Deserialize)]
struct SnapshotValue {
    level: ConfigLevel,
    secret: bool,
    value: String,
}

/// What a launch ran with, recorded at go-live. Not `Debug`: it holds values in plain text
/// (in memory only; sealed when written).
#[derive(Clone)]
pub(crate) enum RanWith {
    /// A snapshot recorded before (a rollback, a restore at start-up).
    Recorded(i64),
    /// What is set now: the app's version, the content's digest and its JSON.
    Now {
        version: i64,
        digest: String,
        plain: String,
    },
}

/// The snapshot to record for a release at go-live, sealed under the current key.
pub(crate) struct SealedSnapshot {
    ran_with: RanWith,
    sealed: Vec<u8>,
}

impl ControlPlane {
    /// The variables the values set through Turnout give an instance of `env`, and what to
    /// record: from the snapshot `recorded` when given (a rollback), else what is set now.
    pub(crate) async fn instance_config(
        &self,
        env: &EnvRow,
        recorded: Option<i64>,
    ) -> Result<(Vec<(String, String)>, RanWith), ControlError> {
        if let Some(id) = recorded {
            let row = self.store.call(move |c| cq::get_snapshot(c, id)).await?;
            let plain = self.vault().open_text(
                &SnapshotRow::seal_name(row.env_id, &row.digest),
                &row.content,
            )?;
            let values: BTreeMap<String, SnapshotValue> = serde_json::from_str(&plain)
                .map_err(|e| ControlError::internal(format!("config snapshot {id}: {e}")))?;
            let vars = values.into_iter().map(|(k, v)| (k, v.value)).collect();
            return Ok((vars, RanWith::Recorded(id)));
        }
        let (version, values) = self.set_now(env).await?;
        let vars = values
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        let plain = serde_json::to_string(&values)
            .map_err(|e| ControlError::internal(format!("config snapshot: {e}")))?;
        let digest = self.vault().credentials().fingerprint(plain.as_bytes());
        Ok((
            vars,
            RanWith::Now {
                version,
                digest,
                plain,
            },
        ))
    }

    /// The app's version and the winning value per key set through Turnout for `env` now.
    async fn set_now(
        &self,
        env: &EnvRow,
    ) -> Result<(i64, BTreeMap<String, SnapshotValue>), ControlError> {
        let app_id = env.app_id;
        let version = self.store.call(move |c| cq::version(c, app_id)).await?;
        let mut out: BTreeMap<String, SnapshotValue> = BTreeMap::new();
        for (key, v) in self.set_values(env).await? {
            let more_specific = out.get(&key).is_none_or(|old| old.level < v.level);
            if more_specific {
                out.insert(
                    key,
                    SnapshotValue {
                        level: v.level,
                        secret: v.secret,
                        value: v.value,
                    },
                );
            }
        }
        Ok((version, out))
    }

    /// The snapshot `release_id` last went live with, if it recorded one.
    pub(crate) async fn recorded_snapshot(
        &self,
        release_id: i64,
    ) -> Result<Option<i64>, ControlError> {
        self.store
            .call(move |c| cq::release_snapshot(c, release_id))
            .await
    }

    /// Seal what a launch ran with, for `record_snapshot` in the go-live transaction. The
    /// caller holds the sealing lock until that transaction commits.
    pub(crate) fn seal_snapshot(
        &self,
        env_id: i64,
        ran_with: &RanWith,
    ) -> Result<SealedSnapshot, ControlError> {
        let sealed = match ran_with {
            RanWith::Recorded(_) => Vec::new(),
            RanWith::Now { digest, plain, .. } => self
                .vault()
                .seal(&SnapshotRow::seal_name(env_id, digest), plain.as_bytes())?,
        };
        Ok(SealedSnapshot {
            ran_with: ran_with.clone(),
            sealed,
        })
    }

    /// `env show`: the version the live release runs with against the one set now.
    pub(crate) async fn config_state(&self, env: &EnvRow) -> Result<ConfigState, ControlError> {
        let (version, now) = self.set_now(env).await?;
        let plain = serde_json::to_string(&now)
            .map_err(|e| ControlError::internal(format!("config snapshot: {e}")))?;
        let digest = self.vault().credentials().fingerprint(plain.as_bytes());
        let running = match env.current_release_id {
            Some(release) => {
                self.store
                    .call(move |c| {
                        cq::release_snapshot(c, release)?
                            .map(|id| cq::get_snapshot(c, id))
                            .transpose()
                    })
                    .await?
            }
            None => None,
        };
        Ok(ConfigState {
            running_version: running.as_ref().map(|s| s.version),
            set_version: version,
            stale: running.is_some_and(|s| s.digest != digest),
        })
    }
}

/// In the go-live transaction: record the snapshot (or find it) and point the release at it.
pub(crate) fn record_snapshot(
    c: &Tx<'_>,
    env_id: i64,
    release_id: i64,
    s: &SealedSnapshot,
) -> Result<(), ControlError> {
    let id = match &s.ran_with {
        RanWith::Recorded(id) => *id,
        RanWith::Now {
            version, digest, ..
        } => cq::insert_snapshot(c, env_id, *version, digest, &s.sealed)?,
    };
    cq::set_release_snapshot(c, release_id, id)
}
