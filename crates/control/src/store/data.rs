//! Queries for environments' data: the data service of each environment (engine, generation,
//! PostgreSQL cluster, origin), each app's masking key and the attachments between environments.
//! Mutations run inside `Store::mutate`, so each lands with its audit entry.
use rusqlite::{Connection, OptionalExtension, params};
use turnout_data::Engine;
use turnout_data::postgres::ClusterSpec;
use turnout_model::{DataAccess, EnvName};

use super::{Tx, now, parse_name, parse_text};
use crate::error::ControlError;

/// Where an environment's current data came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `empty`, `seed`, `clone`, `sync`, `restore`, `reset` or `undo`.
    pub kind: &'static str,
    /// `APP/ENV` copied from.
    pub from: Option<String>,
    pub at: i64,
    pub job: Option<i64>,
}

/// One environment's data service.
#[derive(Debug, Clone)]
pub struct DataRow {
    pub env_id: i64,
    pub engine: Engine,
    pub generation: i64,
    /// The cluster of the generation serving now (PostgreSQL only).
    pub cluster: Option<ClusterSpec>,
    pub origin: Origin,
}

const KINDS: [&str; 7] = ["empty", "seed", "clone", "sync", "restore", "reset", "undo"];

fn data_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DataRow> {
    let cluster: Option<String> = r.get(3)?;
    let cluster = cluster
        .map(|json| {
            serde_json::from_str(&json).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    3,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()?;
    let kind: String = r.get(4)?;
    Ok(DataRow {
        env_id: r.get(0)?,
        engine: parse_text(1, r.get(1)?)?,
        generation: r.get(2)?,
        cluster,
        origin: Origin {
            kind: KINDS.into_iter().find(|k| *k == kind).unwrap_or("empty"),
            from: r.get(5)?,
            at: r.get(6)?,
            job: r.get(7)?,
        },
    })
}

/// The environment's data service, if it has been provisioned.
pub fn get(c: &Connection, env_id: i64) -> Result<Option<DataRow>, ControlError> {
    Ok(c.query_row(
        "SELECT env_id, engine, generation, cluster, origin_kind, origin_from, origin_at, origin_job \
         FROM env_data WHERE env_id = ?1",
        [env_id],
        data_row,
    )
    .optional()?)
}

/// Every environment's data service (start-up starts the clusters).
pub fn all(c: &Connection) -> Result<Vec<DataRow>, ControlError> {
    let mut stmt = c.prepare(
        "SELECT env_id, engine, generation, cluster, origin_kind, origin_from, origin_at, origin_job \
         FROM env_data ORDER BY env_id",
    )?;
    let rows = stmt.query_map([], data_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

fn cluster_json(cluster: Option<&ClusterSpec>) -> Result<Option<String>, ControlError> {
    cluster
        .map(|c| {
            serde_json::to_string(c)
                .map_err(|e| ControlError::internal(format!("serialise cluster: {e}")))
        })
        .transpose()
}

/// Record the generation that serves the environment now (a first one, or N+1 replacing N).
pub fn set(c: &Tx<'_>, row: &DataRow) -> Result<(), ControlError> {
    c.execute(
        "INSERT INTO env_data (env_id, engine, generation, cluster, origin_kind, origin_from, origin_at, origin_job) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (env_id) DO UPDATE SET engine = excluded.engine, generation = excluded.generation, \
         cluster = excluded.cluster, origin_kind = excluded.origin_kind, origin_from = excluded.origin_from, \
         origin_at = excluded.origin_at, origin_job = excluded.origin_job",
        params![
            row.env_id,
            row.engine.as_str(),
            row.generation,
            cluster_json(row.cluster.as_ref())?,
            row.origin.kind,
            row.origin.from,
            row.origin.at,
            row.origin.job,
        ],
    )?;
    Ok(())
}

/// The app's masking key, if it has one.
pub fn get_mask_key(c: &Connection, app_id: i64) -> Result<Option<String>, ControlError> {
    Ok(c.query_row(
        "SELECT key FROM app_mask_keys WHERE app_id = ?1",
        [app_id],
        |r| r.get(0),
    )
    .optional()?)
}

/// The app's masking key, made (32 random bytes, hex) on first use.
pub fn mask_key(c: &Tx<'_>, app_id: i64, fresh: &str) -> Result<String, ControlError> {
    c.execute(
        "INSERT INTO app_mask_keys (app_id, key) VALUES (?1, ?2) ON CONFLICT (app_id) DO NOTHING",
        params![app_id, fresh],
    )?;
    Ok(c.query_row(
        "SELECT key FROM app_mask_keys WHERE app_id = ?1",
        [app_id],
        |r| r.get(0),
    )?)
}

/// An environment's access to another's database.
#[derive(Debug, Clone)]
pub struct AttachmentRow {
    /// The environment given the access.
    pub env_id: i64,
    pub env: EnvName,
    /// The environment whose database it is.
    pub to_env_id: i64,
    pub to: EnvName,
    pub mode: DataAccess,
    pub var: String,
    pub role: String,
    pub password: String,
}

const ATT_COLS: &str = "t.env_id, e.name, t.to_env_id, o.name, t.mode, t.var, t.role, t.password \
     FROM data_attachments t JOIN environments e ON e.id = t.env_id \
     JOIN environments o ON o.id = t.to_env_id";

fn attachment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AttachmentRow> {
    Ok(AttachmentRow {
        env_id: r.get(0)?,
        env: parse_name(r.get(1)?)?,
        to_env_id: r.get(2)?,
        to: parse_name(r.get(3)?)?,
        mode: parse_text(4, r.get(4)?)?,
        var: r.get(5)?,
        role: r.get(6)?,
        password: r.get(7)?,
    })
}

/// The attachments `env_id` holds (its processes get their variables).
pub fn attachments_of(c: &Connection, env_id: i64) -> Result<Vec<AttachmentRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {ATT_COLS} WHERE t.env_id = ?1 ORDER BY o.name"
    ))?;
    let rows = stmt
        .query_map([env_id], attachment_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The attachments onto `env_id`'s database (re-made in each new generation of it).
pub fn attachments_to(c: &Connection, env_id: i64) -> Result<Vec<AttachmentRow>, ControlError> {
    let mut stmt = c.prepare(&format!(
        "SELECT {ATT_COLS} WHERE t.to_env_id = ?1 ORDER BY e.name"
    ))?;
    let rows = stmt
        .query_map([env_id], attachment_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Add or replace `env_id`'s attachment onto `to_env_id`; refuses a variable another of its
/// attachments uses.
pub fn attach(c: &Tx<'_>, a: &AttachmentRow, by: &str) -> Result<(), ControlError> {
    let taken: Option<String> = c
        .query_row(
            "SELECT o.name FROM data_attachments t JOIN environments o ON o.id = t.to_env_id \
             WHERE t.env_id = ?1 AND t.var = ?2 AND t.to_env_id <> ?3",
            params![a.env_id, a.var, a.to_env_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(other) = taken {
        return Err(ControlError::Conflict(format!(
            "{} already holds {}'s URL in {}; pick another name with --as",
            a.env, other, a.var
        )));
    }
    c.execute(
        "INSERT INTO data_attachments (env_id, to_env_id, mode, var, role, password, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
         ON CONFLICT (env_id, to_env_id) DO UPDATE SET mode = excluded.mode, var = excluded.var, \
         role = excluded.role, password = excluded.password, created_by = excluded.created_by, \
         created_at = excluded.created_at",
        params![
            a.env_id,
            a.to_env_id,
            a.mode.as_str(),
            a.var,
            a.role,
            a.password,
            by,
            now()
        ],
    )?;
    Ok(())
}

/// Remove `env_id`'s attachment onto `to_env_id`; whether there was one.
pub fn detach(c: &Tx<'_>, env_id: i64, to_env_id: i64) -> Result<bool, ControlError> {
    Ok(c.execute(
        "DELETE FROM data_attachments WHERE env_id = ?1 AND to_env_id = ?2",
        params![env_id, to_env_id],
    )? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditEntry, Store, q};
    use turnout_model::{AuditAction, DeployOn, Tier};

    #[tokio::test]
    async fn data_rows_keys_and_attachments_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let entry = || AuditEntry::new("t", AuditAction::AppCreate);
        let (a, b) = store
            .mutate(entry(), |c, _| {
                let app: turnout_model::AppName = "shop".parse().unwrap();
                q::insert_app(c, &app, "/r", None)?;
                let a = q::insert_env(
                    c,
                    &app,
                    &"qa".parse().unwrap(),
                    "main",
                    Tier::Qa,
                    DeployOn::Manual,
                )?;
                let b = q::insert_env(
                    c,
                    &app,
                    &"prod".parse().unwrap(),
                    "main",
                    Tier::Production,
                    DeployOn::Manual,
                )?;
                Ok((a, b))
            })
            .await
            .unwrap();
        let row = DataRow {
            env_id: a.id,
            engine: Engine::Sqlite,
            generation: 2,
            cluster: None,
            origin: Origin {
                kind: "clone",
                from: Some("shop/prod".into()),
                at: 5,
                job: Some(9),
            },
        };
        let r2 = row.clone();
        let (k1, k2) = store
            .mutate(entry(), move |c, _| {
                set(c, &r2)?;
                Ok((
                    mask_key(c, a.app_id, "first")?,
                    mask_key(c, a.app_id, "second")?,
                ))
            })
            .await
            .unwrap();
        assert_eq!((k1.as_str(), k2.as_str()), ("first", "first"));
        let got = store.call(move |c| get(c, a.id)).await.unwrap().unwrap();
        assert_eq!(
            (got.engine, got.generation, got.origin),
            (row.engine, row.generation, row.origin)
        );
        let att = AttachmentRow {
            env_id: a.id,
            env: a.name.clone(),
            to_env_id: b.id,
            to: b.name.clone(),
            mode: DataAccess::Read,
            var: "PROD_DATABASE_URL".into(),
            role: "att_qa".into(),
            password: "pw".into(),
        };
        let at2 = att.clone();
        store
            .mutate(entry(), move |c, _| attach(c, &at2, "t"))
            .await
            .unwrap();
        let of = store.call(move |c| attachments_of(c, a.id)).await.unwrap();
        let to = store.call(move |c| attachments_to(c, b.id)).await.unwrap();
        assert_eq!((of.len(), to.len()), (1, 1));
        assert_eq!((of[0].to.as_str(), to[0].env.as_str()), ("prod", "qa"));
        assert!(
            store
                .mutate(entry(), move |c, _| detach(c, a.id, b.id))
                .await
                .unwrap()
        );
        // Deleting an environment takes its data and attachments with it.
        store
            .mutate(entry(), move |c, _| q::delete_env(c, a.id))
            .await
            .unwrap();
        assert!(store.call(move |c| get(c, a.id)).await.unwrap().is_none());
    }
}
