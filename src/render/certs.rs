//! Certificates as the terminal shows them: `cert list`, `cert add`, `cert renew`, `domain tls`
//! and the TLS column of `domain list`.
use turnout_model::{CertInfo, DomainInfo, TlsMode};

use super::{print_json, table};

/// A date from an API timestamp (`2027-02-28T10:00:00Z` -> `2027-02-28`).
fn day(at: &str) -> &str {
    at.get(..10).unwrap_or(at)
}

/// An error cut to fit a table cell.
fn brief(error: &str) -> String {
    const MAX: usize = 60;
    match error.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &error[..cut]),
        None => error.to_owned(),
    }
}

/// `domain list`'s TLS column: `acme, expires 2027-02-28`, `renewing: error …`, `—`.
pub fn tls_column(d: &DomainInfo) -> String {
    let Some(cert) = &d.cert else {
        return "—".to_owned();
    };
    if d.tls.mode == TlsMode::Off {
        return "—".to_owned();
    }
    match (&cert.last_error, &cert.not_after) {
        (Some(error), Some(_)) => format!("renewing: error {}", brief(error)),
        (Some(error), None) => format!("ordering: error {}", brief(error)),
        (None, Some(not_after)) => format!("{}, expires {}", d.tls.mode, day(not_after)),
        (None, None) => format!("{}, ordering", d.tls.mode),
    }
}

pub fn list(certs: &[CertInfo], json: bool) {
    if json {
        return print_json(&certs);
    }
    if certs.is_empty() {
        outln!(
            "no certificates: add your own with `turnout cert add DOMAIN --cert FILE --key FILE`, or turn ACME on with `turnout domain tls DOMAIN --acme`"
        );
        return;
    }
    let mut t = table(&["DOMAIN", "SOURCE", "ISSUER", "NOT AFTER", "RENEWAL"]);
    for c in certs {
        let renewal = match (&c.last_error, &c.next_renewal) {
            (Some(error), next) => format!(
                "failed {}x: {}{}",
                c.failures,
                brief(error),
                next.as_ref()
                    .map(|n| format!(" (retry {n})"))
                    .unwrap_or_default()
            ),
            (None, Some(next)) => format!("next {next}"),
            (None, None) if c.source == turnout_model::CertSource::Acme => "now".to_owned(),
            (None, None) => "—".to_owned(),
        };
        t.add_row(vec![
            c.domain.to_string(),
            c.source.as_str().to_owned(),
            c.issuer.clone().unwrap_or_else(|| "—".to_owned()),
            c.not_after.clone().unwrap_or_else(|| "—".to_owned()),
            renewal,
        ]);
    }
    outln!("{t}");
}

pub fn added(c: &CertInfo, json: bool) {
    if json {
        return print_json(c);
    }
    outln!(
        "{} is served with its own certificate for {} (issuer {}, expires {})",
        c.domain,
        c.names.join(", "),
        c.issuer.as_deref().unwrap_or("?"),
        c.not_after.as_deref().unwrap_or("?")
    );
}

pub fn renewing(c: &CertInfo, json: bool) {
    if json {
        return print_json(c);
    }
    outln!(
        "{}: a certificate is being ordered; follow it with `turnout cert list`",
        c.domain
    );
}

pub fn domain_tls(d: &DomainInfo, json: bool) {
    if json {
        return print_json(d);
    }
    let hsts = d
        .tls
        .hsts_max_age
        .map_or_else(|| "off".to_owned(), |s| format!("max-age={s}"));
    outln!(
        "{}: tls {}, redirect to HTTPS {}, HSTS {hsts}, ACME challenge {}",
        d.domain,
        d.tls.mode,
        if d.tls.redirect { "on" } else { "off" },
        d.tls.challenge
    );
    if d.tls.mode == TlsMode::Acme && d.cert.as_ref().is_none_or(|c| c.not_after.is_none()) {
        outln!("a certificate is being ordered; follow it with `turnout cert list`");
    }
}
