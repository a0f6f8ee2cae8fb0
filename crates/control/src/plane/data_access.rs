//! Looking at and sharing an environment's data: `turnout data show`, `data attach|detach`
//! (another environment's database, with credentials that allow only the mode asked for) and
//! `data psql|sqlite` (the connection a shell uses; configuration role, audited).
use turnout_data::Engine;
use turnout_model::{
    Action, AttachData, AuditAction, DataAccess, DataAttachment, DataConnection, DataInfo,
    DataOrigin, EnvName, EnvRef, Tier, format_timestamp,
};

use super::ControlPlane;
use super::generation::{Db, Generation, access, pg_name, random_hex};
use super::isolation::Separation;
use super::routing::key;
use crate::access::Principal;
use crate::app_file::{self, ReleaseConfig};
use crate::error::ControlError;
use crate::store::data::{self as dq, AttachmentRow};
use crate::store::{AuditEntry, EnvRow, q};

impl ControlPlane {
    /// `turnout data show APP/ENV`: engine, generation, URL (password hidden), storage, size,
    /// origin, re-seed schedule and attachments.
    pub async fn show_data(&self, r: EnvRef, who: &Principal) -> Result<DataInfo, ControlError> {
        let env = self.env_for(who, &r, Action::Read).await?;
        self.data_info(&r, &env).await
    }

    async fn data_info(&self, r: &EnvRef, env: &EnvRow) -> Result<DataInfo, ControlError> {
        let (row, gn) = self.current(r, env).await?;
        let id = env.id;
        let attachments = self
            .store
            .call(move |c| dq::attachments_of(c, id))
            .await?
            .into_iter()
            .map(|a| DataAttachment {
                to: format!("{}/{}", r.app, a.to),
                mode: a.mode,
                var: a.var,
            })
            .collect();
        let reseed_schedule = match env.current_release_id {
            Some(id) => {
                let release = self.store.call(move |c| q::get_release(c, id)).await?;
                serde_json::from_str::<ReleaseConfig>(&release.config)
                    .ok()
                    .and_then(|c| c.data.reseed.map(|cron| (cron, c.data.reseed_timezone)))
            }
            None => None,
        };
        let reseed = self.reseed_state(id, reseed_schedule).await?;
        Ok(DataInfo {
            app: r.app.to_string(),
            env: r.env.to_string(),
            engine: row.engine.to_string(),
            generation: row.generation,
            url: hide_password(&gn.url()),
            storage_dir: gn.storage.display().to_string(),
            size_bytes: gn.size().await.ok(),
            origin: DataOrigin {
                kind: row.origin.kind.to_owned(),
                from: row.origin.from.clone(),
                at: format_timestamp(row.origin.at),
                job: row.origin.job,
            },
            reseed,
            attachments,
        })
    }

    /// The environment's data as recorded, or a clear error before its first deploy.
    async fn current(
        &self,
        r: &EnvRef,
        env: &EnvRow,
    ) -> Result<(dq::DataRow, Generation), ControlError> {
        let Some(row) = self.data_row(env).await? else {
            return Err(ControlError::Conflict(format!(
                "{r} has no data yet: its first deploy makes it (`turnout deploy {r}`)"
            )));
        };
        let gn = self.generation(env, &row)?;
        Ok((row, gn))
    }

