//! A real ACME server on loopback: Debian's `pebble`, with `pebble-challtestsrv` as its DNS
//! server answering 127.0.0.1 for every name. Its ports are picked before the daemon starts
//! (the daemon is told the directory URL), and it is started once the daemon's proxy ports are
//! known (pebble validates HTTP-01 and TLS-ALPN-01 there). Both are killed on drop.
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Ports and files chosen before the daemon starts.
pub struct PebblePlan {
    dir: tempfile::TempDir,
    listen: u16,
    management: u16,
    dns: u16,
    dns_management: u16,
    /// The CA that signed pebble's own HTTPS certificate (for 127.0.0.1 and localhost).
    pub ca_file: PathBuf,
    pub ca_pem: String,
}

pub struct Pebble {
    plan: PebblePlan,
    children: Vec<Child>,
}

/// A TCP port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port free for both TCP and UDP (DNS).
fn free_dns_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl PebblePlan {
    pub fn new() -> PebblePlan {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Turnout test CA for pebble");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        write("server.pem", &server.pem());
        write("server.key", &key.serialize_pem());
        let ca_file = write("ca.pem", &ca_cert.pem());
        PebblePlan {
            listen: free_port(),
            management: free_port(),
            dns: free_dns_port(),
            dns_management: free_port(),
            ca_file,
            ca_pem: ca_cert.pem(),
            dir,
        }
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen)
    }

    /// The daemon's environment: its ACME directory is this pebble, trusted through our CA,
    /// retried after a failure from `retry_secs`.
    pub fn daemon_env(&self, retry_secs: u32) -> Vec<(String, String)> {
        vec![
            ("TURNOUT_HTTPS_LISTEN".into(), "127.0.0.1:0".into()),
            ("TURNOUT_ACME_DIRECTORY".into(), self.directory()),
            (
                "TURNOUT_ACME_CA_CERT".into(),
                self.ca_file.display().to_string(),
            ),
            ("TURNOUT_ACME_EMAIL".into(), "ops@example.com".into()),
            ("TURNOUT_ACME_RETRY".into(), retry_secs.to_string()),
        ]
    }

    /// Start the mock DNS and pebble, validating on the daemon's `http` and `https` ports and
    /// issuing certificates valid for `validity_secs`.
    pub fn start(self, http: u16, https: u16, validity_secs: u64) -> Pebble {
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.listen),
            "managementListenAddress": format!("127.0.0.1:{}", self.management),
            "certificate": self.dir.path().join("server.pem"),
            "privateKey": self.dir.path().join("server.key"),
            "httpPort": http,
            "tlsPort": https,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "domainBlocklist": ["blocked.test"],
            "certificateValidityPeriod": validity_secs,
        }});
        let config_file = self.dir.path().join("pebble.json");
        std::fs::write(&config_file, config.to_string()).unwrap();
        let dir = self.dir.path().to_owned();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns)])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", self.dns_management)])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("start pebble-challtestsrv (Debian's pebble package)");
        let mut pebble = Pebble {
            children: vec![dns],
            plan: self,
        };
        pebble.wait_for(pebble.plan.dns_management, "pebble-challtestsrv");
        let server = Command::new("pebble")
            .arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{}", pebble.plan.dns)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            // Every order answers its challenges (none reuses an earlier authorization).
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("start pebble (Debian's pebble package)");
        pebble.children.push(server);
        pebble.wait_for(pebble.plan.listen, "pebble");
        pebble.wait_for(pebble.plan.management, "pebble's management interface");
        pebble
    }
}

impl Pebble {
    fn wait_for(&self, port: u16, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{what} did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pebble's issuing root (it makes a new one at each start), PEM.
    pub async fn root(&self) -> String {
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.plan.ca_pem.as_bytes()).unwrap(),
            )
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{}/roots/0", self.plan.management);
        let resp = client.get(&url).send().await.unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.text().await.unwrap()
    }

    pub fn log(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.plan.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- pebble log ---\n{}--- end of log ---", self.log());
        }
    }
}
