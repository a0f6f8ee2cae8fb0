//! Which ACME orders are due, and when the next one is.
use super::*;
use crate::tls::check::CertMeta;

fn domain(id: i64, name: &str, mode: TlsMode) -> DomainRow {
    DomainRow {
        id,
        name: name.parse().unwrap(),
        app: "shop".parse().unwrap(),
        env: "prod".parse().unwrap(),
        maintenance: None,
        created_at: 0,
        tls: TlsSettings {
            mode,
            ..TlsSettings::default()
        },
    }
}

fn cert(id: i64, name: &str, source: CertSource, life: Option<(i64, i64)>) -> CertRow {
    CertRow {
        domain_id: id,
        domain: name.parse().unwrap(),
        source,
        meta: life.map(|(not_before, not_after)| CertMeta {
            issuer: "CN=Test".into(),
            names: vec![name.into()],
            serial: "1".into(),
            not_before,
            not_after,
        }),
        last_error: None,
        failures: 0,
        next_attempt: None,
    }
}

#[test]
fn orders_are_due_without_an_acme_certificate_or_with_a_third_of_its_life_left() {
    let domains = [
        domain(1, "new.example.com", TlsMode::Acme),
        domain(2, "fresh.example.com", TlsMode::Acme),
        domain(3, "old.example.com", TlsMode::Acme),
        domain(4, "own.example.com", TlsMode::Acme),
        domain(5, "off.example.com", TlsMode::Off),
        domain(6, "failed.example.com", TlsMode::Acme),
    ];
    let now = 1_000_000;
    let mut failed = cert(6, "failed.example.com", CertSource::Acme, None);
    failed.next_attempt = Some(now + 120);
    let certs = [
        // 90 days from 10 days ago: renewed 30 days before expiry.
        cert(
            2,
            "fresh.example.com",
            CertSource::Acme,
            Some((now - 10 * 86_400, now + 80 * 86_400)),
        ),
        // 90 days, 29 left.
        cert(
            3,
            "old.example.com",
            CertSource::Acme,
            Some((now - 61 * 86_400, now + 29 * 86_400)),
        ),
        // Its owner's, and the domain turned to ACME since: ordered now.
        cert(
            4,
            "own.example.com",
            CertSource::Manual,
            Some((now - 86_400, now + 365 * 86_400)),
        ),
        cert(
            5,
            "off.example.com",
            CertSource::Acme,
            Some((now - 89 * 86_400, now + 86_400)),
        ),
        failed,
    ];
    let (due, next) = plan(&domains, &certs, now, |_| true);
    let due: Vec<&str> = due.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        due,
        ["new.example.com", "old.example.com", "own.example.com"]
    );
    assert_eq!(next, Some(now + 120), "the failed one's retry comes first");
    let fresh = cert_info(&certs[0], &domains[1].tls, now);
    assert_eq!(
        fresh.next_renewal,
        Some(format_timestamp(now + 50 * 86_400)),
        "a third of the lifetime before expiry"
    );
    assert!(fresh.served);

    // The fresh one's files were lost (a crash between writing the key and the chain): ordered
    // again at once; the failed one keeps waiting for its retry.
    let (due, _) = plan(&domains, &certs, now, |name| {
        !matches!(name.as_str(), "fresh.example.com" | "failed.example.com")
    });
    let due: Vec<&str> = due.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        due,
        [
            "new.example.com",
            "fresh.example.com",
            "old.example.com",
            "own.example.com"
        ]
    );
}
