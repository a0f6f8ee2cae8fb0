//! Per-environment secrets: given to the app's instances as environment variables (never to
//! its build), recorded in the audit log by key only. Anyone who may read an environment sees
//! which keys it has; only roles allowed to deploy it see the values.
use turnout_model::{Action, AuditAction, EnvRef, SecretInfo, format_timestamp};

use crate::access::Principal;
use crate::app_file::check_env_key;
use crate::error::ControlError;
use crate::plane::ControlPlane;
use crate::store::{AuditEntry, q};

const MAX_SECRET_BYTES: usize = 64 * 1024;

impl ControlPlane {
    pub async fn list_secrets(
        &self,
        r: EnvRef,
        values: bool,
        who: &Principal,
    ) -> Result<Vec<SecretInfo>, ControlError> {
        let env = self.env_row(&r).await?;
        self.authorize_env(
            who,
            &env,
            if values { Action::Deploy } else { Action::Read },
        )
        .await?;
        let rows = self.store().call(move |c| q::secrets(c, env.id)).await?;
        Ok(rows
            .into_iter()
            .map(|(key, value, at, by)| SecretInfo {
                key,
                value: values.then_some(value),
                updated_at: format_timestamp(at),
                updated_by: by,
            })
            .collect())
    }

    /// Set a secret; running instances get it at the next deploy.
    pub async fn set_secret(
        &self,
        r: EnvRef,
        key: String,
        value: String,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let env = self.env_row(&r).await?;
        self.authorize_env(who, &env, Action::Config).await?;
        check_env_key(&key).map_err(ControlError::Invalid)?;
        if value.len() > MAX_SECRET_BYTES || value.contains('\0') {
            return Err(ControlError::Invalid(format!(
                "the value of secret '{key}' must be text without NUL bytes, at most 64 KiB"
            )));
        }
        let entry = AuditEntry::new(&who.name, AuditAction::SecretSet)
            .app(&r.app)
            .env(&r.env)
            .change(None, Some(key.clone()));
        let by = who.name.clone();
        self.store()
            .mutate(entry, move |c, e| {
                if q::set_secret(c, env.id, &key, &value, &by)? {
                    e.from = Some(key.clone());
                }
                Ok(())
            })
            .await
    }

    pub async fn unset_secret(
        &self,
        r: EnvRef,
        key: String,
        who: &Principal,
    ) -> Result<(), ControlError> {
        let env = self.env_row(&r).await?;
        self.authorize_env(who, &env, Action::Config).await?;
        let entry = AuditEntry::new(&who.name, AuditAction::SecretUnset)
            .app(&r.app)
            .env(&r.env)
            .change(Some(key.clone()), None);
        self.store()
            .mutate(entry, move |c, _| q::unset_secret(c, env.id, &key))
            .await
    }

    /// The environment's secrets as `KEY=value` pairs for its instances.
    pub(crate) async fn secret_env(
        &self,
        env_id: i64,
    ) -> Result<Vec<(String, String)>, ControlError> {
        Ok(self
            .store()
            .call(move |c| q::secrets(c, env_id))
            .await?
            .into_iter()
            .map(|(k, v, _, _)| (k, v))
            .collect())
    }
}
