//! Domains as the terminal shows them: the list, a switch or rollback, the history, maintenance.
use super::*;

pub fn domain_added(d: &DomainInfo, json: bool) {
    if json {
        return print_json(d);
    }
    outln!("{} -> {}/{}  ({})", d.domain, d.app, d.env, d.url);
    if !d.serving {
        outln!(
            "{}/{} is not running yet: requests get 503 until `turnout deploy {}/{}`",
            d.app,
            d.env,
            d.app,
            d.env
        );
    }
}

pub fn domains(domains: &[DomainInfo], json: bool) {
    if json {
        return print_json(&domains);
    }
    if domains.is_empty() {
        outln!("no domains: add one with `turnout domain add DOMAIN APP/ENV`");
        return;
    }
    let mut t = table(&["DOMAIN", "APP", "ENV", "STATE", "TLS", "URL"]);
    for d in domains {
        let state = match (&d.maintenance, d.serving) {
            (Some(_), _) => "maintenance",
            (None, true) => "serving",
            (None, false) => "not running",
        };
        t.add_row(vec![
            d.domain.to_string(),
            d.app.to_string(),
            d.env.to_string(),
            state.to_owned(),
            super::certs::tls_column(d),
            d.url.clone(),
        ]);
    }
    outln!("{t}");
}

pub fn switched(s: &SwitchInfo, json: bool) {
    if json {
        return print_json(s);
    }
    if s.action == "unchanged" {
        outln!(
            "{} already points to {}/{}; nothing changed",
            s.domain,
            s.app,
            s.to
        );
        return;
    }
    let verb = if s.action == "rollback" {
        "rolled back"
    } else {
        "switched"
    };
    outln!(
        "{} {verb}: {}/{} -> {}/{} (health check {:.1} ms, route live in {:.0} µs)",
        s.domain,
        s.app,
        s.from,
        s.app,
        s.to,
        s.health_check_ms,
        s.apply_us
    );
    outln!("{}", switch_hint(s));
}

/// What to run next after a switch or a rollback: a command that works from here.
fn switch_hint(s: &SwitchInfo) -> String {
    if s.action == "rollback" {
        format!(
            "{app}/{from} keeps running: `turnout domain switch {d} {app}/{from}` moves it forward again; `turnout domain history {d}` shows its earlier bindings",
            app = s.app,
            from = s.from,
            d = s.domain
        )
    } else {
        format!(
            "{}/{} keeps running: `turnout domain rollback {}` moves it back",
            s.app, s.from, s.domain
        )
    }
}

pub fn domain_history(events: &[DomainEvent], json: bool) {
    if json {
        return print_json(&events);
    }
    let mut t = table(&["WHEN", "WHO", "ACTION", "FROM", "TO"]);
    for e in events {
        let action = if e.rolled_back {
            format!("{} (rolled back)", e.action)
        } else {
            e.action.clone()
        };
        t.add_row(vec![
            e.at.clone(),
            e.actor.clone(),
            action,
            e.from.clone().unwrap_or_else(|| "-".into()),
            e.to.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    outln!("{t}");
}

pub fn maintenance(d: &DomainInfo, json: bool) {
    if json {
        return print_json(d);
    }
    match &d.maintenance {
        Some(message) => outln!(
            "{} is in maintenance: visitors get 503 with \"{message}\"",
            d.domain
        ),
        None => outln!("{} serves {}/{} again", d.domain, d.app, d.env),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_rollback_the_hint_goes_forward_not_further_back() {
        let mut s = SwitchInfo {
            domain: "shop.example.com".parse().unwrap(),
            app: "shop".parse().unwrap(),
            from: "staging".parse().unwrap(),
            to: "production".parse().unwrap(),
            action: "rollback".into(),
            health_check_ms: 1.0,
            apply_us: 10.0,
        };
        let hint = switch_hint(&s);
        assert!(
            hint.contains("`turnout domain switch shop.example.com shop/staging`"),
            "{hint}"
        );
        assert!(!hint.contains("domain rollback"), "{hint}");
        s.action = "switch".into();
        assert!(switch_hint(&s).contains("`turnout domain rollback shop.example.com`"));
    }
}
