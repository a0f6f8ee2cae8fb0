//! Own certificates through the CLI: refused with what is wrong (key, chain, names, not PEM),
//! taken when whole (a wildcard for a host and for a wildcard domain), served by SNI, plain HTTP
//! redirected to HTTPS, HSTS when set, and removed; internal URLs stay plain HTTP throughout.
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::{cert_entry, https_get, plain_get};
use crate::support::{Daemon, Repo};

/// A root, an intermediate it signed, and files in `dir` for leaves the intermediate signs.
pub(super) struct Pki {
    pub(super) root: String,
    pub(super) intermediate: String,
    issuer: Issuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Pki {
    pub(super) fn new() -> Pki {
        let ca = |name: &str, parent: Option<&Issuer<'_, KeyPair>>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = match parent {
                Some(p) => params.signed_by(&key, p).unwrap(),
                None => params.self_signed(&key).unwrap(),
            };
            (cert.pem(), Issuer::new(params, key))
        };
        let (root, root_issuer) = ca("Own Root", None);
        let (intermediate, issuer) = ca("Own Intermediate", Some(&root_issuer));
        Pki {
            root,
            intermediate,
            issuer,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A leaf for `names`: (leaf PEM, key file).
    pub(super) fn leaf(&self, names: &[&str], tag: &str) -> (String, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (
            cert.pem(),
            self.file(&format!("{tag}.key"), &key.serialize_pem()),
        )
    }

    pub(super) fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn add(d: &Daemon, domain: &str, cert: &Path, key: &Path) -> std::process::Output {
    d.cli(&[
        "cert",
        "add",
        domain,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ])
}

#[track_caller]
fn refused(out: std::process::Output, wanted: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should be refused: {err}");
    for w in wanted {
        assert!(err.contains(w), "'{w}' not in: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_certificates_are_checked_served_redirected_and_removed() {
    let d = Daemon::start_with_env(&[("TURNOUT_HTTPS_LISTEN", "127.0.0.1:0")]);
    let https = d.https.unwrap();
    let repo = Repo::new("shop");
    d.create("shop", repo.path(), &[("prod", "main", "production")]);
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["domain", "add", "shop.example.com", "shop/prod"]);
    d.ok(&["domain", "add", "*.example.com", "shop/prod"]);
    let pki = Pki::new();
    let (wild, wild_key) = pki.leaf(&["*.example.com"], "wild");
    let full = pki.file(
        "full.pem",
        &format!("{wild}{}{}", pki.intermediate, pki.root),
    );

    // Refused, each saying what is wrong, for which domain, in which file.
    let (_, other_key) = pki.leaf(&["*.example.com"], "other");
    refused(
        add(&d, "shop.example.com", &full, &other_key),
        &["shop.example.com", "other.key", "does not match"],
    );
    let alone = pki.file("alone.pem", &wild);
    refused(
        add(&d, "shop.example.com", &alone, &wild_key),
        &[
            "the chain is incomplete: nothing in",
            "alone.pem issued",
            "fullchain.pem",
        ],
    );
    let (elsewhere, elsewhere_key) = pki.leaf(&["shop.example.org"], "elsewhere");
    let elsewhere = pki.file(
        "elsewhere.pem",
        &format!("{elsewhere}{}{}", pki.intermediate, pki.root),
    );
    refused(
        add(&d, "shop.example.com", &elsewhere, &elsewhere_key),
        &["does not cover shop.example.com", "shop.example.org"],
    );
    d.ok(&["domain", "add", "a.shop.example.com", "shop/prod"]);
    refused(
        add(&d, "a.shop.example.com", &full, &wild_key),
        &["does not cover", "one label"],
    );
    let garbage = pki.file("garbage.pem", "not a certificate\n");
    refused(
        add(&d, "shop.example.com", &garbage, &wild_key),
        &["garbage.pem", "PEM"],
    );
    assert!(
        cert_entry(&d, "shop.example.com").is_none(),
        "nothing refused was kept"
    );

    // A wildcard certificate serves a host below it and the wildcard domain itself.
    d.ok(&[
        "cert",
        "add",
        "shop.example.com",
        "--cert",
        full.to_str().unwrap(),
        "--key",
        wild_key.to_str().unwrap(),
    ]);
    d.ok(&[
        "cert",
        "add",
        "*.example.com",
        "--cert",
        full.to_str().unwrap(),
        "--key",
        wild_key.to_str().unwrap(),
    ]);
    let entry = cert_entry(&d, "shop.example.com").unwrap();
    assert_eq!(entry["source"], "manual");
    assert!(
        entry["issuer"]
            .as_str()
            .unwrap()
            .contains("Own Intermediate"),
        "{entry}"
    );
    assert_eq!(entry["served"], true);
    let key = d.home.path().join("certs/shop.example.com/key.pem");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        d.home
            .path()
            .join("certs/_.example.com/fullchain.pem")
            .exists()
    );

    for host in ["shop.example.com", "cart.example.com"] {
        let served = https_get(https, host, &pki.root, "/").await.unwrap();
        assert_eq!(
            served.leaf.names,
            vec!["*.example.com".to_owned()],
            "{host}"
        );
        assert_eq!(served.status, 200, "{host}");
        assert!(served.headers.get("strict-transport-security").is_none());
    }
    // Plain HTTP goes to HTTPS once a certificate exists; internal URLs stay plain.
    let (status, location) = plain_get(&d, "shop.example.com").await;
    assert_eq!(
        (status, location),
        (
            308,
            Some(format!("https://shop.example.com:{}/", https.port()))
        )
    );
    assert_eq!(plain_get(&d, "prod.shop.localhost").await, (200, None));

    // HSTS when set, bounded; the redirect can be turned off.
    let err = d.fails(&["domain", "tls", "shop.example.com", "--hsts", "100000000"]);
    assert!(err.contains("--hsts"), "{err}");
    d.ok(&[
        "domain",
        "tls",
        "shop.example.com",
        "--hsts",
        "31536000",
        "--redirect",
        "off",
    ]);
    let served = https_get(https, "shop.example.com", &pki.root, "/")
        .await
        .unwrap();
    assert_eq!(
        served.headers.get("strict-transport-security").unwrap(),
        "max-age=31536000"
    );
    assert_eq!(plain_get(&d, "shop.example.com").await, (200, None));
    let list = d.ok(&["domain", "list"]);
    assert!(list.contains("manual, expires"), "{list}");

    // The certificate belongs to the domain, not to its binding: a switch and a rollback keep
    // it.
    d.ok(&[
        "env",
        "create",
        "shop/stage",
        "--branch",
        "main",
        "--tier",
        "staging",
    ]);
    d.ok(&["deploy", "shop/stage"]);
    d.ok(&["domain", "switch", "shop.example.com", "shop/stage"]);
    let switched = https_get(https, "shop.example.com", &pki.root, "/")
        .await
        .unwrap();
    assert_eq!((switched.leaf, switched.status), (served.leaf.clone(), 200));
    d.ok(&["domain", "rollback", "shop.example.com"]);
    let back = https_get(https, "shop.example.com", &pki.root, "/")
        .await
        .unwrap();
    assert_eq!(back.leaf, served.leaf);

    // Audited, never with the key.
    let audit = d.ok(&["--json", "audit"]);
    assert!(audit.contains("cert.add"), "{audit}");
    assert!(!audit.contains("PRIVATE KEY"), "{audit}");

    // Removed: no certificate for the name in the handshake (a host below a wildcard domain
    // gets the wildcard's while that has one), plain HTTP served as before.
    d.ok(&["cert", "remove", "*.example.com"]);
    let cart = https_get(https, "cart.example.com", &pki.root, "/").await;
    assert!(cart.is_err());
    let shop = https_get(https, "shop.example.com", &pki.root, "/").await;
    assert!(shop.is_ok());
    d.ok(&["cert", "remove", "shop.example.com"]);
    let shop = https_get(https, "shop.example.com", &pki.root, "/").await;
    assert!(shop.is_err());
    assert_eq!(plain_get(&d, "shop.example.com").await, (200, None));
    assert!(!key.exists());
    let err = d.fails(&["cert", "remove", "shop.example.com"]);
    assert!(err.contains("no certificate"), "{err}");
}

/// `--acme-ca-cert` and `--mail-relay-ca` (both read by the same code) name what is wrong.
#[test]
fn a_ca_file_that_is_not_one_stops_the_daemon_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let cases = [
        (not_pem.clone(), "holds no certificate"),
        (dir.path().join("missing.pem"), "cannot read"),
    ];
    for flag in ["--acme-ca-cert", "--mail-relay-ca"] {
        for (file, says) in &cases {
            let home = tempfile::tempdir().unwrap();
            let out = std::process::Command::new(crate::support::BIN)
                .args([
                    "serve",
                    "--api-listen",
                    "127.0.0.1:0",
                    "--http-listen",
                    "127.0.0.1:0",
                ])
                .arg("--home")
                .arg(home.path())
                .arg(flag)
                .arg(file)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            assert!(!out.status.success());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(flag) && err.contains(&*file.to_string_lossy()) && err.contains(says),
                "{err}"
            );
        }
    }
}
