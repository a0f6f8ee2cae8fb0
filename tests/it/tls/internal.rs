//! Internal URLs over HTTPS: with `--https-listen`, `ENV.APP.localhost` is served with a
//! certificate of the home's own CA, which is name constrained to `localhost`, kept across
//! restarts, and never redirects plain HTTP.
use std::os::unix::fs::PermissionsExt;

use super::{https_get, plain_get};
use std::time::Duration;

use crate::support::{Daemon, Repo, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_urls_are_served_over_https_by_a_local_ca_limited_to_localhost() {
    let mut d = Daemon::start_with_env(&[("TURNOUT_HTTPS_LISTEN", "127.0.0.1:0")]);
    let repo = Repo::new("shop");
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    let ca_file = d.home.path().join("local-ca/ca.pem");
    let ca = std::fs::read_to_string(&ca_file).unwrap();

    let served = https_get(d.https.unwrap(), "prod.shop.localhost", &ca, "/")
        .await
        .unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.leaf.names, vec!["*.shop.localhost".to_owned()]);
    assert!(
        served.leaf.issuer.contains("Turnout local CA"),
        "{:?}",
        served.leaf
    );
    assert!(served.headers.get("strict-transport-security").is_none());
    // Plain HTTP still serves internal URLs: no redirect.
    assert_eq!(plain_get(&d, "prod.shop.localhost").await, (200, None));

    // The CA may only vouch for names under localhost, and its key is the daemon's alone.
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
    let der = tokio_rustls::rustls::pki_types::pem::PemObject::from_pem_slice(ca.as_bytes())
        .map(|c: tokio_rustls::rustls::pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let permitted: Vec<String> = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::NameConstraints(nc) => Some(nc),
            _ => None,
        })
        .expect("the local CA has name constraints")
        .permitted_subtrees
        .iter()
        .flatten()
        .map(|s| match &s.base {
            GeneralName::DNSName(name) => name.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(permitted, ["localhost"]);
    let key = d.home.path().join("local-ca/ca.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A new app gets its certificate at once; after a restart the same CA signs.
    let other = Repo::new("blog");
    d.create("blog", other.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "blog/prod"]);
    d.restart();
    assert_eq!(std::fs::read_to_string(&ca_file).unwrap(), ca);
    for host in ["prod.shop.localhost", "prod.blog.localhost"] {
        // Served over TLS at once; the instance answers once it is back.
        let (https, ca) = (d.https.unwrap(), &ca);
        eventually(
            &format!("{host} over HTTPS"),
            Duration::from_secs(30),
            || async move {
                let served = https_get(https, host, ca, "/").await.unwrap();
                (served.status == 200).then_some(())
            },
        )
        .await;
    }
    // A name no app has gets no certificate.
    assert!(
        https_get(d.https.unwrap(), "prod.nope.localhost", &ca, "/")
            .await
            .is_err()
    );
}
