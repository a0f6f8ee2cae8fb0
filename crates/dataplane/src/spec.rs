//! What the control plane tells the data plane: each host's route, in a form that crosses a
//! process boundary. The data plane builds its [`RouteTable`](turnout_proxy::RouteTable) from
//! these, keeping one [`Upstream`](turnout_proxy::Upstream) per [`UpstreamSpec::id`] across
//! tables (its requests in flight, drain, idle connections and restart flag belong to it).
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One host's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub target: TargetSpec,
    /// The environment serving the host: the labels of its request counters.
    pub app: String,
    pub env: String,
    /// Set for a protected host: who may log in.
    pub login: Option<LoginSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum TargetSpec {
    Upstream(UpstreamSpec),
    /// A 503 page; requests for `health`'s path still reach its instance.
    Maintenance {
        message: String,
        retry_after_secs: u64,
        health: Option<(String, UpstreamSpec)>,
    },
    /// The environment sleeps: a request asks the control plane to wake it (see
    /// [`DataPlane::wakes`](crate::DataPlane::wakes)) and waits up to `wait_ms` for its route
    /// to change, then is routed afresh (or gets a 503 saying it did not wake in time).
    Asleep {
        wait_ms: u64,
    },
    /// Route as `host` (an environment's own host) routes, with this host's own counters and
    /// login: a domain follows its environment (running, asleep, stopped or with nothing
    /// deployed), so a deploy, stop, start, sleep or wake changes one route however many
    /// domains are bound to it.
    Follow {
        host: String,
    },
}

impl TargetSpec {
    /// The instances it sends requests to (for maintenance: the one answering health checks).
    pub fn upstreams(&self) -> impl Iterator<Item = &UpstreamSpec> {
        match self {
            TargetSpec::Upstream(u) => Some(u),
            TargetSpec::Maintenance { health, .. } => health.as_ref().map(|(_, u)| u),
            TargetSpec::Asleep { .. } | TargetSpec::Follow { .. } => None,
        }
        .into_iter()
    }
}

/// Where a link's listener is: 127.0.0.1 at `port`, inside the linking environment's
/// `namespace`, or on the host's loopback (`None`) where environments share the host's network.
/// Every request on it is routed as one environment's internal host (a [`LinkSpec`]'s).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkKey {
    pub namespace: Option<String>,
    pub port: u16,
}

/// A link's listener: where it is and the host its requests are routed as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub key: LinkKey,
    pub host: String,
}

/// One running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    /// Names this instance for as long as it runs (the same across control planes, so an
    /// adopted instance keeps its in-flight requests and connections in the data plane).
    pub id: String,
    pub addr: SocketAddr,
    /// Its network namespace (`/run/netns/NAME`), or `None` for the host's network.
    pub namespace: Option<String>,
    /// Names it in logs, e.g. `shop/staging@3f2a1c9`.
    pub label: String,
    pub response_timeout_ms: u64,
    /// How long a drain waits for its requests, and for its streams.
    pub drain_requests_ms: u64,
    pub drain_streams_ms: u64,
}

impl UpstreamSpec {
    pub fn drain_deadlines(&self) -> turnout_proxy::DrainDeadlines {
        turnout_proxy::DrainDeadlines {
            requests: Duration::from_millis(self.drain_requests_ms),
            streams: Duration::from_millis(self.drain_streams_ms),
        }
    }
}

/// Who may log in to a protected host: token hash (blake3 hex) -> expiry (milliseconds since
/// the Unix epoch; `None`: never).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSpec {
    pub realm: String,
    pub credentials: BTreeMap<String, Option<u64>>,
}

