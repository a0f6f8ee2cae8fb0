//! Queries for outbound requests: each app's policy per tier (`egress_policies`) and the
//! egress log (`egress_log`), kept to the newest `LOG_KEPT` entries per environment (at most
//! `TRIM_EVERY` more between trims).
//! Policy changes run inside `Store::mutate` (with their audit entry); log entries arrive in
//! batches through `Store::append_log`.
use rusqlite::{Connection, params};
use turnout_model::{
    AppName, EgressDecision, EgressMode, EgressPolicy, EnvName, HostPattern, Tier,
};

use super::{Tx, parse_name, parse_text, parse_tier};
use crate::error::ControlError;

/// How many log entries each environment keeps (the newest).
pub const LOG_KEPT: i64 = 10_000;
/// An environment's log is trimmed back to `LOG_KEPT` once it gained this many entries.
pub const TRIM_EVERY: u32 = 1_000;

/// One row of `egress_policies`.
#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub app_id: i64,
    pub tier: Tier,
    pub policy: EgressPolicy,
    pub set_by: String,
    pub set_at: i64,
}

fn policy_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyRow> {
    let hosts: String = r.get(3)?;
    let hosts = hosts
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<HostPattern>().map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(PolicyRow {
        app_id: r.get(0)?,
        tier: parse_tier(r.get(1)?)?,
        policy: EgressPolicy {
            mode: parse_text::<EgressMode>(2, r.get(2)?)?,
            hosts,
        },
        set_by: r.get(4)?,
        set_at: r.get(5)?,
    })
}

const POLICY_COLS: &str = "app_id, tier, mode, hosts, set_by, set_at";

