//! Outbound requests per tier (`turnout egress …`): each app's policy for each tier (a mode and
//! an allow-list of hosts), the host patterns the allow-list holds, and the egress log.
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Tier;

/// At most this many hosts on one tier's allow-list.
pub const MAX_ALLOW_HOSTS: usize = 100;
/// At most this many log entries in one answer of `egress log`.
pub const MAX_LOG_LIMIT: u32 = 10_000;

/// What a tier's outbound requests may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EgressMode {
    /// Everything passes (logged).
    Allow,
    /// Only allow-listed hosts pass; everything else is refused.
    Deny,
    /// Everything passes; requests to hosts off the allow-list are logged as "would deny" (a
    /// learning mode to build the list before switching to `deny`).
    Record,
}

impl EgressMode {
    pub const ALL: [EgressMode; 3] = [EgressMode::Allow, EgressMode::Deny, EgressMode::Record];

    pub fn as_str(self) -> &'static str {
        match self {
            EgressMode::Allow => "allow",
            EgressMode::Deny => "deny",
            EgressMode::Record => "record",
        }
    }
}

impl fmt::Display for EgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EgressMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EgressMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown egress mode '{}': use deny, allow or record",
                    s.chars().take(40).collect::<String>()
                )
            })
    }
}

/// One tier's policy: its mode and allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    pub mode: EgressMode,
    pub hosts: Vec<HostPattern>,
}

impl EgressPolicy {
    /// What a tier does unless set: production calls out freely (and without the proxy: its
    /// outbound does not depend on Turnout); every other tier touches nothing outside.
    pub fn tier_default(tier: Tier) -> EgressPolicy {
        EgressPolicy {
            mode: match tier {
                Tier::Production => EgressMode::Allow,
                _ => EgressMode::Deny,
            },
            hosts: Vec::new(),
        }
    }

    /// Whether `host:port` is on the allow-list.
    pub fn lists(&self, host: &str, port: u16) -> bool {
        self.hosts.iter().any(|h| h.matches(host, port))
    }

    /// Whether `host:port` is on the allow-list by its exact name or address (not through a
    /// wildcard): only those may reach an address inside the machine or its private network.
    pub fn lists_exactly(&self, host: &str, port: u16) -> bool {
        self.hosts
            .iter()
            .any(|h| !matches!(h.host, HostMatch::Suffix(_)) && h.matches(host, port))
    }
}

/// An entry of an allow-list: `api.example.com`, `*.example.com` (any name below it, not
/// itself), `192.0.2.7`, `[2001:db8::1]`, each optionally with `:PORT` (else any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub host: HostMatch,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// A host name, lower case.
    Exact(String),
    /// `*.SUFFIX`: names ending in `.SUFFIX` (lower case, without the dot).
    Suffix(String),
    Ip(IpAddr),
}

impl HostPattern {
    /// Whether a request to `host` (a name as the client gave it, or an IP literal) on `port`
    /// matches. Names compare without case and without a trailing dot.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match &self.host {
            HostMatch::Exact(name) => *name == host,
            HostMatch::Suffix(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            HostMatch::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
        }
    }
}

const HOST_HINT: &str = "use a host name (api.example.com), a wildcard (*.example.com), an IP address (192.0.2.7 or [2001:db8::1]), each with an optional :PORT";

impl FromStr for HostPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let shown: String = s.chars().take(80).collect();
        let bad = |why: &str| format!("bad host pattern '{shown}': {why}; {HOST_HINT}");
        if s.is_empty() || s.len() > 260 {
            return Err(bad("empty or longer than 260 characters"));
        }
        let (host, port) = split_port(s).map_err(|e| bad(&e))?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| bad("an unclosed '['"))?;
            let ip: std::net::Ipv6Addr = inner.parse().map_err(|_| bad("not an IPv6 address"))?;
            HostMatch::Ip(IpAddr::V6(ip))
        } else if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            HostMatch::Ip(IpAddr::V4(ip))
        } else if let Some(suffix) = host.strip_prefix("*.") {
            check_name(suffix).map_err(|e| bad(&e))?;
            if !suffix.contains('.') {
                return Err(bad("a wildcard needs at least two labels after '*.'"));
            }
            HostMatch::Suffix(suffix.to_ascii_lowercase())
        } else {
            check_name(host).map_err(|e| bad(&e))?;
            HostMatch::Exact(host.to_ascii_lowercase())
        };
        Ok(HostPattern { host, port })
    }
}

