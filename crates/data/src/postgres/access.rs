//! Attached roles: a second environment's login to this database, whose grants enforce its
//! access mode.

use super::{Cluster, SUPERUSER, db_error, db_message, quote_ident, quote_literal, texts};
use crate::{Access, DataError};

impl Cluster {
    /// Creates (or re-creates) a login role `role` with `password` that may do `access` on the
    /// database's tables, now and those made later by the environment's role.
    pub async fn attach(
        &self,
        role: &str,
        password: &str,
        access: Access,
    ) -> Result<(), DataError> {
        self.check_attached_name(role)?;
        if password.is_empty() || password.contains('\0') {
            return Err(DataError::Invalid(
                "an attached role's password must be non-empty and have no NUL character".into(),
            ));
        }
        self.detach(role).await?;
        let db = self.admin(&self.spec.database).await?;
        let r = quote_ident(role);
        let app = quote_ident(&self.spec.database);
        let (tables, sequences) = match access {
            Access::Read => ("SELECT", None),
            Access::Append => ("SELECT, INSERT", Some("USAGE, SELECT")),
            Access::ReadWrite => (
                "SELECT, INSERT, UPDATE, DELETE",
                Some("USAGE, SELECT, UPDATE"),
            ),
        };
        let mut sql = format!(
            "CREATE ROLE {r} LOGIN PASSWORD {};\nGRANT CONNECT ON DATABASE {app} TO {r};\n\
             ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT USAGE ON SCHEMAS TO {r};\n\
             ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT {tables} ON TABLES TO {r};\n",
            quote_literal(password)
        );
        if let Some(sequences) = sequences {
            sql.push_str(&format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {app} GRANT {sequences} ON SEQUENCES TO {r};\n"
            ));
        }
        let schemas: Vec<String> = texts(&db, "SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'", &[], "listing schemas").await?;
        for schema in &schemas {
            let s = quote_ident(schema);
            sql.push_str(&format!(
                "GRANT USAGE ON SCHEMA {s} TO {r};\nGRANT {tables} ON ALL TABLES IN SCHEMA {s} TO {r};\n"
            ));
            if let Some(sequences) = sequences {
                sql.push_str(&format!(
                    "GRANT {sequences} ON ALL SEQUENCES IN SCHEMA {s} TO {r};\n"
                ));
            }
        }
        db.batch_execute(&format!("BEGIN;\n{sql}COMMIT;"))
            .await
            .map_err(|e| DataError::Database(format!("creating role {role}: {}", db_message(&e))))
    }

    /// Drops an attached role (absent is fine).
    pub async fn detach(&self, role: &str) -> Result<(), DataError> {
        self.check_attached_name(role)?;
        let db = self.admin(&self.spec.database).await?;
        let exists = db
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(db_error("looking up a role"))?
            .is_some();
        if !exists {
            return Ok(());
        }
        let r = quote_ident(role);
        db.batch_execute(&format!("BEGIN; DROP OWNED BY {r}; DROP ROLE {r}; COMMIT;"))
            .await
            .map_err(|e| DataError::Database(format!("dropping role {role}: {}", db_message(&e))))
    }

    fn check_attached_name(&self, role: &str) -> Result<(), DataError> {
        if role.is_empty()
            || role.contains('\0')
            || role.len() > 63
            || role == SUPERUSER
            || role == self.spec.database
            || role.starts_with("pg_")
        {
            return Err(DataError::Invalid(format!(
                "'{role}' cannot be an attached role: it must be 1 to 63 bytes, not `{SUPERUSER}`, not the environment's own role `{}` and not start with `pg_`",
                self.spec.database
            )));
        }
        Ok(())
    }
}