/// Every app's policies (the egress proxy's cache loads them at start-up).
pub fn all_policies(c: &Connection) -> Result<Vec<PolicyRow>, ControlError> {
    let mut stmt = c.prepare(&format!("SELECT {POLICY_COLS} FROM egress_policies"))?;
    let rows = stmt.query_map([], policy_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One app's policies (the tiers it set).
pub fn app_policies(c: &Connection, app_id: i64) -> Result<Vec<PolicyRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {POLICY_COLS} FROM egress_policies WHERE app_id = ?1"
    ))?;
    let rows = stmt.query_map([app_id], policy_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Set an app's policy for `tier`; returns the one it replaces, if any.
pub fn set_policy(
    c: &Tx<'_>,
    app_id: i64,
    tier: Tier,
    policy: &EgressPolicy,
    by: &str,
    at: i64,
) -> Result<Option<PolicyRow>, ControlError> {
    let before = app_policies(c, app_id)?
        .into_iter()
        .find(|p| p.tier == tier);
    let hosts = policy
        .hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    c.execute(
        "INSERT INTO egress_policies (app_id, tier, mode, hosts, set_by, set_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (app_id, tier) DO UPDATE SET mode = ?3, hosts = ?4, set_by = ?5, set_at = ?6",
        params![app_id, tier.as_str(), policy.mode.as_str(), hosts, by, at],
    )?;
    Ok(before)
}

/// Forget an app's policy for `tier` (back to the default); returns the one it was.
pub fn reset_policy(
    c: &Tx<'_>,
    app_id: i64,
    tier: Tier,
) -> Result<Option<PolicyRow>, ControlError> {
    let before = app_policies(c, app_id)?
        .into_iter()
        .find(|p| p.tier == tier);
    c.execute(
        "DELETE FROM egress_policies WHERE app_id = ?1 AND tier = ?2",
        params![app_id, tier.as_str()],
    )?;
    Ok(before)
}

/// An environment as the egress proxy knows it.
#[derive(Debug, Clone)]
pub struct ProxyEnv {
    pub id: i64,
    pub app_id: i64,
    pub app: AppName,
    pub env: EnvName,
    pub tier: Tier,
}

/// Every environment the proxy may see.
pub fn all_envs(c: &Connection) -> Result<Vec<ProxyEnv>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT e.id, e.app_id, a.name, e.name, e.tier FROM environments e \
         JOIN apps a ON a.id = e.app_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ProxyEnv {
            id: r.get(0)?,
            app_id: r.get(1)?,
            app: parse_name(r.get(2)?)?,
            env: parse_name(r.get(3)?)?,
            tier: parse_tier(r.get(4)?)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// One outbound request, as the proxy reports it.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub env_id: i64,
    pub at_ms: i64,
    pub method: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub decision: EgressDecision,
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// Append a batch; entries of environments deleted meanwhile are dropped. Then keep the
/// newest `LOG_KEPT` of each environment in `trim` (the writer names those that gained
/// `TRIM_EVERY` since it last trimmed them: finding the cut walks `LOG_KEPT` index entries,
/// too dear for every small batch). Statements are cached on the connection.
pub fn append(c: &Tx<'_>, records: &[LogRecord], trim: &[i64]) -> Result<(), ControlError> {
    let mut insert = c.prepare_cached(
        "INSERT INTO egress_log (env_id, at_ms, method, host, port, path, decision, status, \
         bytes_up, bytes_down, duration_ms, error) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 \
         WHERE EXISTS (SELECT 1 FROM environments WHERE id = ?1)",
    )?;
    for r in records {
        insert.execute(params![
            r.env_id,
            r.at_ms,
            r.method,
            r.host,
            r.port,
            r.path,
            r.decision.as_str(),
            r.status,
            i64::try_from(r.bytes_up).unwrap_or(i64::MAX),
            i64::try_from(r.bytes_down).unwrap_or(i64::MAX),
            i64::try_from(r.duration_ms).unwrap_or(i64::MAX),
            r.error,
        ])?;
    }
    let mut cut = c.prepare_cached(
        "DELETE FROM egress_log WHERE env_id = ?1 AND id <= \
         (SELECT id FROM egress_log WHERE env_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?;
    for env_id in trim {
        cut.execute(params![env_id, LOG_KEPT])?;
    }
    Ok(())
}

/// The newest `limit` entries of `env_id` (with `denied`, only those refused or marked).
pub fn list(
    c: &Connection,
    env_id: i64,
    limit: u32,
    denied: bool,
) -> Result<Vec<(i64, LogRecord)>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT id, env_id, at_ms, method, host, port, path, decision, status, bytes_up, \
         bytes_down, duration_ms, error FROM egress_log \
         WHERE env_id = ?1 AND (?2 = 0 OR decision != 'allowed') ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![env_id, denied, limit], |r| {
        Ok((
            r.get(0)?,
            LogRecord {
                env_id: r.get(1)?,
                at_ms: r.get(2)?,
                method: r.get(3)?,
                host: r.get(4)?,
                port: r.get(5)?,
                path: r.get(6)?,
                decision: parse_text(7, r.get(7)?)?,
                status: r.get(8)?,
                bytes_up: r.get::<_, i64>(9)?.max(0) as u64,
                bytes_down: r.get::<_, i64>(10)?.max(0) as u64,
                duration_ms: r.get::<_, i64>(11)?.max(0) as u64,
                error: r.get(12)?,
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use turnout_model::{AppName, EnvName};

    use super::super::{Store, Tx, lock, q};
    use super::*;

    #[test]
    fn the_log_keeps_each_environments_newest_and_drops_a_deleted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let conn = lock(&store.writer);
        let t = conn.unchecked_transaction().unwrap();
        let tx = Tx(&t);
        let app = AppName::new("shop").unwrap();
        q::insert_app(&tx, &app, "/repo", None).unwrap();
        let env = |name: &str| {
            let name = EnvName::new(name).unwrap();
            let (tier, on) = (Tier::Staging, turnout_model::DeployOn::Manual);
            q::insert_env(&tx, &app, &name, "main", tier, on)
                .unwrap()
                .id
        };
        let (a, b) = (env("a"), env("b"));
        let record = |env_id, at_ms| LogRecord {
            env_id,
            at_ms,
            method: "GET".into(),
            host: "api.example.com".into(),
            port: 443,
            path: "/".into(),
            decision: EgressDecision::Allowed,
            status: 200,
            bytes_up: u64::MAX,
            bytes_down: 1,
            duration_ms: 2,
            error: None,
        };
        let gone = b + 1000;
        let first: Vec<_> = (0..LOG_KEPT).map(|i| record(a, i)).collect();
        append(&tx, &first, &[]).unwrap();
        append(&tx, &[record(b, 0), record(gone, 0)], &[]).unwrap();
        // Untrimmed, the log may run over until the writer names the environment.
        let more: Vec<_> = (LOG_KEPT..LOG_KEPT + 1500).map(|i| record(a, i)).collect();
        append(&tx, &more[..1000], &[]).unwrap();
        assert_eq!(list(&tx, a, 20_000, false).unwrap().len(), 11_000);
        append(&tx, &more[1000..], &[a]).unwrap();
        let kept = list(&tx, a, 20_000, false).unwrap();
        assert_eq!(kept.len(), LOG_KEPT as usize);
        assert_eq!(kept[0].1.at_ms, LOG_KEPT + 1499, "the newest first");
        assert_eq!(kept.last().unwrap().1.at_ms, 1500, "the oldest kept");
        assert_eq!(kept[0].1.bytes_up, i64::MAX as u64, "bounded, not wrapped");
        assert_eq!(
            list(&tx, b, 10, false).unwrap().len(),
            1,
            "b is not a's to trim"
        );
        assert!(list(&tx, gone, 10, false).unwrap().is_empty());
    }
}