/// `HOST[:PORT]`, where an IPv6 host is in brackets.
fn split_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = match s.rfind(':') {
        Some(i) if !s.starts_with('[') || s[..i].ends_with(']') => (&s[..i], Some(&s[i + 1..])),
        _ => (s, None),
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err("an IPv6 address goes in brackets".to_owned());
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("the port '{p}' is not a number from 1 to 65535")),
        },
    };
    Ok((host, port))
}

/// A DNS name: labels of letters, digits and '-' (not at either end), 1 to 63 characters each,
/// 253 in all, not all digits in the last label.
fn check_name(name: &str) -> Result<(), String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return Err("a host name has 1 to 253 characters".to_owned());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "'{label}' is not a DNS label (letters, digits and '-', 1 to 63 characters; '*' only as '*.' at the start)"
            ));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("neither a host name nor an IPv4 address".to_owned());
    }
    Ok(())
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostMatch::Exact(name) => f.write_str(name)?,
            HostMatch::Suffix(suffix) => write!(f, "*.{suffix}")?,
            HostMatch::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            HostMatch::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Parse and check an allow-list as given (`--allow-host`), in order, without duplicates.
pub fn parse_hosts(hosts: &[String]) -> Result<Vec<HostPattern>, String> {
    let mut out: Vec<HostPattern> = Vec::new();
    for h in hosts {
        let p: HostPattern = h.trim().parse()?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.len() > MAX_ALLOW_HOSTS {
        return Err(format!(
            "{} hosts on one allow-list; at most {MAX_ALLOW_HOSTS} (use a wildcard such as *.example.com)",
            out.len()
        ));
    }
    Ok(out)
}

/// `POST /api/v1/apps/{app}/egress`: change one tier's policy. `mode` absent: keep it;
/// `allow_hosts` are added to the list (after emptying it with `clear_hosts`); `reset` forgets
/// the app's policy for the tier.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetEgressPolicy {
    pub tier: Option<Tier>,
    #[serde(default)]
    pub mode: Option<EgressMode>,
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default)]
    pub clear_hosts: bool,
    /// Back to the tier's default (alone).
    #[serde(default)]
    pub reset: bool,
}

/// One tier's policy as shown.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EgressPolicyInfo {
    pub tier: Tier,
    pub mode: EgressMode,
    pub allow_hosts: Vec<String>,
    /// The tier's built-in default (nothing set for this app).
    pub default: bool,
    /// Whether its instances get `HTTP_PROXY` (all but production with its default).
    pub proxied: bool,
    /// Who set it and when (RFC 3339), unless it is the default.
    pub set_by: Option<String>,
    pub set_at: Option<String>,
}

/// An app's policies, every tier.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EgressPolicies {
    pub app: String,
    pub tiers: Vec<EgressPolicyInfo>,
    /// Whether this machine keeps environments whose policy is not `allow` from going out
    /// directly (network namespaces), or only asks them to use the proxy.
    pub enforced: bool,
    /// When a change reaches running instances.
    pub takes_effect: String,
}

/// What the proxy decided about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EgressDecision {
    Allowed,
    Denied,
    /// Passed in `record` mode, but off the allow-list: `deny` would refuse it.
    WouldDeny,
}

impl EgressDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            EgressDecision::Allowed => "allowed",
            EgressDecision::Denied => "denied",
            EgressDecision::WouldDeny => "would-deny",
        }
    }
}

