//! HTTPS end to end: certificates from a real ACME server (pebble) by HTTP-01 and TLS-ALPN-01,
//! served by SNI, renewed, a refused order retried and shown; own certificates checked through
//! the CLI, served, redirected to and from, with HSTS; internal URLs still plain HTTP.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use serde_json::Value;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::support::{Daemon, eventually};

mod acme;
mod internal;
mod load;
mod own;
mod pebble;

/// What an HTTPS request got: the leaf the handshake served, and the answer.
pub struct Served {
    pub leaf: Leaf,
    pub status: u16,
    pub headers: hyper::HeaderMap,
}

/// A served certificate, as the tests check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub names: Vec<String>,
    pub issuer: String,
    pub serial: String,
}

impl Leaf {
    fn parse(der: &[u8]) -> Leaf {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        let names = cert
            .subject_alternative_name()
            .unwrap()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Leaf {
            names,
            issuer: cert.issuer().to_string(),
            serial: cert.tbs_certificate.serial.to_str_radix(16),
        }
    }
}

/// GET `path` over HTTPS from `addr`, asking for `host` by SNI and trusting only `roots_pem`
/// (so a served chain must lead to it).
pub async fn https_get(
    addr: SocketAddr,
    host: &str,
    roots_pem: &str,
    path: &str,
) -> Result<Served, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake for {host}: {e}"))?;
    let leaf = Leaf::parse(tls.get_ref().1.peer_certificates().unwrap()[0].as_ref());
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP over TLS: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", host)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let _ = resp.into_body().collect().await;
    Ok(Served {
        leaf,
        status,
        headers,
    })
}

/// One plain-HTTP GET through the proxy: status and `Location`.
pub async fn plain_get(d: &Daemon, host: &str) -> (u16, Option<String>) {
    let stream = tokio::net::TcpStream::connect(d.http).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", host)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (resp.status().as_u16(), location)
}

/// `cert list --json`'s entry for `domain`.
pub fn cert_entry(d: &Daemon, domain: &str) -> Option<Value> {
    d.json(&["cert", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["domain"] == domain)
        .cloned()
}

/// Wait until `domain` has a certificate from ACME (not the one with `old_serial`); its entry.
pub async fn issued(d: &Daemon, domain: &str, old_serial: Option<&str>, within: Duration) -> Value {
    eventually(&format!("a certificate for {domain}"), within, || async {
        let entry = cert_entry(d, domain)?;
        let fresh = entry["served"] == true && entry["serial"].as_str() != old_serial;
        fresh.then_some(entry)
    })
    .await
}
