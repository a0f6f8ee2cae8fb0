//! App and environment names are DNS labels, because they become parts of host names
//! (`<env>.<app>.localhost`) and of paths under the home directory. Validating them once, at the
//! edge, is what keeps them out of shells, paths and hosts in any other form.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub const MAX_NAME_LEN: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "invalid {kind} name '{name}': use 1-{MAX_NAME_LEN} lowercase letters, digits and hyphens, starting and ending with a letter or digit (for example 'shop' or 'test-login')"
    )]
    Invalid { kind: &'static str, name: String },
    #[error("invalid environment reference '{0}': write it as APP/ENV, for example 'shop/staging'")]
    BadRef(String),
}

fn check(kind: &'static str, name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(NameError::Invalid {
            kind,
            name: name.chars().take(80).collect(),
        })
    }
}

macro_rules! label_type {
    ($ty:ident, $kind:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            pub fn new(name: &str) -> Result<Self, NameError> {
                check($kind, name)?;
                Ok(Self(name.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

label_type!(AppName, "app");
label_type!(EnvName, "environment");

/// `APP/ENV`, the way the CLI names one environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvRef {
    pub app: AppName,
    pub env: EnvName,
}

impl EnvRef {
    /// The environment's internal host name, `<env>.<app>.localhost`.
    pub fn internal_host(&self) -> String {
        format!("{}.{}.localhost", self.env, self.app)
    }
}

impl FromStr for EnvRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let (app, env) = s
            .split_once('/')
            .ok_or_else(|| NameError::BadRef(s.chars().take(80).collect()))?;
        Ok(EnvRef {
            app: AppName::new(app)?,
            env: EnvName::new(env)?,
        })
    }
}

impl fmt::Display for EnvRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule written another way: a DNS label of at most 40 characters.
    fn is_label(s: &str) -> bool {
        let inner = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (s.chars().next(), s.chars().last()) {
            (Some(first), Some(last)) => {
                s.len() <= MAX_NAME_LEN
                    && inner(first)
                    && inner(last)
                    && s.chars().all(|c| inner(c) || c == '-')
            }
            _ => false,
        }
    }

    proptest::proptest! {
        #[test]
        fn names_are_exactly_dns_labels(s in "[a-z0-9_A-Z./\n-]{0,42}") {
            proptest::prop_assert_eq!(AppName::new(&s).is_ok(), is_label(&s));
            proptest::prop_assert_eq!(EnvName::new(&s).is_ok(), is_label(&s));
            if let Ok(r) = s.parse::<EnvRef>() {
                proptest::prop_assert_eq!(r.to_string(), s);
            }
        }
    }

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "shop", "test-login-2", "0", &"x".repeat(40)] {
            assert!(AppName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else_with_a_message_that_says_what_is_allowed() {
        for bad in [
            "",
            "Shop",
            "-a",
            "a-",
            "a_b",
            "a.b",
            "a b",
            "$(rm -rf /)",
            "é",
            &"x".repeat(41),
        ] {
            let err = EnvName::new(bad).unwrap_err().to_string();
            assert!(
                err.contains("lowercase letters, digits and hyphens"),
                "{err}"
            );
            assert!(err.contains("environment"), "{err}");
        }
    }

    #[test]
    fn parses_env_refs() {
        let r: EnvRef = "shop/staging".parse().unwrap();
        assert_eq!(r.app.as_str(), "shop");
        assert_eq!(r.internal_host(), "staging.shop.localhost");
        assert!(matches!(
            "shop".parse::<EnvRef>(),
            Err(NameError::BadRef(_))
        ));
        assert!("shop/Staging".parse::<EnvRef>().is_err());
    }
}
