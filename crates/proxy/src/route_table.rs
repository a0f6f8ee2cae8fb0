//! Host name -> target. A table is built whole by the control plane and never changed after
//! [`Proxy::apply`](crate::Proxy::apply); a switch is a new table, so a request sees either
//! the old routes or the new ones, never a mix.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::login::Login;
use crate::stats::RouteStats;
use crate::upstream::Upstream;

/// What a host routes to.
#[derive(Clone)]
pub enum Target {
    Upstream(Arc<Upstream>),
    /// Visitors get a 503 maintenance page; health checks still reach the instance.
    Maintenance(Arc<Maintenance>),
    /// The environment sleeps: a request asks for it to be woken and waits (see [`Asleep`]).
    Asleep(Arc<Asleep>),
}

/// A sleeping environment's route. The first request that finds it asks for a wake (`wake` is
/// called once, however many requests wait); every request then waits until a table without
/// this entry is applied (the environment is live again, or its route changed otherwise), up
/// to `wait`, and is then routed afresh. One that waited `wait` in vain gets a 503 saying so,
/// and the next request asks again.
pub struct Asleep {
    /// Names the environment in the 503 page, e.g. `shop/test`.
    pub label: String,
    pub wait: Duration,
    wanted: AtomicBool,
    woke: CancellationToken,
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Asleep {
    /// `wake` must not block: it is called on the request path (e.g. a send on an unbounded
    /// channel).
    pub fn new(label: String, wait: Duration, wake: impl Fn() + Send + Sync + 'static) -> Asleep {
        Asleep {
            label,
            wait,
            wanted: AtomicBool::new(false),
            woke: CancellationToken::new(),
            wake: Box::new(wake),
        }
    }

    /// Ask for a wake, unless a request already did.
    pub(crate) fn want(&self) {
        if !self.wanted.swap(true, Ordering::AcqRel) {
            (self.wake)();
        }
    }

    /// A request waited in vain: the next one asks again.
    pub(crate) fn gave_up(&self) {
        self.wanted.store(false, Ordering::Release);
    }

    /// Cancelled once a table without this entry is in force.
    pub(crate) fn woke(&self) -> &CancellationToken {
        &self.woke
    }
}

impl fmt::Debug for Asleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Asleep")
            .field("label", &self.label)
            .field("wait", &self.wait)
            .finish()
    }
}

/// A host in maintenance: every request gets `503 Service Unavailable` with `message` on a
/// small HTML page and `Retry-After`, except requests for the environment's health-check path,
/// which still go to its instance so monitors keep seeing the truth.
#[derive(Debug)]
pub struct Maintenance {
    pub message: String,
    pub retry_after: Duration,
    /// The health-check path and the instance that answers it, when the environment runs.
    pub health: Option<(String, Arc<Upstream>)>,
}

impl Target {
    /// The instance this target sends requests to, if any (for maintenance: the one that
    /// answers health checks).
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        match self {
            Target::Upstream(upstream) => Some(upstream),
            Target::Maintenance(m) => m.health.as_ref().map(|(_, upstream)| upstream),
            Target::Asleep(_) => None,
        }
    }
}

/// One entry of the table: where a host goes and the counters its requests update.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) target: Target,
    pub(crate) stats: Arc<RouteStats>,
    /// Set for a protected host: a request must log in before it reaches `target` (even a
    /// maintenance page or its health-check path).
    pub(crate) login: Option<Arc<Login>>,
}

impl From<Arc<Upstream>> for Target {
    fn from(upstream: Arc<Upstream>) -> Self {
        Target::Upstream(upstream)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Upstream(upstream) => {
                f.debug_tuple("Upstream").field(&upstream.label()).finish()
            }
            Target::Maintenance(m) => f.debug_tuple("Maintenance").field(&m.message).finish(),
            Target::Asleep(a) => f.debug_tuple("Asleep").field(&a.label).finish(),
        }
    }
}

/// Immutable snapshot of the routes: host name -> [`Target`].
#[derive(Default, Clone)]
pub struct RouteTable {
    /// Names are shared (`Arc<str>`) so a table is cloned, to change a host and apply the
    /// result, without copying a name.
    exact: HashMap<Arc<str>, Route>,
    /// `*.example.com` is stored under `example.com`; it matches every name below it at any
    /// depth, but not `example.com` itself.
    wildcard: HashMap<Arc<str>, Route>,
}

