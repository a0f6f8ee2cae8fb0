//! What the proxy decides: a tier's policy about a host name, then the addresses it resolves
//! to. No environment reaches Turnout itself (its ports on any of this machine's addresses)
//! whatever its policy says; an address of this machine or of a private, loopback or
//! link-local network only when the host is on the allow-list by its exact name or address
//! (a wildcard or `allow` mode is not enough).
use std::net::IpAddr;

use turnout_model::{EgressDecision, EgressMode, EgressPolicy};

/// The policy's word on `host:port`.
pub(super) fn decide(policy: &EgressPolicy, host: &str, port: u16) -> EgressDecision {
    let listed = || policy.lists(host, port);
    match policy.mode {
        EgressMode::Allow => EgressDecision::Allowed,
        EgressMode::Deny if listed() => EgressDecision::Allowed,
        EgressMode::Deny => EgressDecision::Denied,
        EgressMode::Record if listed() => EgressDecision::Allowed,
        EgressMode::Record => EgressDecision::WouldDeny,
    }
}

/// Why an address may not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Blocked {
    /// One of the daemon's own ports on an address of this machine.
    OwnPort,
    /// This machine, or a loopback, private, link-local or unspecified address, and the host
    /// is not listed exactly.
    Internal,
}

/// Whether `ip:port` may be reached; `exactly_listed`: the host is on the allow-list by its
/// exact name or address.
pub(super) fn blocked(
    ip: IpAddr,
    port: u16,
    own_ports: &[u16],
    exactly_listed: bool,
) -> Option<Blocked> {
    let ip = canonical(ip);
    let local = is_this_machine(ip);
    if own_ports.contains(&port) && local {
        return Some(Blocked::OwnPort);
    }
    if (local || is_internal(ip)) && !exactly_listed {
        return Some(Blocked::Internal);
    }
    None
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Loopback, private, shared (carrier-grade NAT), link-local, unspecified, broadcast or
/// multicast: nothing an app should reach on the open internet.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 0
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Whether `ip` is one of this machine's own addresses (binding a socket to it works).
fn is_this_machine(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use turnout_model::HostPattern;

    fn policy(mode: EgressMode, hosts: &[&str]) -> EgressPolicy {
        EgressPolicy {
            mode,
            hosts: hosts
                .iter()
                .map(|h| h.parse::<HostPattern>().unwrap())
                .collect(),
        }
    }

    #[test]
    fn deny_passes_only_the_list() {
        let p = policy(EgressMode::Deny, &["api.example.com", "*.sandbox.example"]);
        assert_eq!(decide(&p, "api.example.com", 443), EgressDecision::Allowed);
        assert_eq!(
            decide(&p, "pay.sandbox.example", 443),
            EgressDecision::Allowed
        );
        assert_eq!(decide(&p, "example.com", 443), EgressDecision::Denied);
        let empty = policy(EgressMode::Deny, &[]);
        assert_eq!(
            decide(&empty, "api.example.com", 443),
            EgressDecision::Denied
        );
    }

    #[test]
    fn record_passes_everything_and_marks_what_deny_would_refuse() {
        let p = policy(EgressMode::Record, &["api.example.com"]);
        assert_eq!(decide(&p, "api.example.com", 443), EgressDecision::Allowed);
        assert_eq!(
            decide(&p, "other.example.com", 443),
            EgressDecision::WouldDeny
        );
    }

    #[test]
    fn allow_passes_everything() {
        let p = policy(EgressMode::Allow, &[]);
        assert_eq!(decide(&p, "anything.example", 80), EgressDecision::Allowed);
    }

    #[test]
    fn the_daemons_ports_are_refused_on_local_addresses_even_when_listed() {
        let own = [7000, 8080];
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(
                blocked(ip, 7000, &own, true),
                Some(Blocked::OwnPort),
                "{ip}"
            );
        }
        // Another port of loopback: only when listed exactly.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(blocked(lo, 9000, &own, false), Some(Blocked::Internal));
        assert_eq!(blocked(lo, 9000, &own, true), None);
        // The same port number on a host elsewhere is someone else's.
        let public: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(blocked(public, 8080, &own, false), None);
    }

    #[test]
    fn private_and_link_local_addresses_need_an_exact_listing() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.1.2.3",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(blocked(ip, 80, &[], false), Some(Blocked::Internal), "{ip}");
            assert_eq!(blocked(ip, 80, &[], true), None, "{ip}");
        }
        for ip in ["198.51.100.7", "2001:db8::1", "8.8.8.8"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(blocked(ip, 80, &[], false), None, "{ip}");
        }
    }
}
