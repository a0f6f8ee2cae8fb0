//! Who may do what: roles granted per app, the actions they guard, and the default matrix of
//! which role each action needs on each tier (an owner can change it per app).
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Tier;

/// Roles, from least to most trusted; each can do everything the ones below it can.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Viewer,
    Developer,
    Maintainer,
    Owner,
}

/// What a request does to an environment (or app), for authorization.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// See apps, environments, releases, logs, domains, audit entries.
    Read,
    /// Deploy a release into an environment.
    Deploy,
    /// Run a command in an environment's live release, as its instance would (`turnout run`).
    /// Unless the app's policy sets it, it needs what deploying there needs.
    Run,
    /// Create or delete environments, change their configuration and secrets.
    Config,
    /// Start a release of one environment in another (pipeline promotion).
    Promote,
    /// Re-seed an environment's data.
    Reseed,
    /// Restore an environment's data from a backup.
    Restore,
    /// Bind, switch, roll back, put in maintenance or remove a domain.
    Domain,
    /// Grant and revoke roles, change policies, approval rules and URL protection; delete the
    /// app.
    Access,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Maintainer, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Owner => "owner",
        }
    }
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Read,
        Action::Deploy,
        Action::Run,
        Action::Config,
        Action::Promote,
        Action::Reseed,
        Action::Restore,
        Action::Domain,
        Action::Access,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Deploy => "deploy",
            Action::Run => "run",
            Action::Config => "config",
            Action::Promote => "promote",
            Action::Reseed => "reseed",
            Action::Restore => "restore",
            Action::Domain => "domain",
            Action::Access => "access",
        }
    }

    /// The role an action needs on a tier unless the app's policy says otherwise:
    /// developers deploy, configure and re-seed development and test; maintainers also QA,
    /// staging, release and the production copy, promote into them and restore backups outside
    /// production; owners do everything, including production, domains, restores into
    /// production and access management.
    pub fn default_role(self, tier: Tier) -> Role {
        use Tier::*;
        let low = matches!(tier, Development | Test);
        let middle = matches!(tier, Qa | Staging | Release | ProductionCopy);
        match self {
            Action::Read => Role::Viewer,
            Action::Run => Action::Deploy.default_role(tier),
            Action::Deploy | Action::Config | Action::Reseed if low => Role::Developer,
            Action::Deploy
            | Action::Config
            | Action::Reseed
            | Action::Promote
            | Action::Restore
                if low || middle =>
            {
                Role::Maintainer
            }
            _ => Role::Owner,
        }
    }
}

macro_rules! parse_named {
    ($ty:ty, $what:literal, $list:literal) => {
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$ty>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        format!(concat!("unknown ", $what, " '{}': use one of ", $list), s)
                    })
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

parse_named!(Role, "role", "viewer, developer, maintainer, owner");
parse_named!(
    Action,
    "action",
    "read, deploy, run, config, promote, reseed, restore, domain, access"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_matrix_separates_rights_by_stage() {
        assert_eq!(
            Action::Deploy.default_role(Tier::Development),
            Role::Developer
        );
        assert_eq!(Action::Deploy.default_role(Tier::Test), Role::Developer);
        assert_eq!(Action::Deploy.default_role(Tier::Qa), Role::Maintainer);
        assert_eq!(Action::Deploy.default_role(Tier::Staging), Role::Maintainer);
        assert_eq!(Action::Deploy.default_role(Tier::Production), Role::Owner);
        assert_eq!(Action::Promote.default_role(Tier::Test), Role::Maintainer);
        assert_eq!(
            Action::Restore.default_role(Tier::Staging),
            Role::Maintainer
        );
        assert_eq!(Action::Restore.default_role(Tier::Production), Role::Owner);
        assert_eq!(Action::Domain.default_role(Tier::Development), Role::Owner);
        assert_eq!(Action::Access.default_role(Tier::Development), Role::Owner);
        for tier in Tier::ALL {
            assert_eq!(
                Action::Run.default_role(tier),
                Action::Deploy.default_role(tier)
            );
        }
        for tier in Tier::ALL {
            assert_eq!(Action::Read.default_role(tier), Role::Viewer);
        }
        assert!(Role::Owner > Role::Maintainer && Role::Developer > Role::Viewer);
        assert_eq!("maintainer".parse::<Role>().unwrap(), Role::Maintainer);
        assert!(
            "admin"
                .parse::<Role>()
                .unwrap_err()
                .contains("viewer, developer")
        );
    }
}