impl RouteTable {
    /// Route `host` (e.g. `shop.example.com` or `*.example.com`) to `target`, replacing any
    /// earlier target for the same name. The name is normalised like a Host header.
    pub fn insert(&mut self, host: &str, target: Target) {
        self.insert_with_stats(host, target, Arc::default());
    }

    /// Like [`insert`](Self::insert), counting the host's requests in `stats`, which the
    /// caller keeps across tables so counters survive switches.
    pub fn insert_with_stats(&mut self, host: &str, target: Target, stats: Arc<RouteStats>) {
        self.insert_route(
            host,
            Route {
                target,
                stats,
                login: None,
            },
        );
    }

    /// Like [`insert_with_stats`](Self::insert_with_stats), but requests must carry a valid
    /// login first: a token of `login` as Basic auth or as the cookie the login form sets.
    pub fn insert_protected(
        &mut self,
        host: &str,
        target: Target,
        stats: Arc<RouteStats>,
        login: Arc<Login>,
    ) {
        self.insert_route(
            host,
            Route {
                target,
                stats,
                login: Some(login),
            },
        );
    }

    /// Stop routing `host` (a name as given to `insert`, `*.` included for a wildcard).
    pub fn remove(&mut self, host: &str) {
        let name = normalize_host(host);
        match name.strip_prefix("*.") {
            Some(suffix) => self.wildcard.remove(suffix),
            None => self.exact.remove(name.as_ref()),
        };
    }

    fn insert_route(&mut self, host: &str, route: Route) {
        let name = normalize_host(host).into_owned();
        match name.strip_prefix("*.") {
            Some(suffix) => self.wildcard.insert(Arc::from(suffix), route),
            None => self.exact.insert(Arc::from(name), route),
        };
    }

    /// Find the target for a Host header or `:authority` value. An exact name beats a
    /// wildcard; a longer wildcard beats a shorter one.
    pub fn lookup(&self, host: &str) -> Option<&Target> {
        self.find(host).map(|route| &route.target)
    }

    /// The login a host requires, if it is protected.
    pub fn login(&self, host: &str) -> Option<&Arc<Login>> {
        self.find(host).and_then(|route| route.login.as_ref())
    }

    pub(crate) fn find(&self, host: &str) -> Option<&Route> {
        let name = normalize_host(host);
        if let Some(target) = self.exact.get(name.as_ref()) {
            return Some(target);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        // Walk the suffixes from the longest: for a.b.example.com try b.example.com, then
        // example.com, then com.
        let mut rest = name.as_ref();
        while let Some((_, suffix)) = rest.split_once('.') {
            if let Some(target) = self.wildcard.get(suffix) {
                return Some(target);
            }
            rest = suffix;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Every upstream the table routes to, each once.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        let mut seen = HashSet::new();
        self.exact
            .values()
            .chain(self.wildcard.values())
            .filter_map(|route| route.target.upstream())
            .filter(move |upstream| seen.insert(Arc::as_ptr(upstream)))
    }

    /// Sleeping entries of this table that `next` no longer has: their waiting requests are
    /// let go once `next` is in force.
    pub(crate) fn woken_by(&self, next: &RouteTable) -> Vec<Arc<Asleep>> {
        let asleep = |t: &RouteTable| -> Vec<Arc<Asleep>> {
            t.exact
                .values()
                .chain(t.wildcard.values())
                .filter_map(|route| match &route.target {
                    Target::Asleep(a) => Some(a.clone()),
                    _ => None,
                })
                .collect()
        };
        let old = asleep(self);
        if old.is_empty() {
            return old;
        }
        let kept: HashSet<*const Asleep> = asleep(next).iter().map(Arc::as_ptr).collect();
        old.into_iter()
            .filter(|a| !kept.contains(&Arc::as_ptr(a)))
            .collect()
    }

    /// Upstreams this table routes to that `next` no longer does: what to drain after
    /// `apply(next)` returned this table.
    pub fn retired_by(&self, next: &RouteTable) -> Vec<Arc<Upstream>> {
        let kept: HashSet<*const Upstream> = next.upstreams().map(Arc::as_ptr).collect();
        self.upstreams()
            .filter(|upstream| !kept.contains(&Arc::as_ptr(upstream)))
            .cloned()
            .collect()
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wildcards = self
            .wildcard
            .iter()
            .map(|(k, v)| (format!("*.{k}"), &v.target));
        let exact = self.exact.iter().map(|(k, v)| (k.to_string(), &v.target));
        f.debug_map().entries(exact.chain(wildcards)).finish()
    }
}

/// Host header -> route key: drop an optional `:port` (RFC 9110 §7.2 uri-host [":" port]),
/// lowercase (host names are case-insensitive, RFC 3986 §3.2.2), and drop the trailing dot of
/// a fully qualified name. Borrows when nothing needs changing, which is the common case.
pub(crate) fn normalize_host(raw: &str) -> Cow<'_, str> {
    let raw = raw.trim();
    let without_port = if raw.starts_with('[') {
        // IPv6 literal: the port, if any, follows the closing bracket.
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    let name = without_port.strip_suffix('.').unwrap_or(without_port);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> RouteTable {
        let mut table = RouteTable::default();
        for (i, (host, label)) in routes.iter().enumerate() {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16));
            table.insert(host, Target::Upstream(Upstream::new(addr, *label)));
        }
        table
    }

