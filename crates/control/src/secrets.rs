//! Secrets at rest, for the whole store: at start-up, settling a key rotation that was cut
//! short and sealing what older versions kept in plain text (the per-environment `secrets`
//! table, stored webhook secrets); `turnout secrets rotate-key`, which re-seals every sealed
//! value in one transaction. The values themselves are `plane::config`'s and the hooks'.
//!
//! Invariant: the store holds no secret in plain text; the keys are in the home.
use turnout_model::{AuditAction, KeyRotated};

use crate::access::{Principal, admin_only};
use crate::error::ControlError;
use crate::plane::ControlPlane;
use crate::store::config::{self as cq};
use crate::store::{AuditEntry, Store};
use crate::vault::Vault;

/// Before the daemon serves: finish or undo a rotation cut short (by whether the store holds
/// values sealed with the pending key), then seal values older versions kept in plain text, in
/// one transaction, and truncate the WAL so its pages do not keep them either.
pub async fn prepare_store(store: &Store, vault: &mut Vault) -> Result<(), ControlError> {
    if let Some(pending) = vault.pending_id() {
        let uses = store
            .call(move |c| {
                Ok(cq::sealed_values(c)?
                    .iter()
                    .any(|s| Vault::sealed_with(&s.value).as_deref() == Some(pending.as_str())))
            })
            .await?;
        vault.settle(uses)?;
        tracing::info!(finished = uses, "a key rotation cut short was settled");
    }
    let (plain, table) = store
        .call(|c| Ok((cq::plain_values(c)?, cq::has_plain_secrets_table(c)?)))
        .await?;
    if !table && plain.hooks.is_empty() {
        return Ok(());
    }
    let secrets = plain
        .secrets
        .iter()
        .map(|s| {
            let name = cq::SetLevel::Env(s.env_id).seal_name(s.app_id, &s.key);
            Ok(cq::OldSecret {
                env_id: s.env_id,
                app_id: s.app_id,
                key: s.key.clone(),
                value: vault.seal(&name, s.value.as_bytes())?,
                updated_at: s.updated_at,
                updated_by: s.updated_by.clone(),
            })
        })
        .collect::<Result<Vec<_>, ControlError>>()?;
    let hooks = plain
        .hooks
        .iter()
        .map(|(rowid, app_id, provider, secret)| {
            let name = cq::hook_seal_name(*app_id, provider);
            Ok((*rowid, vault.seal(&name, secret.as_bytes())?))
        })
        .collect::<Result<Vec<_>, ControlError>>()?;
    let sealed = secrets.len() + hooks.len();
    store
        .mutate_each(move |c| {
            cq::seal_plain(c, &secrets, &hooks)?;
            Ok(match sealed {
                0 => vec![],
                n => vec![
                    AuditEntry::new("turnout", AuditAction::SecretsSealed)
                        .change(None, Some(format!("{n} values sealed"))),
                ],
            })
        })
        .await?;
    store.truncate_wal().await?;
    if sealed > 0 {
        tracing::info!(
            sealed,
            "values kept in plain text by an older version were sealed"
        );
    }
    Ok(())
}

impl ControlPlane {
    /// A new key; every sealed value re-sealed under it in one transaction; then the old key
    /// is gone. Administrators only. A failure leaves the old key and every value as they were.
    pub async fn rotate_secret_key(&self, who: &Principal) -> Result<KeyRotated, ControlError> {
        admin_only(who, "rotating the secret key")?;
        // No value is sealed (under the old key) while this runs.
        let _sealing = self.sealing.write().await;
        let key_id = self.vault_mut().begin_rotation()?;
        match self.reseal_all(who, key_id.clone()).await {
            Ok(resealed) => {
                self.vault_mut().commit_rotation()?;
                self.store().truncate_wal().await?;
                tracing::info!(key = %key_id, resealed, "secret key rotated");
                Ok(KeyRotated { key_id, resealed })
            }
            Err(e) => {
                self.vault_mut().abort_rotation()?;
                Err(e)
            }
        }
    }

    async fn reseal_all(&self, who: &Principal, key_id: String) -> Result<usize, ControlError> {
        let old = self.store().call(|c| cq::sealed_values(c)).await?;
        let new = {
            let vault = self.vault();
            old.iter()
                .map(|s| vault.reseal(&s.name, &s.value))
                .collect::<Result<Vec<_>, ControlError>>()?
        };
        let n = old.len();
        let entry = AuditEntry::new(&who.name, AuditAction::SecretsRotateKey)
            .change(None, Some(format!("key {key_id}, {n} values re-sealed")));
        self.store()
            .mutate(entry, move |c, _| {
                for (s, sealed) in old.iter().zip(&new) {
                    cq::replace_sealed(c, s, sealed)?;
                }
                Ok(())
            })
            .await?;
        Ok(n)
    }
}
