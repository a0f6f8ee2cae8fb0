//! Relays over TLS, to servers whose certificates a private CA signed (`turnout serve
//! --mail-relay-ca`): STARTTLS and implicit TLS deliver, logged in, only after the handshake;
//! a certificate from a CA the daemon was not given fails the relay and sends nothing. A CA
//! file that is not one stops the daemon at start with an error naming it.
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::Value;

use super::{deploy, relay_decided, relay_staging_to, send};
use crate::mail::servers::mailer_repo;
use crate::support::Daemon;

/// A CA and a certificate for `localhost` it signed: (CA PEM, certificate PEM, key PEM).
fn ca_and_localhost(name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, name);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// An SMTP server over TLS on 127.0.0.1, Python's `ssl`: `implicit` (smtps) or offering
/// STARTTLS; it accepts AUTH PLAIN and writes each message as a JSON line (with whether TLS
/// carried it, and the login) to `out`.
struct TlsWorld {
    port: u16,
    out: std::path::PathBuf,
    child: Child,
}

const TLS_WORLD: &str = r#"
import json, socket, ssl, sys, threading
mode, cert, key, out = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)
def serve(conn):
    tls = False
    if mode == "implicit":
        try:
            conn = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            return
        tls = True
    f = conn.makefile("rwb")
    def say(s):
        f.write(s.encode()); f.flush()
    say("220 tls-world ESMTP\r\n")
    d = {"from": "", "to": [], "login": None}
    while True:
        line = f.readline()
        if not line:
            return
        text = line.decode().rstrip("\r\n"); upper = text.upper()
        if upper.startswith("EHLO"):
            say("250-tls-world\r\n" + ("" if tls else "250-STARTTLS\r\n") + "250 AUTH PLAIN\r\n")
        elif upper.startswith("STARTTLS"):
            say("220 go ahead\r\n")
            try:
                conn = ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                return
            tls = True
            f = conn.makefile("rwb")
        elif upper.startswith("AUTH"):
            d["login"] = {"tls": tls, "token": text.split()[-1]}; say("235 ok\r\n")
        elif upper.startswith("MAIL"):
            d["from"] = text[text.find("<") + 1:text.find(">")]; say("250 ok\r\n")
        elif upper.startswith("RCPT"):
            d["to"].append(text[text.find("<") + 1:text.find(">")]); say("250 ok\r\n")
        elif upper.startswith("DATA"):
            say("354 go on\r\n"); data = []
            while True:
                l = f.readline()
                if l in (b".\r\n", b""):
                    break
                data.append(l.decode())
            with open(out, "a") as o:
                o.write(json.dumps(dict(d, tls=tls, data="".join(data))) + "\n")
            say("250 queued\r\n")
        elif upper.startswith("QUIT"):
            say("221 bye\r\n"); return
        else:
            say("250 ok\r\n")
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

impl TlsWorld {
    fn start(dir: &Path, name: &str, implicit: bool, cert: &str, key: &str) -> TlsWorld {
        let (cert_file, key_file) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        let out = dir.join(format!("{name}.jsonl"));
        let mut child = Command::new("python3")
            .args([
                "-c",
                TLS_WORLD,
                if implicit { "implicit" } else { "starttls" },
            ])
            .args([&cert_file, &key_file, &out])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first.trim().parse().unwrap();
        TlsWorld { port, out, child }
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for TlsWorld {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_over_tls_trust_the_given_ca_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_localhost("Turnout test relay CA");
    let (_, stranger_cert, stranger_key) = ca_and_localhost("Someone else's CA");
    let ca_file = dir.path().join("relay-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let starttls = TlsWorld::start(dir.path(), "starttls", false, &cert, &key);
    let smtps = TlsWorld::start(dir.path(), "smtps", true, &cert, &key);
    let stranger = TlsWorld::start(dir.path(), "stranger", true, &stranger_cert, &stranger_key);

    let d = Daemon::start_with_env(&[("TURNOUT_MAIL_RELAY_CA", ca_file.to_str().unwrap())]);
    deploy(&d, &mailer_repo(), &[("staging", "staging")]);

    // STARTTLS: the login and the message only after the handshake.
    relay_staging_to(&d, &format!("smtp://mailer:pw@localhost:{}", starttls.port));
    send(&d, "staging", "to=bob@allowed.test&subject=Over+STARTTLS").await;
    let m = relay_decided(&d).await;
    assert_eq!(m["relay"]["state"], "relayed", "{m}");
    let got = starttls.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["tls"], true);
    assert_eq!(
        got[0]["login"]["tls"], true,
        "logged in before TLS: {got:?}"
    );
    assert_eq!(got[0]["to"], serde_json::json!(["bob@allowed.test"]));
    assert!(got[0]["data"].as_str().unwrap().contains("Over STARTTLS"));

    // Implicit TLS (smtps://).
    relay_staging_to(&d, &format!("smtps://mailer:pw@localhost:{}", smtps.port));
    send(&d, "staging", "to=bob@allowed.test&subject=Over+smtps").await;
    let m = relay_decided(&d).await;
    assert_eq!(m["relay"]["state"], "relayed", "{m}");
    assert_eq!(smtps.received().len(), 1);
    assert_eq!(smtps.received()[0]["login"]["tls"], true);

    // A certificate no trusted CA signed: the relay fails on the message, nothing is sent.
    relay_staging_to(
        &d,
        &format!("smtps://mailer:pw@localhost:{}", stranger.port),
    );
    send(&d, "staging", "to=bob@allowed.test&subject=To+a+stranger").await;
    let m = relay_decided(&d).await;
    assert_eq!(m["relay"]["state"], "failed", "{m}");
    let error = m["relay"]["error"].as_str().unwrap();
    assert!(error.contains("TLS"), "{error}");
    assert!(!error.contains("pw"), "the password shown: {error}");
    assert!(stranger.received().is_empty());
    assert!(!d.log().contains("mailer:pw"));
}
