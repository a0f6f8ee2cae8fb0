//! Header rewriting between the client and the instance.
//!
//! Two rules: connection-specific fields never cross the proxy (RFC 9110 §7.6.1), and the
//! instance learns who really asked, over what, for which host (X-Forwarded-*, Via).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};

use crate::error::ProxyError;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// RFC 9110 §7.6.1: the fields that are connection-specific by definition, dropped (with the
/// fields Connection names) from every message the proxy forwards. Proxy-Authenticate and
/// Proxy-Authorization are not in that list any more (they were in RFC 2616 §13.5.1) and pass
/// through.
pub(crate) const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// The fields the proxy writes itself in every request, replacing (or extending) the client's.
pub(crate) const REWRITTEN: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "via",
];

/// The pseudonym the proxy uses in Via (RFC 9110 §7.6.3).
pub(crate) const VIA_NAME: &str = "turnout";

/// The host the client asked for, exactly as it sent it (port included), for routing,
/// for the upstream's Host header and for X-Forwarded-Host.
///
/// An authority in the request target wins over the Host field: RFC 9112 §3.2.2 for HTTP/1.1
/// absolute-form, RFC 9113 §8.3.1 for HTTP/2's `:authority`.
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<HeaderValue, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host_field = hosts.next();
    // RFC 9112 §3.2: more than one Host field is a 400, whatever else the request says.
    if hosts.next().is_some() {
        return Err(ProxyError::InvalidHost);
    }
    if let Some(authority) = req.uri().authority() {
        // RFC 9110 §4.2.4: userinfo in an http(s) URI is invalid.
        if authority.as_str().contains('@') {
            return Err(ProxyError::InvalidHost);
        }
        return HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::InvalidHost);
    }
    match host_field {
        None => Err(ProxyError::MissingHost),
        Some(value) if value.is_empty() => Err(ProxyError::MissingHost),
        Some(value) if value.to_str().is_err() => Err(ProxyError::InvalidHost),
        Some(value) => Ok(value.clone()),
    }
}

/// True when an HTTP/1.1 client asks to switch protocols (RFC 9110 §7.8): an Upgrade field
/// and the "upgrade" connection option. `h2c` is refused: RFC 9113 §3.1 retired that
/// upgrade, and a tunnel would bypass per-request routing for the rest of the connection.
pub(crate) fn wants_upgrade(headers: &HeaderMap, version: Version) -> bool {
    if version != Version::HTTP_11 || !has_connection_option(headers, "upgrade") {
        return false;
    }
    let mut protocols = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(list_items)
        .peekable();
    protocols.peek().is_some() && !protocols.any(|p| p.eq_ignore_ascii_case("h2c"))
}

/// True when the upgrade being switched to is WebSocket (RFC 6455 §4.2.2), whose frames the
/// tunnel can follow to close it cleanly.
pub(crate) fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(list_items)
        .any(|p| p.eq_ignore_ascii_case("websocket"))
}

