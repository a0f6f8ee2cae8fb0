//! Making a copy of another cluster's files (a clone, a restore) this cluster's own before
//! anyone but Turnout can log in.

use tokio_util::sync::CancellationToken;
use turnout_netns::Network;

use super::{
    Cluster, Logins, SUPERUSER, check_cancel, db_error, quote_ident, quote_literal, texts,
};
use crate::{DataError, Progress};

impl Cluster {
    /// Starts a copy of another cluster's files (a clone, a restore) for the first time and
    /// makes it this cluster's own before anyone but Turnout can log in: the source's role and
    /// database (`old_db`) renamed to the spec's, its passwords (the superuser's was
    /// `old_super`) replaced, its subscriptions disabled and detached from their slots, its
    /// replication slots and attached roles dropped; then opened to every login with a reload.
    pub(super) async fn make_safe(
        &self,
        old_db: &str,
        old_super: &str,
        network: &Network,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> Result<(), DataError> {
        let spec = &self.spec;
        // First start: only Turnout may log in and no subscription may run.
        progress.line("making the copy safe: roles, passwords, subscriptions, slots");
        self.write_config(Logins::TurnoutOnly, false, "")?;
        self.start_server(network, cancel).await?;
        let admin = self
            .connect(SUPERUSER, old_super, "postgres")
            .await
            .map_err(|e| DataError::Database(format!("connecting to the copy: {e}")))?;
        let others: Vec<String> = texts(&admin, "SELECT rolname FROM pg_roles WHERE rolcanlogin AND oid >= 16384 AND rolname <> $1 AND rolname <> $2 ORDER BY rolname", &[&SUPERUSER, &old_db], "listing the copy's roles").await?;
        let databases: Vec<String> = texts(&admin, "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname", &[], "listing the copy's databases").await?;
        for database in &databases {
            let client = self.connect(SUPERUSER, old_super, database).await?;
            let subscriptions: Vec<String> = texts(&client, "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())", &[], "listing subscriptions").await?;
            for sub in &subscriptions {
                let sub = quote_ident(sub);
                client
                    .batch_execute(&format!(
                        "ALTER SUBSCRIPTION {sub} DISABLE; ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)"
                    ))
                    .await
                    .map_err(db_error("disabling a subscription of the copy"))?;
            }
            for role in &others {
                client
                    .batch_execute(&format!(
                        "REASSIGN OWNED BY {r} TO {app}; DROP OWNED BY {r}",
                        r = quote_ident(role),
                        app = quote_ident(old_db)
                    ))
                    .await
                    .map_err(db_error("dropping the source's attached roles' privileges"))?;
            }
        }
        let (new_db, new_role) = (&spec.database, quote_ident(&spec.database));
        let mut fix = String::new();
        for role in &others {
            fix.push_str(&format!("DROP ROLE {};\n", quote_ident(role)));
        }
        if new_db != old_db {
            fix.push_str(&format!(
                "ALTER DATABASE {old} RENAME TO {new_role};\nALTER ROLE {old} RENAME TO {new_role};\n",
                old = quote_ident(old_db)
            ));
        }
        fix.push_str(&format!(
            "ALTER ROLE {new_role} PASSWORD {};\nALTER ROLE {SUPERUSER} PASSWORD {};\n",
            quote_literal(&spec.app_password),
            quote_literal(&spec.superuser_password)
        ));
        fix.push_str(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active;\n",
        );
        admin
            .batch_execute(&fix)
            .await
            .map_err(db_error("renaming the copy's role and database"))?;
        drop(admin);
        check_cancel(cancel)?;

        // Then as the environment's own: every login (pg_hba.conf is re-read by a reload, no
        // restart), subscriptions still disabled. The running server keeps no logical
        // replication workers until its next start, which reads the full configuration.
        progress.line("opening the copy to every login");
        self.write_config(Logins::Everyone, true, "")?;
        let password = &spec.superuser_password;
        let loaded_at = |client: tokio_postgres::Client| async move {
            client
                .query_one("SELECT pg_conf_load_time()::text", &[])
                .await
                .map(|row| row.get::<_, String>(0))
                .map_err(db_error("reading when the copy loaded its configuration"))
        };
        let admin = self.connect(SUPERUSER, password, "postgres").await?;
        let before = loaded_at(self.connect(SUPERUSER, password, "postgres").await?).await?;
        admin
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(db_error("reloading the copy's configuration"))?;
        // The postmaster reloads asynchronously; a new session shows when it has.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while loaded_at(self.connect(SUPERUSER, password, "postgres").await?).await? == before {
            check_cancel(cancel)?;
            if tokio::time::Instant::now() > deadline {
                return Err(DataError::Database(
                    "the copy did not reload its configuration within 10 s".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        progress.line(&format!("the copy {new_db} is ready"));
        Ok(())
    }
}