/// A host's HTTPS, apart from its route: a domain switch or rollback changes the route and never
/// this, so a domain keeps its certificate whichever environment serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// The certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1 or
    /// SEC1). A wildcard host (`*.example.com`) covers one label below its domain, as in X.509.
    pub chain_pem: String,
    pub key_pem: String,
    /// Answer plain-HTTP requests for the host with a 308 to `https://` (ACME's HTTP-01 path
    /// excepted).
    pub redirect: bool,
    /// Send `Strict-Transport-Security: max-age=N` on answers over HTTPS.
    pub hsts_max_age: Option<u64>,
}

/// An ACME challenge the proxy answers while an order waits for validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ChallengeSpec {
    /// HTTP-01: `GET /.well-known/acme-challenge/{token}` on the HTTP listener, for any host and
    /// before routing (so a domain in maintenance or not routed yet still validates), answers
    /// `key_authorization`.
    Http {
        token: String,
        key_authorization: String,
    },
    /// TLS-ALPN-01: a handshake for `host` offering the ALPN protocol `acme-tls/1` gets this
    /// self-signed certificate (with the acmeIdentifier extension), and nothing else.
    TlsAlpn {
        host: String,
        chain_pem: String,
        key_pem: String,
    },
}

impl ChallengeSpec {
    /// What identifies it among the challenges in force: its token, or its host.
    pub fn key(&self) -> String {
        match self {
            ChallengeSpec::Http { token, .. } => format!("http:{token}"),
            ChallengeSpec::TlsAlpn { host, .. } => format!("tls-alpn:{host}"),
        }
    }
}

/// How many responses one environment's hosts (its URL and its domains) gave, all together:
/// what the sleeper watches, one row per environment whatever its number of domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvResponses {
    pub app: String,
    pub env: String,
    pub responses: u64,
}

/// The request counters of one (host, app, env), as `/metrics` renders them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    pub host: String,
    pub app: String,
    pub env: String,
    /// `[1xx, 2xx, 3xx, 4xx, 5xx]`
    pub by_class: [u64; 5],
    /// Cumulative counts for each bound of `LATENCY_BUCKETS`, then `+Inf`.
    pub cumulative_buckets: Vec<u64>,
    pub latency_sum_seconds: f64,
}

/// What a drain did, as the control plane counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    pub waited_ms: u64,
    pub cut: usize,
    pub closed_streams: usize,
}

impl From<DrainReport> for turnout_proxy::DrainOutcome {
    fn from(r: DrainReport) -> Self {
        turnout_proxy::DrainOutcome {
            waited: Duration::from_millis(r.waited_ms),
            cut: r.cut,
            closed_streams: r.closed_streams,
        }
    }
}

impl From<turnout_proxy::DrainOutcome> for DrainReport {
    fn from(o: turnout_proxy::DrainOutcome) -> Self {
        DrainReport {
            waited_ms: u64::try_from(o.waited.as_millis()).unwrap_or(u64::MAX),
            cut: o.cut,
            closed_streams: o.closed_streams,
        }
    }
}

/// How the data plane process runs: given on its command line by the control plane that
/// starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPlaneConfig {
    /// Worker threads of the proxy; one per CPU when `None`.
    pub workers: Option<usize>,
    pub header_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_header_bytes: usize,
    pub upstream_connect_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DataPlaneConfig {
    pub fn new(proxy: &turnout_proxy::ProxyConfig, workers: Option<usize>) -> DataPlaneConfig {
        DataPlaneConfig {
            workers,
            header_read_timeout_ms: millis(proxy.header_read_timeout),
            idle_timeout_ms: millis(proxy.idle_timeout),
            max_header_bytes: proxy.max_header_bytes,
            upstream_connect_timeout_ms: millis(proxy.upstream_connect_timeout),
            shutdown_grace_ms: millis(proxy.shutdown_grace),
        }
    }

    pub fn proxy(&self) -> turnout_proxy::ProxyConfig {
        turnout_proxy::ProxyConfig {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_header_bytes: self.max_header_bytes,
            upstream_connect_timeout: Duration::from_millis(self.upstream_connect_timeout_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        }
    }
}
