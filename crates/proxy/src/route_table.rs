//! Host name -> target. A table is never changed after [`Proxy::apply`](crate::Proxy::apply);
//! a switch is a new table, so a request sees either the old routes or the new ones, never a
//! mix.
//!
//! The maps are persistent hash tries (`rpds`): cloning a table is O(1) and changing one host
//! in the clone copies only the few trie nodes on that host's path, so a new table shares every
//! other host's entry, in memory, with the one before it. A change of one host among 10,000
//! costs what it costs among 10, and dropping an old table frees only what it did not share.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rpds::HashTrieMapSync;
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
    /// Wherever this exact host (an environment's own) goes in the same table, with this
    /// entry's own counters and login: a domain follows its environment, so a deploy changes
    /// one entry however many domains are bound to it. A follow of a host that is not routed,
    /// or itself follows, routes nowhere.
    Follow(Arc<str>),
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
        self.direct().ok().and_then(|r| r.upstream())
    }

    /// The target as a request acts on it, or the host a follow follows.
    fn direct(&self) -> Result<Resolved<'_>, &Arc<str>> {
        match self {
            Target::Upstream(upstream) => Ok(Resolved::Upstream(upstream)),
            Target::Maintenance(m) => Ok(Resolved::Maintenance(m)),
            Target::Asleep(a) => Ok(Resolved::Asleep(a)),
            Target::Follow(to) => Err(to),
        }
    }
}

/// Where a request for a host goes, a follow resolved: a [`Target`] without `Follow`.
#[derive(Clone, Copy, Debug)]
pub enum Resolved<'a> {
    Upstream(&'a Arc<Upstream>),
    Maintenance(&'a Arc<Maintenance>),
    Asleep(&'a Arc<Asleep>),
}

impl<'a> Resolved<'a> {
    /// As [`Target::upstream`].
    pub fn upstream(self) -> Option<&'a Arc<Upstream>> {
        match self {
            Resolved::Upstream(upstream) => Some(upstream),
            Resolved::Maintenance(m) => m.health.as_ref().map(|(_, upstream)| upstream),
            Resolved::Asleep(_) => None,
        }
    }
}

/// What a request for a host finds: where it goes (a follow resolved), the host's counters and
/// its login.
pub(crate) struct Found<'a> {
    pub(crate) target: Resolved<'a>,
    pub(crate) stats: &'a Arc<RouteStats>,
    pub(crate) login: Option<&'a Arc<Login>>,
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
            Target::Follow(host) => f.debug_tuple("Follow").field(host).finish(),
        }
    }
}

/// A sleeping entry as a key: by identity, as requests wait on that very entry.
#[derive(Clone)]
struct AsleepKey(Arc<Asleep>);

impl PartialEq for AsleepKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for AsleepKey {}

impl Hash for AsleepKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

type Routes = HashTrieMapSync<Arc<str>, Route>;