    /// `turnout data attach APP/ENV --to APP/OTHER --mode … [--as VAR]`: ENV's processes get
    /// VAR (from their next start), a URL of OTHER's database whose credentials allow `mode`
    /// only. Refused: a write mode onto production from a lower environment.
    pub async fn attach_data(
        &self,
        r: EnvRef,
        req: AttachData,
        who: &Principal,
    ) -> Result<DataInfo, ControlError> {
        let to = self.other_env(&r, &req.to)?;
        let env = self.env_for(who, &r, Action::Config).await?;
        let needed = match req.mode {
            DataAccess::Read => Action::Read,
            DataAccess::Append | DataAccess::ReadWrite => Action::Config,
        };
        let other = self.env_for(who, &to, needed).await?;
        if other.tier == Tier::Production
            && env.tier != Tier::Production
            && req.mode != DataAccess::Read
        {
            let entry = AuditEntry::new(&who.name, AuditAction::DataAttach)
                .app(&r.app)
                .env(&r.env)
                .change(None, Some(format!("{to} {}", req.mode)));
            let why = format!(
                "refused: {to} is production and {r} is {}; a lower environment never writes production's data. Attach it with --mode read",
                env.tier
            );
            self.store.record(entry, why.clone()).await?;
            return Err(ControlError::Forbidden(why));
        }
        let var = match req.var {
            Some(v) => v,
            None => format!(
                "{}_DATABASE_URL",
                to.env.as_str().to_uppercase().replace('-', "_")
            ),
        };
        check_var(&var)?;
        // One change to OTHER's data at a time: a job making its next generation re-creates
        // the attachments it reads, so none may be added meanwhile.
        let Some(_other_lock) = self.env_locks.try_lock(&key(&to)) else {
            return Err(ControlError::Conflict(format!(
                "a job is running on {to}; attach once it has ended (`turnout jobs {to}`)"
            )));
        };
        let (_, gn) = self.current(&to, &other).await?;
        let row = AttachmentRow {
            env_id: env.id,
            env: env.name.clone(),
            to_env_id: other.id,
            to: other.name.clone(),
            mode: req.mode,
            var: var.clone(),
            role: pg_name("att", env.name.as_str()),
            password: random_hex(24)?,
        };
        match &gn.db {
            Db::Sqlite(db) => {
                if self.separation == Separation::Users && env.uid != other.uid {
                    return Err(ControlError::Conflict(format!(
                        "{r} and {to} run as different users, and a SQLite file can only be shared by one; use engine = \"postgres\" in [data] for a database other environments attach to"
                    )));
                }
                db.attach_url(access(req.mode))
                    .map_err(|e| ControlError::Invalid(e.to_string()))?;
            }
            Db::Postgres(cluster) => {
                cluster
                    .attach(&row.role, &row.password, access(req.mode))
                    .await
                    .map_err(|e| ControlError::internal(e.to_string()))?;
            }
        }
        let entry = AuditEntry::new(&who.name, AuditAction::DataAttach)
            .app(&r.app)
            .env(&r.env)
            .change(None, Some(format!("{to} {} as {var}", req.mode)));
        let (stored, by) = (row.clone(), who.name.clone());
        if let Err(e) = self
            .store
            .mutate(entry, move |c, _| dq::attach(c, &stored, &by))
            .await
        {
            if let Db::Postgres(cluster) = &gn.db {
                let _ = cluster.detach(&row.role).await;
            }
            return Err(e);
        }
        self.data_info(&r, &env).await
    }

    /// `turnout data detach APP/ENV --to APP/OTHER`: the role goes at once; the variable with
    /// ENV's next start.
    pub async fn detach_data(
        &self,
        r: EnvRef,
        to: EnvName,
        who: &Principal,
    ) -> Result<DataInfo, ControlError> {
        let to = EnvRef {
            app: r.app.clone(),
            env: to,
        };
        let env = self.env_for(who, &r, Action::Config).await?;
        let other = self.env_row(&to).await?;
        let Some(_other_lock) = self.env_locks.try_lock(&key(&to)) else {
            return Err(ControlError::Conflict(format!(
                "a job is running on {to}; detach once it has ended (`turnout jobs {to}`)"
            )));
        };
        let entry = AuditEntry::new(&who.name, AuditAction::DataDetach)
            .app(&r.app)
            .env(&r.env)
            .change(Some(to.to_string()), None);
        let (env_id, other_id) = (env.id, other.id);
        let removed = self
            .store
            .mutate(entry, move |c, _| dq::detach(c, env_id, other_id))
            .await?;
        if !removed {
            return Err(ControlError::NotFound(format!(
                "{r} is not attached to {to}; see `turnout data show {r}`"
            )));
        }
        if let Some(row) = self.data_row(&other).await?
            && let Db::Postgres(cluster) = &self.generation(&other, &row)?.db
        {
            cluster
                .detach(&pg_name("att", env.name.as_str()))
                .await
                .map_err(|e| ControlError::internal(e.to_string()))?;
        }
        self.data_info(&r, &env).await
    }