    fn routed(table: &RouteTable, host: &str) -> Option<String> {
        table
            .lookup(host)
            .and_then(Target::upstream)
            .map(|u| u.label().to_owned())
    }

    #[test]
    fn normalizes_port_case_and_trailing_dot() {
        let t = table(&[("Shop.Example.com", "shop")]);
        for host in [
            "shop.example.com",
            "SHOP.example.COM",
            "shop.example.com:8080",
            "shop.example.com.",
            "shop.example.com.:443",
        ] {
            assert_eq!(routed(&t, host).as_deref(), Some("shop"), "{host}");
        }
        assert_eq!(routed(&t, "example.com"), None);
        assert_eq!(routed(&t, "shop.example.co"), None);
    }

    #[test]
    fn ipv6_literals_keep_their_brackets() {
        let t = table(&[("[::1]", "v6")]);
        assert_eq!(routed(&t, "[::1]:8080").as_deref(), Some("v6"));
        assert_eq!(routed(&t, "[::1]").as_deref(), Some("v6"));
    }

    #[test]
    fn wildcard_matches_any_depth_but_not_the_apex() {
        let t = table(&[("*.example.com", "wild")]);
        assert_eq!(routed(&t, "a.example.com").as_deref(), Some("wild"));
        assert_eq!(routed(&t, "a.b.example.com:80").as_deref(), Some("wild"));
        assert_eq!(routed(&t, "example.com"), None);
        assert_eq!(routed(&t, "badexample.com"), None);
    }

    #[test]
    fn remove_takes_out_one_name_as_it_was_inserted() {
        let mut t = table(&[("*.example.com", "wild"), ("www.example.com", "exact")]);
        let before = t.clone();
        t.remove("WWW.example.com");
        assert_eq!(routed(&t, "www.example.com").as_deref(), Some("wild"));
        t.remove("*.example.com");
        assert_eq!(routed(&t, "www.example.com"), None);
        assert!(t.is_empty());
        // A clone is a table of its own: the one it came from still routes.
        assert_eq!(routed(&before, "www.example.com").as_deref(), Some("exact"));
    }

    #[test]
    fn exact_beats_wildcard_and_longer_wildcard_beats_shorter() {
        let t = table(&[
            ("*.example.com", "short"),
            ("*.qa.example.com", "long"),
            ("www.qa.example.com", "exact"),
        ]);
        assert_eq!(routed(&t, "www.qa.example.com").as_deref(), Some("exact"));
        assert_eq!(routed(&t, "x.qa.example.com").as_deref(), Some("long"));
        assert_eq!(routed(&t, "qa.example.com").as_deref(), Some("short"));
        assert_eq!(routed(&t, "x.example.com").as_deref(), Some("short"));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn upstreams_are_distinct_and_retired_ones_are_found() {
        let a = Upstream::new(([127, 0, 0, 1], 1).into(), "a");
        let b = Upstream::new(([127, 0, 0, 1], 2).into(), "b");
        let mut old = RouteTable::default();
        old.insert("a.test", a.clone().into());
        old.insert("*.a.test", a.clone().into());
        old.insert("b.test", b.clone().into());
        assert_eq!(old.upstreams().count(), 2);

        let mut next = RouteTable::default();
        next.insert("a.test", a.clone().into());
        next.insert("b.test", a.clone().into());
        let retired = old.retired_by(&next);
        assert_eq!(retired.len(), 1);
        assert!(Arc::ptr_eq(&retired[0], &b));
        assert!(RouteTable::default().is_empty());
    }
}
