//! Domain names: RFC 1123 host names, optionally a leading `*.` wildcard. Stored and compared
//! lower-case without a trailing dot, the way the proxy matches Host headers.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DomainName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid domain '{name}': {why}")]
pub struct DomainError {
    name: String,
    why: &'static str,
}

impl DomainName {
    pub fn new(raw: &str) -> Result<DomainName, DomainError> {
        let err = |why| DomainError {
            name: raw.chars().take(80).collect(),
            why,
        };
        let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        let (wildcard, rest) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name.as_str()),
        };
        if rest.is_empty() || name.len() > 253 {
            return Err(err(
                "a host name is 1-253 characters, like shop.example.com",
            ));
        }
        let labels: Vec<&str> = rest.split('.').collect();
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(err(
                    "each dot-separated label is 1-63 letters, digits and hyphens, not starting or ending with a hyphen; only a leading '*.' may be a wildcard",
                ));
            }
        }
        // No top-level domain is all digits (RFC 3696 §2), so this refuses IPv4 literals in
        // every form an address parser takes (`127.0.0.1`, `127.1`, `0x7f.1`).
        if labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(err(
                "an IP address is not a domain: the proxy routes by host name, so add a name that resolves to this machine, like shop.example.com",
            ));
        }
        if wildcard && labels.len() < 2 {
            return Err(err(
                "a wildcard needs at least two labels after '*.', like *.example.com",
            ));
        }
        if !wildcard && labels.len() == 3 && labels[2] == "localhost" {
            return Err(err(
                "names of the form ENV.APP.localhost are the environments' internal URLs",
            ));
        }
        Ok(DomainName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DomainName {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, DomainError> {
        DomainName::new(s)
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DomainName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DomainName::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_names_and_wildcards_normalised() {
        assert_eq!(
            DomainName::new("Shop.Example.COM.").unwrap().as_str(),
            "shop.example.com"
        );
        for ok in [
            "localhost",
            "shop.localhost",
            "a-1.b.c.d.example",
            "*.example.com",
            "xn--bcher-kva.example",
        ] {
            DomainName::new(ok).unwrap();
        }
    }

    #[test]
    fn rejects_what_is_not_a_host_name() {
        for bad in [
            "",
            ".",
            "-shop.com",
            "shop-.com",
            "sh_op.com",
            "shop..com",
            "a.*.com",
            "*.com",
            "*",
            "shop.com/path",
            "shop.com:80",
            "$(touch x).com",
            "staging.shop.localhost",
            &format!("{}.com", "a".repeat(64)),
        ] {
            let err = DomainName::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid domain"), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        /// Every IPv4 address, in its usual form, is refused as a domain.
        #[test]
        fn no_ipv4_address_is_a_domain(ip: u32) {
            let text = std::net::Ipv4Addr::from(ip).to_string();
            proptest::prop_assert!(DomainName::new(&text).is_err());
        }

        /// Host names made of valid labels are accepted, lower-cased, without the trailing
        /// dot, and their own text parses back to them.
        #[test]
        fn host_names_normalise_once(
            labels in proptest::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", 1..5),
            tld in "[a-zA-Z]{2,6}",
            dot: bool,
        ) {
            let text = format!("{}.{tld}{}", labels.join("."), if dot { "." } else { "" });
            let d = DomainName::new(&text).unwrap();
            proptest::prop_assert_eq!(d.as_str(), text.trim_end_matches('.').to_ascii_lowercase());
            proptest::prop_assert_eq!(DomainName::new(d.as_str()).unwrap(), d);
        }
    }

    #[test]
    fn rejects_ip_literals() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1.",
            "127.1",
            "0x7f.1",
            "*.0.0.1",
            "1",
            "[::1]",
            "::1",
        ] {
            let err = DomainName::new(ip).unwrap_err().to_string();
            assert!(err.starts_with(&format!("invalid domain '{ip}'")), "{err}");
            if !ip.contains(':') {
                assert!(err.contains("an IP address is not a domain"), "{ip}: {err}");
            }
        }
        DomainName::new("1.2.3.example").unwrap();
        DomainName::new("127.0.0.1.nip.io").unwrap();
    }
}