/// Immutable snapshot of the routes: host name -> [`Target`]. Cloning it is O(1) (see the
/// module's documentation).
#[derive(Default, Clone)]
pub struct RouteTable {
    exact: Routes,
    /// `*.example.com` is stored under `example.com`; it matches every name below it at any
    /// depth, but not `example.com` itself.
    wildcard: Routes,
    /// Every sleeping entry the routes use, with how many routes use it. Changed only when a
    /// route to or from a sleeping entry is, so a table whose sleeping entries are those of
    /// the one before it shares this map with it (`ptr_eq`) and [`woken_by`](Self::woken_by)
    /// has nothing to walk.
    asleep: HashTrieMapSync<AsleepKey, usize>,
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
        let (routes, key) = match name.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix),
            None => (&mut self.exact, name.as_ref()),
        };
        let Some(Target::Asleep(old)) = routes.get(key).map(|route| route.target.clone()) else {
            routes.remove_mut(key);
            return;
        };
        routes.remove_mut(key);
        self.release_asleep(old);
    }

    fn insert_route(&mut self, host: &str, route: Route) {
        let name = normalize_host(host).into_owned();
        let (routes, key) = match name.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix),
            None => (&mut self.exact, name.as_str()),
        };
        let old = match routes.get(key).map(|route| &route.target) {
            Some(Target::Asleep(old)) => Some(old.clone()),
            _ => None,
        };
        if let Target::Asleep(new) = &route.target {
            let key = AsleepKey(new.clone());
            let uses = self.asleep.get(&key).copied().unwrap_or(0);
            self.asleep.insert_mut(key, uses + 1);
        }
        routes.insert_mut(Arc::from(key), route);
        if let Some(old) = old {
            self.release_asleep(old);
        }
    }

    /// One route fewer uses `asleep`.
    fn release_asleep(&mut self, asleep: Arc<Asleep>) {
        let key = AsleepKey(asleep);
        match self.asleep.get(&key).copied() {
            Some(uses) if uses > 1 => self.asleep.insert_mut(key, uses - 1),
            _ => {
                self.asleep.remove_mut(&key);
            }
        }
    }

    /// Find the target for a Host header or `:authority` value. An exact name beats a
    /// wildcard; a longer wildcard beats a shorter one.
    pub fn lookup(&self, host: &str) -> Option<Resolved<'_>> {
        self.find(host).map(|found| found.target)
    }

    /// The login a host requires, if it is protected.
    pub fn login(&self, host: &str) -> Option<&Arc<Login>> {
        self.find(host).and_then(|found| found.login)
    }

    /// The host's entry with its target resolved: a follow's target is that of the host it
    /// follows (one more lookup in this same table); counters and login stay the host's own.
    pub(crate) fn find(&self, host: &str) -> Option<Found<'_>> {
        let route = self.entry(host)?;
        let target = match route.target.direct() {
            Ok(target) => target,
            // One level only: a follow of a follow routes nowhere.
            Err(to) => self.exact.get(to.as_ref())?.target.direct().ok()?,
        };
        Some(Found {
            target,
            stats: &route.stats,
            login: route.login.as_ref(),
        })
    }

    /// The host's own entry, as inserted.
    fn entry(&self, host: &str) -> Option<&Route> {
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
        self.exact.size() + self.wildcard.size()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// Every upstream the table routes to, each once. Walks the whole table.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        let mut seen = HashSet::new();
        self.exact
            .values()
            .chain(self.wildcard.values())
            .filter_map(|route| route.target.upstream())
            .filter(move |upstream| seen.insert(Arc::as_ptr(upstream)))
    }

    /// Sleeping entries of this table that `next` no longer has: their waiting requests are
    /// let go once `next` is in force. Nothing to do when `next` kept this table's sleeping
    /// entries as they were (every change that neither puts a host to sleep nor wakes one);
    /// otherwise it walks the sleeping entries (one per sleeping environment), not the hosts.
    pub(crate) fn woken_by(&self, next: &RouteTable) -> Vec<Arc<Asleep>> {
        if self.asleep.ptr_eq(&next.asleep) {
            return Vec::new();
        }
        self.asleep
            .keys()
            .filter(|key| !next.asleep.contains_key(*key))
            .map(|key| key.0.clone())
            .collect()
    }

    /// Upstreams this table routes to that `next` no longer does: what to drain after
    /// `apply(next)` returned this table. Walks both tables: for callers that build whole
    /// tables (the data plane counts each instance's routes instead).
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
            .and_then(Resolved::upstream)
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

    fn asleep(label: &str) -> Arc<Asleep> {
        Arc::new(Asleep::new(label.into(), Duration::from_secs(1), || {}))
    }

    #[test]
    fn a_follow_routes_as_its_host_does_with_its_own_counters_and_login() {
        let (blue, green) = (
            Upstream::new(([127, 0, 0, 1], 1).into(), "blue"),
            Upstream::new(([127, 0, 0, 1], 2).into(), "green"),
        );
        let login = Arc::new(Login {
            realm: "shop/staging".into(),
            credentials: Default::default(),
        });
        let mut t = RouteTable::default();
        t.insert_protected("staging.shop.internal", blue.into(), Arc::default(), login);
        let domains: Vec<String> = (0..1000).map(|i| format!("d{i}.example.com")).collect();
        for d in &domains {
            t.insert(d, Target::Follow("staging.shop.internal".into()));
        }
        assert_eq!(routed(&t, "D7.example.com").as_deref(), Some("blue"));
        // The environment's login stays on its own host; a domain has its own counters.
        assert!(t.login("staging.shop.internal").is_some());
        assert!(t.login("d7.example.com").is_none());
        let own = t.find("d7.example.com").unwrap().stats.clone();
        assert!(!Arc::ptr_eq(&own, t.find("d8.example.com").unwrap().stats));

        // A new instance is one changed entry; every domain goes with it, in the same table.
        let mut next = t.clone();
        next.insert("staging.shop.internal", green.into());
        let changed = domains
            .iter()
            .filter(|d| !std::ptr::eq(t.entry(d).unwrap(), next.entry(d).unwrap()))
            .count();
        assert_eq!(changed, 0);
        assert!(
            domains
                .iter()
                .all(|d| routed(&next, d).as_deref() == Some("green"))
        );
        assert!(
            domains
                .iter()
                .all(|d| routed(&t, d).as_deref() == Some("blue"))
        );

        // A follow of a host that is not routed, or that itself follows, routes nowhere.
        next.insert("chain.example.com", Target::Follow("d1.example.com".into()));
        next.insert(
            "gone.example.com",
            Target::Follow("nowhere.internal".into()),
        );
        assert!(next.find("chain.example.com").is_none());
        assert!(next.find("gone.example.com").is_none());
    }

    #[test]
    fn a_change_shares_every_other_entry_with_the_table_before() {
        let hosts: Vec<String> = (0..10_000).map(|i| format!("d{i}.example.com")).collect();
        let blue = Upstream::new(([127, 0, 0, 1], 1).into(), "blue");
        let mut old = RouteTable::default();
        for host in &hosts {
            old.insert(host, blue.clone().into());
        }
        old.insert("*.example.com", blue.clone().into());
        let mut next = old.clone();
        next.insert("D17.example.com", Target::Asleep(asleep("shop/test")));
        let changed: Vec<&String> = hosts
            .iter()
            .filter(|h| !std::ptr::eq(old.entry(h).unwrap(), next.entry(h).unwrap()))
            .collect();
        assert_eq!(changed, ["d17.example.com"]);
        assert!(std::ptr::eq(
            old.entry("x.example.com").unwrap(),
            next.entry("x.example.com").unwrap()
        ));
        assert_eq!(routed(&old, "d17.example.com").as_deref(), Some("blue"));
        assert_eq!(routed(&next, "d17.example.com"), None);
        assert_eq!(next.len(), old.len());
    }

    #[test]
    fn sleeping_entries_are_woken_once_no_route_uses_them() {
        let up = Upstream::new(([127, 0, 0, 1], 1).into(), "up");
        let (a, b) = (asleep("shop/a"), asleep("shop/b"));
        let mut t0 = RouteTable::default();
        t0.insert("a.test", Target::Asleep(a.clone()));
        t0.insert("www.a.test", Target::Asleep(a.clone()));
        t0.insert("b.test", Target::Asleep(b.clone()));

        // A change that touches no sleeping route shares the sleeping entries: nothing to walk.
        let mut t1 = t0.clone();
        t1.insert("c.test", up.clone().into());
        assert!(t0.asleep.ptr_eq(&t1.asleep));
        assert!(t0.woken_by(&t1).is_empty());

        // One of a's two routes wakes: a still sleeps on the other.
        let mut t2 = t1.clone();
        t2.insert("a.test", up.clone().into());
        assert!(t1.woken_by(&t2).is_empty());

        // Its last route wakes (by removal), and b's by a new entry for the same host.
        let mut t3 = t2.clone();
        t3.remove("www.a.test");
        t3.insert("b.test", Target::Asleep(asleep("shop/b")));
        let woken = t2.woken_by(&t3);
        assert_eq!(woken.len(), 2);
        assert!(woken.iter().any(|w| Arc::ptr_eq(w, &a)));
        assert!(woken.iter().any(|w| Arc::ptr_eq(w, &b)));
        // The same entry put back is no wake.
        let mut t4 = t3.clone();
        let Some(Resolved::Asleep(b_again)) = t3.lookup("b.test") else {
            panic!("b.test is asleep");
        };
        t4.insert("b.test", Target::Asleep(b_again.clone()));
        assert!(t3.woken_by(&t4).is_empty());
    }
}