impl FromStr for EgressDecision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            EgressDecision::Allowed,
            EgressDecision::Denied,
            EgressDecision::WouldDeny,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
        .ok_or_else(|| format!("unknown egress decision '{s}'"))
    }
}

/// One outbound request.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EgressLogEntry {
    pub id: i64,
    /// RFC 3339, milliseconds.
    pub at: String,
    /// `CONNECT` for an HTTPS tunnel.
    pub method: String,
    pub host: String,
    pub port: u16,
    /// Without the query string (it may hold secrets); empty for CONNECT.
    pub path: String,
    pub decision: EgressDecision,
    /// The status the client got (the origin's, or the proxy's own 403/502/504).
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// `GET /api/v1/apps/{app}/envs/{env}/egress`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EgressLog {
    /// `APP/ENV`.
    pub env: String,
    pub tier: Tier,
    pub mode: EgressMode,
    pub entries: Vec<EgressLogEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn exact_names_match_without_case_or_trailing_dot() {
        assert!(p("api.example.com").matches("API.Example.com.", 443));
        assert!(p("api.example.com").matches("api.example.com", 80));
        assert!(!p("api.example.com").matches("x.api.example.com", 443));
        assert!(!p("api.example.com").matches("api.example.com.evil.net", 443));
    }

    #[test]
    fn wildcards_match_names_below_only() {
        let w = p("*.example.com");
        assert!(w.matches("a.example.com", 443));
        assert!(w.matches("a.b.example.com", 443));
        assert!(!w.matches("example.com", 443));
        assert!(!w.matches("badexample.com", 443));
        assert!(!w.matches("a.example.com.evil.net", 443));
    }

    #[test]
    fn ports_restrict_when_given() {
        assert!(p("localhost:8080").matches("localhost", 8080));
        assert!(!p("localhost:8080").matches("localhost", 8081));
        assert!(p("127.0.0.1").matches("127.0.0.1", 1));
        assert!(p("[::1]:443").matches("[::1]", 443));
        assert!(p("[::1]:443").matches("::1", 443));
        assert!(!p("[::1]:443").matches("::2", 443));
    }

    #[test]
    fn exact_listing_ignores_wildcards() {
        let policy = EgressPolicy {
            mode: EgressMode::Deny,
            hosts: vec![p("*.internal.example"), p("db.example.com:5432")],
        };
        assert!(policy.lists("a.internal.example", 80));
        assert!(!policy.lists_exactly("a.internal.example", 80));
        assert!(policy.lists_exactly("db.example.com", 5432));
        assert!(!policy.lists_exactly("db.example.com", 5433));
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for bad in [
            "",
            "*",
            "*.com",
            "a*.example.com",
            "exa mple.com",
            "-a.example.com",
            "example.com:0",
            "example.com:99999",
            "example.com:+80",
            "::1",
            "[::1",
            "[nothex]",
            "http://example.com",
            "example.com/path",
            "999.1.1.1",
        ] {
            let e = bad.parse::<HostPattern>().unwrap_err();
            assert!(e.starts_with("bad host pattern"), "{bad}: {e}");
        }
    }

    #[test]
    fn patterns_show_as_parsed() {
        for s in [
            "api.example.com",
            "*.example.com:443",
            "10.0.0.1:80",
            "[::1]",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(p("API.Example.COM").to_string(), "api.example.com");
    }

    #[test]
    fn defaults_deny_below_production() {
        for tier in Tier::ALL {
            let d = EgressPolicy::tier_default(tier);
            let want = if tier == Tier::Production {
                EgressMode::Allow
            } else {
                EgressMode::Deny
            };
            assert_eq!(d.mode, want, "{tier}");
            assert!(d.hosts.is_empty());
        }
    }

    #[test]
    fn modes_parse_or_name_the_choices() {
        assert_eq!("record".parse::<EgressMode>().unwrap(), EgressMode::Record);
        let e = "block".parse::<EgressMode>().unwrap_err();
        assert!(e.contains("deny, allow or record"), "{e}");
    }
}
