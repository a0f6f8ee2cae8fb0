//! Certificates made here with rcgen: a private root, an intermediate, leaves.
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};

use super::*;

const FILES: Files<'static> = Files {
    cert: "cert.pem",
    key: "key.pem",
};

fn now() -> i64 {
    crate::store::now()
}

fn domain(name: &str) -> DomainName {
    name.parse().unwrap()
}

/// A CA's PEM and what signs with it.
fn ca(name: &str, parent: Option<&Issuer<'_, KeyPair>>) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = match parent {
        Some(parent) => params.signed_by(&key, parent).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf for `names` signed by `issuer`: (certificate PEM, key PEM).
fn leaf(names: &[&str], issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    leaf_with(names, issuer, |_| {})
}

fn leaf_with(
    names: &[&str],
    issuer: &Issuer<'_, KeyPair>,
    edit: impl FnOnce(&mut CertificateParams),
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    edit(&mut params);
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A root, an intermediate it signed, and the intermediate's issuer.
struct Pki {
    root: String,
    intermediate: String,
    issuer: Issuer<'static, KeyPair>,
}

fn pki() -> Pki {
    let (root, root_issuer) = ca("Test Root", None);
    let (intermediate, issuer) = ca("Test Intermediate", Some(&root_issuer));
    Pki {
        root,
        intermediate,
        issuer,
    }
}

#[test]
fn a_good_chain_with_its_intermediate_is_taken_and_described() {
    let pki = pki();
    let (cert, key) = leaf(&["shop.example.com"], &pki.issuer);
    let chain = format!("{cert}{}{}", pki.intermediate, pki.root);
    let meta = check(&domain("shop.example.com"), &chain, &key, FILES, now()).unwrap();
    assert_eq!(meta.names, vec!["shop.example.com".to_owned()]);
    assert!(meta.issuer.contains("Test Intermediate"), "{}", meta.issuer);
    assert!(meta.not_before <= now() && now() < meta.not_after);
    assert!(meta.renew_at() < meta.not_after && meta.renew_at() > meta.not_before);
}

#[test]
fn a_leaf_alone_whose_issuer_is_missing_is_an_incomplete_chain() {
    let pki = pki();
    let (cert, key) = leaf(&["shop.example.com"], &pki.issuer);
    let err = check(&domain("shop.example.com"), &cert, &key, FILES, now()).unwrap_err();
    assert!(
        err.contains("the chain is incomplete: nothing in cert.pem issued CN=shop.example.com")
            && err.contains("append the intermediate certificates (fullchain.pem)")
            && err.starts_with("shop.example.com: "),
        "{err}"
    );
    // The root without the intermediate between them: still a gap.
    let chain = format!("{cert}{}", pki.root);
    let err = check(&domain("shop.example.com"), &chain, &key, FILES, now()).unwrap_err();
    assert!(
        err.contains("nothing in cert.pem issued CN=shop.example.com"),
        "{err}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let pki = pki();
    let (cert, _) = leaf(&["shop.example.com"], &pki.issuer);
    let (_, other_key) = leaf(&["shop.example.com"], &pki.issuer);
    let chain = format!("{cert}{}{}", pki.intermediate, pki.root);
    let err = check(
        &domain("shop.example.com"),
        &chain,
        &other_key,
        FILES,
        now(),
    )
    .unwrap_err();
    assert!(
        err.contains("the key in key.pem does not match the certificate"),
        "{err}"
    );
}

#[test]
fn a_certificate_for_another_name_is_refused_naming_what_it_covers() {
    let pki = pki();
    let (cert, key) = leaf(&["other.example.com"], &pki.issuer);
    let chain = format!("{cert}{}{}", pki.intermediate, pki.root);
    let err = check(&domain("shop.example.com"), &chain, &key, FILES, now()).unwrap_err();
    assert!(
        err.contains("does not cover shop.example.com: it is for other.example.com"),
        "{err}"
    );
}

#[test]
fn a_wildcard_covers_one_label_but_not_two() {
    let pki = pki();
    let (cert, key) = leaf(&["*.example.com"], &pki.issuer);
    let chain = format!("{cert}{}{}", pki.intermediate, pki.root);
    for ok in ["shop.example.com", "*.example.com"] {
        check(&domain(ok), &chain, &key, FILES, now()).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for refused in ["a.shop.example.com", "example.com", "*.shop.example.com"] {
        let err = check(&domain(refused), &chain, &key, FILES, now()).unwrap_err();
        assert!(err.contains("does not cover"), "{refused}: {err}");
    }
    // A certificate naming the host does not make a wildcard domain's certificate.
    let (cert, key) = leaf(&["shop.example.com"], &pki.issuer);
    let chain = format!("{cert}{}{}", pki.intermediate, pki.root);
    assert!(check(&domain("*.example.com"), &chain, &key, FILES, now()).is_err());
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused() {
    let pki = pki();
    let (cert, key) = leaf_with(&["shop.example.com"], &pki.issuer, |p| {
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2021, 1, 1);
    });
    let chain = format!("{cert}{}{}", pki.intermediate, pki.root);
    let err = check(&domain("shop.example.com"), &chain, &key, FILES, now()).unwrap_err();
    assert!(err.contains("expired on 2021-01-01"), "{err}");
    let (cert, key) = leaf_with(&["shop.example.com"], &pki.issuer, |p| {
        p.not_before = date_time_ymd(2090, 1, 1);
        p.not_after = date_time_ymd(2091, 1, 1);
    });
    let chain = format!("{cert}{}{}", pki.intermediate, pki.root);
    let err = check(&domain("shop.example.com"), &chain, &key, FILES, now()).unwrap_err();
    assert!(err.contains("is not valid until 2090-01-01"), "{err}");
}

#[test]
fn garbage_instead_of_pem_is_refused_naming_the_file() {
    let pki = pki();
    let (cert, key) = leaf(&["shop.example.com"], &pki.issuer);
    let err = check(&domain("shop.example.com"), "hello", &key, FILES, now()).unwrap_err();
    assert!(err.contains("cert.pem holds no PEM certificate"), "{err}");
    let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
    let err = check(&domain("shop.example.com"), broken, &key, FILES, now()).unwrap_err();
    assert!(err.contains("cert.pem"), "{err}");
    let err = check(&domain("shop.example.com"), &cert, "hello", FILES, now()).unwrap_err();
    assert!(err.contains("key.pem holds no PEM private key"), "{err}");
}

#[test]
fn a_self_signed_leaf_is_its_own_complete_chain() {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["shop.example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    check(
        &domain("shop.example.com"),
        &cert.pem(),
        &key.serialize_pem(),
        FILES,
        now(),
    )
    .unwrap();
}
