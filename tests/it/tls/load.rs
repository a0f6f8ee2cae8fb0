//! HTTPS under load: a domain switched and rolled back, and the daemon upgraded, while clients
//! make new TLS connections (HTTP/2 and HTTP/1.1) and reuse kept ones: no request fails, and
//! every handshake is served the domain's own certificate throughout. A data plane killed and
//! started again serves the same certificate.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_util::sync::CancellationToken;

use super::own::Pki;
use crate::support::{Daemon, Repo, eventually};

const DOMAIN: &str = "shop.example.com";

/// What the clients saw.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    /// HTTP/2 requests never sent because their connection was going away, sent again.
    resent: AtomicU64,
    /// What the test is doing (switching, upgrading), for the failures' messages.
    phase: Mutex<&'static str>,
    by_env: Mutex<std::collections::BTreeMap<String, u64>>,
    failures: Mutex<Vec<String>>,
}

impl Seen {
    fn fail(&self, what: String) {
        let phase = *self.phase.lock().unwrap();
        self.failures
            .lock()
            .unwrap()
            .push(format!("{phase}: {what}"));
    }

    fn now(&self, phase: &'static str) {
        *self.phase.lock().unwrap() = phase;
    }

    fn envs(&self) -> Vec<String> {
        self.by_env.lock().unwrap().keys().cloned().collect()
    }
}

/// A client trusting only `root_pem`, offering `alpn`.
fn connector(root_pem: &str, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

type H1 = hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>;

/// A new TLS connection, checked to be served `leaf` (DER); HTTP/2 when ALPN chose it.
async fn open(
    tls: &TlsConnector,
    addr: SocketAddr,
    leaf: &[u8],
) -> Result<
    (
        Option<H1>,
        Option<hyper::client::conn::http2::SendRequest<Empty<bytes::Bytes>>>,
    ),
    String,
> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let stream = tls
        .connect(ServerName::try_from(DOMAIN).unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].as_ref();
    if served != leaf {
        return Err("another certificate was served".to_owned());
    }
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("h2: {e}"))?;
        tokio::spawn(conn);
        Ok((None, Some(send)))
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("h1: {e}"))?;
        tokio::spawn(conn);
        Ok((Some(send), None))
    }
}

/// Count one answer: 200 from some environment of the app, or a failure.
async fn tally(
    seen: &Seen,
    what: &str,
    response: Result<hyper::Response<hyper::body::Incoming>, String>,
) -> bool {
    let response = match response {
        Ok(r) => r,
        Err(e) => {
            seen.fail(format!("{what}: {e}"));
            return false;
        }
    };
    let status = response.status();
    let close = response
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = match response.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(e) => {
            seen.fail(format!("{what}: body: {e}"));
            return false;
        }
    };
    let env = body.split(" env=").nth(1).and_then(|s| s.split(' ').next());
    match (status.as_u16(), env) {
        (200, Some(env)) => {
            seen.ok.fetch_add(1, Ordering::Relaxed);
            *seen
                .by_env
                .lock()
                .unwrap()
                .entry(env.to_owned())
                .or_default() += 1;
            !close
        }
        _ => {
            seen.fail(format!("{what}: {status} {body}"));
            false
        }
    }
}

fn request(h2: bool) -> hyper::Request<Empty<bytes::Bytes>> {
    let builder = if h2 {
        hyper::Request::get(format!("https://{DOMAIN}/"))
    } else {
        hyper::Request::get("/").header("host", DOMAIN)
    };
    builder.body(Empty::new()).unwrap()
}

