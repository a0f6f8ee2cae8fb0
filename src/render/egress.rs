//! Outbound requests as the terminal shows them: `turnout egress policy|log`.
use super::*;
use turnout_model::{EgressDecision, EgressLog, EgressPolicies};

/// Every tier's policy (or only `tier`'s).
pub fn policies(p: &EgressPolicies, tier: Option<Tier>, json: bool) {
    if json {
        return print_json(p);
    }
    outln!("{}: outbound requests", p.app);
    let mut t = table(&["TIER", "MODE", "ALLOW-LIST", "PROXY", "SET"]);
    for info in p.tiers.iter().filter(|i| tier.is_none_or(|t| t == i.tier)) {
        let set = match (&info.set_by, &info.set_at) {
            (Some(by), Some(at)) => format!("{by}, {at}"),
            _ => "default".to_owned(),
        };
        let hosts = if info.allow_hosts.is_empty() {
            "-".to_owned()
        } else {
            info.allow_hosts.join(" ")
        };
        t.add_row(vec![
            info.tier.to_string(),
            info.mode.to_string(),
            hosts,
            if info.proxied { "yes" } else { "no" }.to_owned(),
            set,
        ]);
    }
    outln!("{t}");
    if p.enforced {
        outln!(
            "enforced: an environment whose policy is not allow has no way out but the egress proxy"
        );
    } else {
        outln!(
            "not enforced on this machine (no network namespaces): an app that ignores HTTP_PROXY goes out directly"
        );
    }
    outln!("takes effect: {}", p.takes_effect);
}

/// An environment's log, newest first.
pub fn log(l: &EgressLog, json: bool) {
    if json {
        return print_json(l);
    }
    outln!(
        "{} (tier {}, mode {}): outbound requests",
        l.env,
        l.tier,
        l.mode
    );
    if l.entries.is_empty() {
        outln!("none yet");
        return;
    }
    let mut t = table(&[
        "AT", "DECISION", "METHOD", "HOST", "PATH", "STATUS", "UP", "DOWN", "MS", "ERROR",
    ]);
    for e in &l.entries {
        t.add_row(vec![
            e.at.clone(),
            match e.decision {
                EgressDecision::WouldDeny => "would deny".to_owned(),
                d => d.as_str().to_owned(),
            },
            e.method.clone(),
            format!("{}:{}", e.host, e.port),
            e.path.clone(),
            e.status.to_string(),
            format_bytes(e.bytes_up),
            format_bytes(e.bytes_down),
            e.duration_ms.to_string(),
            e.error.clone().unwrap_or_default(),
        ]);
    }
    outln!("{t}");
}