    /// What `turnout data psql|sqlite` connects with: the environment's own credentials, for
    /// those who may configure it; every use is audited.
    pub async fn data_connection(
        &self,
        r: EnvRef,
        who: &Principal,
    ) -> Result<DataConnection, ControlError> {
        let env = self.env_for(who, &r, Action::Config).await?;
        let (row, gn) = self.current(&r, &env).await?;
        let url = match &gn.db {
            Db::Sqlite(db) => db.path().display().to_string(),
            Db::Postgres(cluster) => {
                self.start_cluster(&env, &gn).await?;
                cluster.socket_url(&cluster.spec.database, &cluster.spec.app_password)
            }
        };
        let entry = AuditEntry::new(&who.name, AuditAction::DataConnect)
            .app(&r.app)
            .env(&r.env)
            .change(
                None,
                Some(format!("{} generation {}", row.engine, row.generation)),
            );
        self.store.mutate(entry, |_, _| Ok(())).await?;
        Ok(DataConnection {
            engine: row.engine.to_string(),
            url,
        })
    }

    /// `APP/ENV` of the same app as `r`.
    fn other_env(&self, r: &EnvRef, text: &str) -> Result<EnvRef, ControlError> {
        let to: EnvRef = text
            .parse()
            .map_err(|e: turnout_model::NameError| ControlError::Invalid(e.to_string()))?;
        if to.app != r.app {
            return Err(ControlError::Invalid(format!(
                "{r} and {to} are environments of different apps; data is shared within an app"
            )));
        }
        if to.env == r.env {
            return Err(ControlError::Invalid(format!(
                "{r} has its own database in DATABASE_URL; attach another environment"
            )));
        }
        Ok(to)
    }
}

/// Parse an engine name from the API.
pub fn engine(text: Option<&str>) -> Result<Option<Engine>, ControlError> {
    text.map(|t| t.parse().map_err(ControlError::Invalid))
        .transpose()
}

/// An attachment's variable: a name the app could set, but not `DATABASE_URL` (its own).
fn check_var(var: &str) -> Result<(), ControlError> {
    app_file::check_env_key(var).map_err(ControlError::Invalid)?;
    if matches!(var, "DATABASE_URL") {
        return Err(ControlError::Invalid(
            "DATABASE_URL is the environment's own database; name the attachment's variable with --as, like OTHER_DATABASE_URL".into(),
        ));
    }
    Ok(())
}

/// A URL with its password shown as `****`.
pub(crate) fn hide_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:****{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_nothing_else() {
        assert_eq!(
            hide_password("postgres://env_qa:s3cret@127.0.0.1:5432/env_qa"),
            "postgres://env_qa:****@127.0.0.1:5432/env_qa"
        );
        assert_eq!(
            hide_password("sqlite:///var/lib/x/db.sqlite"),
            "sqlite:///var/lib/x/db.sqlite"
        );
        assert_eq!(
            hide_password("postgres://u:p@localhost:5/d?host=/s"),
            "postgres://u:****@localhost:5/d?host=/s"
        );
    }

    #[test]
    fn an_attachment_never_takes_the_environment_s_own_variable() {
        assert!(check_var("DATABASE_URL").is_err());
        assert!(check_var("TURNOUT_X").is_err());
        assert!(check_var("PROD_DATABASE_URL").is_ok());
    }
}