/// Clients until `stop`: two make a new connection (a full handshake) per request, one with
/// HTTP/2 and one with HTTP/1.1; two keep theirs (opening another when the proxy closes one
/// with `Connection: close`, as a handover does after a response).
fn traffic(
    addr: SocketAddr,
    root: &str,
    leaf: Vec<u8>,
    seen: Arc<Seen>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (alpn, fresh) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], true),
        (&[b"http/1.1".as_slice()][..], true),
        (&[b"h2".as_slice(), b"http/1.1"][..], false),
        (&[b"http/1.1".as_slice()][..], false),
    ] {
        let tls = connector(root, alpn);
        let (leaf, seen, stop) = (leaf.clone(), seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut kept = None;
            while !stop.is_cancelled() {
                let (h1, h2) = match kept.take() {
                    Some(conn) => conn,
                    None => match open(&tls, addr, &leaf).await {
                        Ok(conn) => conn,
                        Err(e) => {
                            seen.fail(e);
                            continue;
                        }
                    },
                };
                let reuse = match (h1, h2) {
                    (Some(mut h1), _) => {
                        let answer = h1.send_request(request(false)).await;
                        let what = if fresh { "h1 new" } else { "h1 kept" };
                        let again = tally(&seen, what, answer.map_err(|e| format!("{e:?}"))).await;
                        (again && !fresh).then_some((Some(h1), None))
                    }
                    (_, Some(mut h2)) => {
                        let answer = match h2.try_send_request(request(true)).await {
                            // HTTP/2 (RFC 9113 §6.8): a request the client never sent because
                            // the connection was going away (a handover's GOAWAY) is sent again
                            // on a new connection, as every HTTP/2 client does. Only requests
                            // known unsent: anything that reached the server counts.
                            Err(e) if e.message().is_some() => {
                                seen.resent.fetch_add(1, Ordering::Relaxed);
                                kept = None;
                                continue;
                            }
                            answer => answer.map_err(|e| e.into_error()),
                        };
                        let what = if fresh { "h2 new" } else { "h2 kept" };
                        let again = tally(&seen, what, answer.map_err(|e| format!("{e:?}"))).await;
                        // A GOAWAY (a handover's) lets the request in flight finish; the next
                        // one goes on a new connection.
                        (again && !fresh && h2.is_ready()).then_some((None, Some(h2)))
                    }
                    _ => None,
                };
                kept = reuse;
            }
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switches_rollbacks_and_an_upgrade_under_https_load_fail_nothing_and_keep_the_certificate()
{
    let mut d = Daemon::start_with_env(&[("TURNOUT_HTTPS_LISTEN", "127.0.0.1:0")]);
    let https = d.https.unwrap();
    let repo = Repo::new("shop");
    d.create(
        "shop",
        repo.path(),
        &[
            ("prod", "main", "production"),
            ("staging", "main", "staging"),
        ],
    );
    d.ok(&["deploy", "shop/prod"]);
    d.ok(&["deploy", "shop/staging"]);
    d.ok(&["domain", "add", DOMAIN, "shop/prod"]);
    let pki = Pki::new();
    let (leaf_pem, key) = pki.leaf(&[DOMAIN], "shop");
    // A private CA's chain ends with its root.
    let chain = pki.file(
        "chain.pem",
        &format!("{leaf_pem}{}{}", pki.intermediate, pki.root),
    );
    d.ok(&[
        "cert",
        "add",
        DOMAIN,
        "--cert",
        chain.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes())
        .unwrap()
        .to_vec();

    let seen = Arc::new(Seen::default());
    let stop = CancellationToken::new();
    let tasks = traffic(https, &pki.root, leaf.clone(), seen.clone(), stop.clone());
    let moving = |n: u64| {
        let seen = seen.clone();
        async move {
            let from = seen.ok.load(Ordering::Relaxed);
            eventually("requests to go on", Duration::from_secs(30), || {
                let seen = seen.clone();
                async move { (seen.ok.load(Ordering::Relaxed) >= from + n).then_some(()) }
            })
            .await;
        }
    };
    seen.now("before");
    moving(50).await;
    seen.now("switching");
    for _ in 0..5 {
        d.ok(&["domain", "switch", DOMAIN, "shop/staging"]);
        moving(20).await;
        d.ok(&["domain", "rollback", DOMAIN]);
        moving(20).await;
    }
    seen.now("upgrading");
    d.upgrade();
    seen.now("after the upgrade");
    moving(50).await;
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    let failures = seen.failures.lock().unwrap().clone();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "{} answered",
        seen.ok.load(Ordering::Relaxed)
    );
    assert_eq!(seen.envs(), ["prod", "staging"], "traffic moved both ways");

    // The data plane killed: the one started in its place serves the same certificate.
    let [dataplane] = d.dataplanes()[..] else {
        panic!("not one data plane: {:?}", d.dataplanes());
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(dataplane).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let tls = connector(&pki.root, &[b"h2", b"http/1.1"]);
    eventually(
        "a new data plane serving the certificate",
        Duration::from_secs(20),
        || {
            let (tls, leaf, d) = (&tls, &leaf, &d);
            async move {
                let replaced = d.dataplanes().iter().any(|pid| *pid != dataplane);
                (replaced && open(tls, https, leaf).await.is_ok()).then_some(())
            }
        },
    )
    .await;
}