/// A server-sent-event stream (WHATWG HTML §9.2): a response that never ends by design.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Rewrite a client request's headers for the instance.
pub(crate) fn prepare_request_headers(
    headers: &mut HeaderMap,
    version: Version,
    host: &HeaderValue,
    client_ip: IpAddr,
    upgrade: bool,
) {
    // RFC 9110 §10.1.4: TE is hop-by-hop, but "trailers" is how a client says it can take
    // trailers (gRPC needs it); that stays true across the proxy, so it is re-sent.
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .flat_map(list_items)
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    remove_hop_by_hop(headers, upgrade);
    let mut options = Vec::new();
    if upgrade {
        options.push("upgrade");
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        // RFC 9110 §10.1.4: a sender of TE must also list it in Connection.
        options.push("te");
    }
    if !options.is_empty() {
        let value = HeaderValue::from_str(&options.join(", ")).expect("static tokens");
        headers.insert(header::CONNECTION, value);
    }

    if version == Version::HTTP_2 {
        join_cookies(headers);
    }

    // Keep Host as the client sent it: apps build absolute URLs and pick tenants from it.
    headers.insert(header::HOST, host.clone());

    let client_ip = client_ip.to_canonical().to_string();
    let forwarded_for = match joined(headers, &X_FORWARDED_FOR) {
        Some(earlier) => format!("{earlier}, {client_ip}"),
        None => client_ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    append_via(headers, version);
}

/// Rewrite an instance's response headers for the client. `upgrade` keeps the Upgrade field
/// and the "upgrade" option of a 101 answer to an upgrade request.
pub(crate) fn prepare_response_headers(headers: &mut HeaderMap, version: Version, upgrade: bool) {
    // RFC 9112 §6.1: Transfer-Encoding overrides Content-Length, and a forwarded message must
    // lose the Content-Length: the body was read by its chunks, and hyper frames it anew.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    remove_hop_by_hop(headers, upgrade);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    append_via(headers, version);
}

/// RFC 9110 §7.6.1: drop Connection, every field it names, and the fields of [`HOP_BY_HOP`].
fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(list_items)
        .filter(|option| !(keep_upgrade && option.eq_ignore_ascii_case("upgrade")))
        .filter_map(|option| HeaderName::from_bytes(option.as_bytes()).ok())
        .collect();
    for name in named {
        // A client cannot use Connection to make the proxy drop the Host it routes by.
        if name != header::HOST {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        if !(keep_upgrade && name == "upgrade") {
            headers.remove(name);
        }
    }
}

fn has_connection_option(headers: &HeaderMap, option: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(list_items)
        .any(|o| o.eq_ignore_ascii_case(option))
}

/// Items of a comma-separated list field (RFC 9110 §5.6.1), skipping empty ones.
fn list_items(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// All lines of a list field joined into one value, or `None` if it is absent.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// RFC 9113 §8.2.3: HTTP/2 may split Cookie into several fields; HTTP/1.1 needs one, joined
/// with "; ".
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// The request came over TLS: the instance is told so (`X-Forwarded-Proto: https`), so the
/// links and redirects it makes use https.
pub(crate) fn mark_secure(headers: &mut HeaderMap) {
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
}

/// RFC 9110 §7.6.3: each proxy appends the protocol it received the message with and a name.
fn append_via(headers: &mut HeaderMap, received: Version) {
    let entry = match received {
        Version::HTTP_09 => concat!("0.9 ", "turnout"),
        Version::HTTP_10 => concat!("1.0 ", "turnout"),
        Version::HTTP_2 => concat!("2 ", "turnout"),
        Version::HTTP_3 => concat!("3 ", "turnout"),
        _ => concat!("1.1 ", "turnout"),
    };
    debug_assert!(entry.ends_with(VIA_NAME));
    match joined(headers, &header::VIA) {
        Some(earlier) => {
            if let Ok(value) = HeaderValue::from_str(&format!("{earlier}, {entry}")) {
                headers.insert(header::VIA, value);
            }
        }
        None => {
            headers.insert(header::VIA, HeaderValue::from_static(entry));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn request_hop_by_hop_fields_are_dropped() {
        let mut h = headers(&[
            ("host", "a.test"),
            ("connection", "keep-alive, X-Secret, host"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        let host = HeaderValue::from_static("a.test:8080");
        prepare_request_headers(
            &mut h,
            Version::HTTP_11,
            &host,
            "127.0.0.1".parse().unwrap(),
            false,
        );
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "te",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be stripped");
        }
        assert_eq!(h["proxy-authorization"], "Basic x");
        assert_eq!(h["host"], "a.test:8080");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.test:8080");
        assert_eq!(h["via"], "1.1 turnout");
    }

    #[test]
    fn upgrade_and_te_trailers_survive() {
        let mut h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "trailers, deflate;q=0.5"),
        ]);
        let host = HeaderValue::from_static("a.test");
        assert!(wants_upgrade(&h, Version::HTTP_11));
        assert!(!wants_upgrade(&h, Version::HTTP_2));
        prepare_request_headers(
            &mut h,
            Version::HTTP_11,
            &host,
            "::ffff:10.1.2.3".parse().unwrap(),
            true,
        );
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade, te");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
    }

    #[test]
    fn h2c_is_not_an_upgrade() {
        let h = headers(&[
            ("connection", "upgrade, http2-settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(!wants_upgrade(&h, Version::HTTP_11));
        let h = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert!(!wants_upgrade(&h, Version::HTTP_11));
    }

    #[test]
    fn http2_cookies_are_joined() {
        let mut h = headers(&[("cookie", "a=1"), ("cookie", "b=2")]);
        let host = HeaderValue::from_static("a.test");
        prepare_request_headers(
            &mut h,
            Version::HTTP_2,
            &host,
            "127.0.0.1".parse().unwrap(),
            false,
        );
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
        assert_eq!(h["via"], "2 turnout");
    }

    #[test]
    fn response_hop_by_hop_fields_are_dropped() {
        let mut h = headers(&[
            ("connection", "close, x-internal"),
            ("x-internal", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authenticate", "Basic"),
            ("via", "1.0 app"),
        ]);
        prepare_response_headers(&mut h, Version::HTTP_11, false);
        for gone in [
            "connection",
            "x-internal",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} should be stripped");
        }
        assert_eq!(h["proxy-authenticate"], "Basic");
        assert_eq!(h["via"], "1.0 app, 1.1 turnout");

        let mut h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        prepare_response_headers(&mut h, Version::HTTP_11, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn host_comes_from_the_authority_or_the_host_field() {
        let req = Request::builder()
            .uri("/x")
            .header("host", "A.test:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).unwrap(), "A.test:8080");
        let req = Request::builder()
            .uri("http://b.test/x")
            .header("host", "a.test")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).unwrap(), "b.test");
        let req = Request::builder().uri("/x").body(()).unwrap();
        assert!(matches!(request_host(&req), Err(ProxyError::MissingHost)));
        let req = Request::builder()
            .uri("/x")
            .header("host", "a")
            .header("host", "b")
            .body(())
            .unwrap();
        assert!(matches!(request_host(&req), Err(ProxyError::InvalidHost)));
    }
}
