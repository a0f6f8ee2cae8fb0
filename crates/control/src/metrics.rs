//! Prometheus metrics, served at `/metrics` on the API listener.
//!
//! Request counters live in the data plane, one per (host, environment) pair, kept across
//! route changes (and across control planes) so counters survive switches and deploys; they
//! are read from it for each scrape. Switch and drain counters are control-plane events,
//! counted here.
//!
//! Series carry host names, so a reader sees only the series of apps their user has a role on
//! (an administrator sees all): `ControlPlane::metrics_text`.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use turnout_dataplane::StatsRow;
use turnout_model::{AppName, EnvName};
use turnout_proxy::{DrainOutcome, LATENCY_BUCKETS};

use crate::access::Principal;
use crate::error::ControlError;
use crate::plane::ControlPlane;

#[derive(Default)]
pub struct Metrics {
    /// (domain, action) -> count, action being switch or rollback.
    switches: Mutex<BTreeMap<(String, &'static str), u64>>,
    drains: Mutex<BTreeMap<(AppName, EnvName), DrainTotals>>,
    /// Host routes built and handed to the data plane.
    route_updates: AtomicU64,
}

#[derive(Default, Clone, Copy)]
struct DrainTotals {
    count: u64,
    seconds: f64,
    cut: u64,
    closed_streams: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn count_switch(&self, domain: &str, action: &'static str) {
        *lock(&self.switches)
            .entry((domain.to_owned(), action))
            .or_default() += 1;
    }

    /// `hosts` routes were built and handed to the data plane (what one change touched).
    pub fn count_route_updates(&self, hosts: usize) {
        self.route_updates
            .fetch_add(u64::try_from(hosts).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn count_drain(&self, app: &AppName, env: &EnvName, outcome: &DrainOutcome) {
        let mut drains = lock(&self.drains);
        let t = drains.entry((app.clone(), env.clone())).or_default();
        t.count += 1;
        t.seconds += outcome.waited.as_secs_f64();
        t.cut += outcome.cut as u64;
        t.closed_streams += outcome.closed_streams as u64;
    }

    /// Forget the switches of a removed domain (the data plane forgets its request counters
    /// with its route).
    pub fn forget_switches(&self, host: &str) {
        lock(&self.switches).retain(|(h, _), _| h != host);
    }

    /// The Prometheus text exposition format (version 0.0.4), with the series of the apps
    /// `visible` lets through. A domain's switches belong to the app its routes serve; one no
    /// route names any more is shown only when no route is hidden.
    /// `rows` are the data plane's request counters.
    pub fn render(&self, rows: Vec<StatsRow>, visible: impl Fn(&str) -> bool) -> String {
        let mut out = String::new();
        let (routes, hidden): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| visible(&r.app));
        out.push_str("# HELP turnout_http_responses_total Responses the proxy sent, by host, serving environment and status class.\n");
        out.push_str("# TYPE turnout_http_responses_total counter\n");
        for StatsRow {
            host,
            app,
            env,
            by_class,
            ..
        } in &routes
        {
            for (i, n) in by_class.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "turnout_http_responses_total{{host=\"{}\",app=\"{app}\",env=\"{env}\",class=\"{}xx\"}} {n}",
                    escape(host),
                    i + 1
                );
            }
        }
        out.push_str("# HELP turnout_http_request_duration_seconds Time from a request's arrival to its response head, by host and serving environment.\n");
        out.push_str("# TYPE turnout_http_request_duration_seconds histogram\n");
        for snap in &routes {
            let (host, app, env) = (&snap.host, &snap.app, &snap.env);
            let labels = format!("host=\"{}\",app=\"{app}\",env=\"{env}\"", escape(host));
            for (le, n) in LATENCY_BUCKETS.iter().zip(snap.cumulative_buckets.iter()) {
                let _ = writeln!(
                    out,
                    "turnout_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}"
                );
            }
            let total = snap.cumulative_buckets.last().copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "turnout_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {total}"
            );
            let _ = writeln!(
                out,
                "turnout_http_request_duration_seconds_sum{{{labels}}} {}",
                snap.latency_sum_seconds
            );
            let _ = writeln!(
                out,
                "turnout_http_request_duration_seconds_count{{{labels}}} {total}"
            );
        }
        out.push_str("# HELP turnout_domain_switches_total Switches and rollbacks of a domain between environments.\n");
        out.push_str("# TYPE turnout_domain_switches_total counter\n");
        for ((domain, action), n) in lock(&self.switches).iter() {
            if !hidden.is_empty() && !routes.iter().any(|r| &r.host == domain) {
                continue;
            }
            let _ = writeln!(
                out,
                "turnout_domain_switches_total{{domain=\"{}\",action=\"{action}\"}} {n}",
                escape(domain)
            );
        }
        out.push_str("# HELP turnout_route_updates_total Host routes the control plane built and handed to the data plane: the hosts each change touched (a deploy: its environment's host and its domains in maintenance; the others follow it).\n");
        out.push_str("# TYPE turnout_route_updates_total counter\n");
        let _ = writeln!(
            out,
            "turnout_route_updates_total {}",
            self.route_updates.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP turnout_drains_total Replaced instances drained (after a deploy or delete).\n",
        );
        out.push_str("# TYPE turnout_drains_total counter\n");
        out.push_str("# HELP turnout_drain_seconds_total Time spent waiting for in-flight requests of replaced instances.\n");
        out.push_str("# TYPE turnout_drain_seconds_total counter\n");
        out.push_str("# HELP turnout_drain_cut_total Requests a drain deadline cut (kind=request), and WebSockets and event streams it closed cleanly (kind=stream).\n");
        out.push_str("# TYPE turnout_drain_cut_total counter\n");
        for ((app, env), t) in lock(&self.drains)
            .iter()
            .filter(|((app, _), _)| visible(app.as_str()))
        {
            let labels = format!("app=\"{app}\",env=\"{env}\"");
            let _ = writeln!(out, "turnout_drains_total{{{labels}}} {}", t.count);
            let _ = writeln!(out, "turnout_drain_seconds_total{{{labels}}} {}", t.seconds);
            let _ = writeln!(
                out,
                "turnout_drain_cut_total{{{labels},kind=\"request\"}} {}",
                t.cut
            );
            let _ = writeln!(
                out,
                "turnout_drain_cut_total{{{labels},kind=\"stream\"}} {}",
                t.closed_streams
            );
        }
        out
    }
}

impl ControlPlane {
    /// The `/metrics` text `who` may read: every series for an administrator, otherwise those
    /// of the apps `who` has a role on.
    pub async fn metrics_text(&self, who: &Principal) -> Result<String, ControlError> {
        let rows = self.dataplane().stats().await;
        if who.is_admin() {
            return Ok(self.metrics().render(rows, |_| true));
        }
        let apps: Vec<AppName> = self
            .list_apps(who)
            .await?
            .into_iter()
            .map(|a| a.name)
            .collect();
        Ok(self
            .metrics()
            .render(rows, |app| apps.iter().any(|a| a.as_str() == app)))
    }
}

/// Label values are validated names, but escape per the exposition format anyway.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
