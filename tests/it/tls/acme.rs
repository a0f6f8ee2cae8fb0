//! Certificates from pebble: issued by HTTP-01 (for a domain in maintenance) and by
//! TLS-ALPN-01, served by SNI and after a restart; renewed at a third of their lifetime; a
//! refused order recorded and retried with backoff.
use std::time::Duration;

use super::pebble::{Pebble, PebblePlan};
use super::{cert_entry, https_get, issued, plain_get};
use crate::support::{Daemon, Repo, eventually};

/// A daemon with an HTTPS listener whose ACME directory is a pebble started for it, issuing
/// certificates valid for `validity_secs`; an app `shop` with an environment `prod`.
fn daemon_and_pebble(validity_secs: u64) -> (Daemon, Pebble, Repo) {
    let plan = PebblePlan::new();
    let env = plan.daemon_env(1);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = Daemon::start_with_env(&env);
    let https = d.https.expect("the daemon serves HTTPS");
    let pebble = plan.start(d.http.port(), https.port(), validity_secs);
    let repo = Repo::new("shop");
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    (d, pebble, repo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_issued_by_http01_and_tls_alpn01_and_served_by_sni() {
    let (mut d, pebble, _repo) = daemon_and_pebble(90 * 86_400);
    let https = d.https.unwrap();

    // HTTP-01 for a domain in maintenance: the challenge path is answered before routing.
    d.ok(&["domain", "add", "web.example.com", "shop/prod"]);
    d.ok(&["domain", "maintenance", "web.example.com", "on"]);
    assert_eq!(plain_get(&d, "web.example.com").await.0, 503);
    d.ok(&["domain", "tls", "web.example.com", "--acme"]);
    let web = issued(&d, "web.example.com", None, Duration::from_secs(60)).await;
    assert_eq!(web["source"], "acme", "{web}");
    assert!(web["issuer"].as_str().unwrap().contains("Pebble"), "{web}");
    assert!(web["last_error"].is_null() && web["failures"] == 0, "{web}");
    assert!(web["next_renewal"].is_string(), "{web}");

    // TLS-ALPN-01, chosen per domain, answered on the HTTPS listener.
    d.ok(&["domain", "add", "alpn.example.com", "shop/prod"]);
    let err = d.fails(&[
        "domain",
        "tls",
        "alpn.example.com",
        "--challenge",
        "tls-alpn-01",
        "--hsts",
        "99999999999",
    ]);
    assert!(err.contains("--hsts"), "{err}");
    d.ok(&[
        "domain",
        "tls",
        "alpn.example.com",
        "--acme",
        "--challenge",
        "tls-alpn-01",
    ]);
    issued(&d, "alpn.example.com", None, Duration::from_secs(60)).await;

    // Each is served by SNI, and its chain leads to pebble's root.
    let root = pebble.root().await;
    for domain in ["web.example.com", "alpn.example.com"] {
        let served = https_get(https, domain, &root, "/").await.unwrap();
        assert_eq!(served.leaf.names, vec![domain.to_owned()]);
        assert!(
            served.leaf.issuer.contains("Pebble Intermediate"),
            "{:?}",
            served.leaf
        );
    }
    // Once a certificate exists, plain HTTP is redirected to HTTPS (the maintenance page
    // is for HTTPS visitors now).
    let (status, location) = plain_get(&d, "web.example.com").await;
    assert_eq!(status, 308);
    assert_eq!(
        location.as_deref(),
        Some(format!("https://web.example.com:{}/", https.port()).as_str())
    );

    let list = d.ok(&["domain", "list"]);
    assert!(list.contains("acme, expires"), "{list}");
    let key = d.home.path().join("certs/web.example.com/key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    let audit = d.ok(&["audit"]);
    assert!(
        audit.contains("cert.issue") && audit.contains("domain.tls"),
        "{audit}"
    );

    // A full stop and start: the new data plane gets the certificates from the home.
    let before = https_get(https, "web.example.com", &root, "/")
        .await
        .unwrap()
        .leaf;
    d.restart();
    let https = d.https.unwrap();
    let after = eventually(
        "the certificate after a restart",
        Duration::from_secs(20),
        || {
            let root = &root;
            async move { https_get(https, "web.example.com", root, "/").await.ok() }
        },
    )
    .await;
    assert_eq!(after.leaf, before, "the same certificate, not a new order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_renewed_when_a_third_of_its_lifetime_is_left() {
    // 30 s certificates: renewed 10 s before they expire.
    let (d, pebble, _repo) = daemon_and_pebble(30);
    let https = d.https.unwrap();
    d.ok(&[
        "domain",
        "add",
        "renew.example.com",
        "shop/prod",
        "--tls",
        "acme",
    ]);
    let first = issued(&d, "renew.example.com", None, Duration::from_secs(60)).await;
    let root = pebble.root().await;
    let served = https_get(https, "renew.example.com", &root, "/")
        .await
        .unwrap();
    assert_eq!(Some(served.leaf.serial.as_str()), first["serial"].as_str());

    let second = issued(
        &d,
        "renew.example.com",
        first["serial"].as_str(),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        second["not_after"].as_str() > first["not_after"].as_str(),
        "{first} then {second}"
    );
    let served = eventually(
        "the renewed certificate to be served",
        Duration::from_secs(10),
        || {
            let root = &root;
            let serial = second["serial"].as_str().unwrap().to_owned();
            async move {
                let served = https_get(https, "renew.example.com", root, "/")
                    .await
                    .ok()?;
                (served.leaf.serial == serial).then_some(served)
            }
        },
    )
    .await;
    assert_eq!(served.leaf.names, vec!["renew.example.com".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_order_is_recorded_and_retried_with_backoff() {
    let (d, _pebble, _repo) = daemon_and_pebble(90 * 86_400);
    d.ok(&[
        "domain",
        "add",
        "blocked.test",
        "shop/prod",
        "--tls",
        "acme",
    ]);
    let entry = eventually("two failed orders", Duration::from_secs(60), || async {
        let entry = cert_entry(&d, "blocked.test")?;
        (entry["failures"].as_u64()? >= 2).then_some(entry)
    })
    .await;
    let error = entry["last_error"].as_str().unwrap();
    assert!(error.contains("rejectedIdentifier"), "{entry}");
    assert!(
        entry["next_renewal"].is_string() && entry["served"] == false,
        "{entry}"
    );
    let list = d.ok(&["domain", "list"]);
    assert!(list.contains("ordering: error"), "{list}");
    let certs = d.ok(&["cert", "list"]);
    assert!(
        certs.contains("failed") && certs.contains("blocked.test"),
        "{certs}"
    );
    // `cert renew` asks for an order now; a manual domain has nothing to renew.
    d.ok(&["cert", "renew", "blocked.test"]);
    d.ok(&["domain", "add", "plain.example.com", "shop/prod"]);
    let err = d.fails(&["cert", "renew", "plain.example.com"]);
    assert!(err.contains("--acme"), "{err}");
    // Backoff: the retries slow down (1 s, 2 s, 4 s … with --acme-retry-min 1).
    let later = eventually("a third failure", Duration::from_secs(60), || async {
        let entry = cert_entry(&d, "blocked.test")?;
        (entry["failures"].as_u64()? >= 3).then_some(entry)
    })
    .await;
    assert!(
        later["next_renewal"].as_str() > entry["next_renewal"].as_str(),
        "{later}"
    );
}
