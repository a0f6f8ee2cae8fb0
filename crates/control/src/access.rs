//! Authentication and authorization: API tokens, the principal a token stands for, and the
//! check every operation makes against the role matrix (defaults in `Action::default_role`,
//! per-app overrides in the store).
use std::io::Read;

use turnout_model::{Action, AppName, Role, Tier};

use crate::error::ControlError;

/// Who is asking, as the API authenticated them.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    /// Roles by app id; `None` is a role on every app.
    pub grants: Vec<(Option<i64>, Role)>,
}

impl Principal {
    /// The daemon itself (restores at start-up, expiry of approvals).
    pub fn system() -> Principal {
        Principal {
            user_id: 0,
            name: "turnout".into(),
            grants: vec![(None, Role::Owner)],
        }
    }

    /// The strongest role this principal has on an app.
    pub fn role_on(&self, app_id: i64) -> Option<Role> {
        self.grants
            .iter()
            .filter(|(app, _)| app.is_none_or(|a| a == app_id))
            .map(|(_, role)| *role)
            .max()
    }

    /// The ids of the apps it has a role on (`role_on` is some): `None` when it has one on
    /// every app.
    pub fn visible_apps(&self) -> Option<Vec<i64>> {
        if self.grants.iter().any(|(app, _)| app.is_none()) {
            return None;
        }
        Some(self.grants.iter().filter_map(|(app, _)| *app).collect())
    }

    /// Whether the principal holds a role on every app (needed to create apps and users).
    pub fn is_admin(&self) -> bool {
        self.grants
            .iter()
            .any(|(app, role)| app.is_none() && *role == Role::Owner)
    }
}

/// Refuse unless `who` has at least `needed` on the app.
pub fn check(
    who: &Principal,
    app_id: i64,
    app: &AppName,
    what: &str,
    needed: Role,
) -> Result<(), ControlError> {
    match who.role_on(app_id) {
        Some(role) if role >= needed => Ok(()),
        has => Err(ControlError::Forbidden(format!(
            "forbidden: {what} needs the {needed} role on app '{app}'; {} {}",
            who.name,
            match has {
                Some(role) => format!("has {role}"),
                None => "has no role on it".to_owned(),
            }
        ))),
    }
}

/// Refuse unless `who` holds the owner role on every app (creating apps and users, the whole
/// audit log).
pub fn admin_only(who: &Principal, what: &str) -> Result<(), ControlError> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(ControlError::Forbidden(format!(
            "forbidden: {what} needs the owner role on every app; {} does not have it",
            who.name
        )))
    }
}

/// Describe an action on a tier for error messages: "deploy on shop/prod (tier production)".
pub fn describe(action: Action, target: &str, tier: Option<Tier>) -> String {
    match tier {
        Some(tier) => format!("{action} on {target} (tier {tier})"),
        None => format!("{action} on {target}"),
    }
}

/// A new API token: `tnt_` and 40 hex digits from the kernel's random source.
pub fn new_token() -> Result<String, ControlError> {
    let mut bytes = [0u8; 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ControlError::internal(format!("read /dev/urandom: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("tnt_{hex}"))
}

/// What the store keeps of a token. Tokens are 160 random bits, so a fast hash is enough: no
/// password-style stretching is needed against guessing.
pub fn hash_token(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// The part of a token safe to show in listings.
pub fn token_prefix(token: &str) -> String {
    token.chars().take(10).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_identifies_them() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("tnt_") && a.len() == 44);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(!hash_token(&a).contains(&a[4..]));
    }

    #[test]
    fn roles_on_every_app_and_on_one_app_combine() {
        let who = Principal {
            user_id: 1,
            name: "alice".into(),
            grants: vec![(Some(7), Role::Maintainer), (None, Role::Viewer)],
        };
        assert_eq!(who.role_on(7), Some(Role::Maintainer));
        assert_eq!(who.role_on(8), Some(Role::Viewer));
        let app = AppName::new("shop").unwrap();
        let err = check(
            &who,
            8,
            &app,
            "deploy on shop/prod (tier production)",
            Role::Owner,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("needs the owner role on app 'shop'") && err.contains("alice has viewer"),
            "{err}"
        );
        assert!(!who.is_admin());
        assert!(Principal::system().is_admin());
    }
}
