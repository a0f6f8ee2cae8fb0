//! Protected hosts: a request must log in with a token the control plane allowed before
//! anything of it reaches the instance.
//!
//! A token comes as the password of HTTP Basic auth (RFC 7617) or as the `turnout_token`
//! cookie (RFC 6265) that the login form at `/.turnout/login` sets. It is checked against the
//! blake3 hashes in the route's [`Login`], which is part of the immutable route table: no
//! store, no lock. Whatever logged the request in is removed before forwarding, so a token
//! never reaches the app.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::body::{ResponseBody, UpstreamBody};
use crate::error::{local_page, local_response};
use crate::forward::escape_html;

/// The cookie the login form sets.
pub(crate) const COOKIE_NAME: &str = "turnout_token";
/// Where the login form is shown (GET) and sent (POST) on a protected host.
pub(crate) const LOGIN_PATH: &str = "/.turnout/login";
/// Clears the login cookie on a protected host.
pub(crate) const LOGOUT_PATH: &str = "/.turnout/logout";
/// The login form is two short fields; anything larger is not ours.
const MAX_FORM_BYTES: usize = 8 * 1024;
/// How long a client may take to send the login form's body.
const FORM_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// RFC 7617 §2 says base64 (RFC 4648 §4) with padding; some clients omit it.
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Who may see a protected host: the blake3 hex hash (lower-case, 64 chars:
/// `blake3::hash(token.as_bytes()).to_hex()`) of every token allowed, with its expiry.
#[derive(Clone, Default)]
pub struct Login {
    /// Shown in `WWW-Authenticate` and on the login page, e.g. `shop/staging`.
    pub realm: String,
    /// Token hash -> expires at (`None`: never).
    pub credentials: HashMap<String, Option<SystemTime>>,
}

/// What a token is worth on a protected host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Valid,
    /// Known, but past its expiry: still one of ours, so it is stripped all the same.
    Expired,
    Unknown,
}

impl Login {
    /// The key is a hash of the secret, so the map lookup reveals nothing useful through its
    /// timing.
    fn verdict(&self, token: &[u8], now: SystemTime) -> Verdict {
        let hash = blake3::hash(token).to_hex();
        match self.credentials.get(hash.as_str()) {
            None => Verdict::Unknown,
            Some(None) => Verdict::Valid,
            Some(Some(expires)) if now < *expires => Verdict::Valid,
            Some(Some(_)) => Verdict::Expired,
        }
    }

    fn admits(&self, token: &[u8], now: SystemTime) -> bool {
        self.verdict(token, now) == Verdict::Valid
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("realm", &self.realm)
            .field("credentials", &self.credentials.len())
            .finish()
    }
}

/// Why a protected host answers a request itself instead of forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// Not logged in: the 401 login page.
    Refused(Refusal),
    /// `/.turnout/login` or `/.turnout/logout`: answered by the proxy, open to anyone.
    Endpoint,
}

/// Why a request was refused; for the log only, the client is told the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoToken,
    TokenNotAccepted,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::NoToken => "no token",
            Refusal::TokenNotAccepted => "token not accepted",
        }
    }
}

/// Whether a request may pass a protected host's login: `Ok` when it carries a valid token
/// (forward it, minus the credentials), else why the proxy answers it itself.
pub(crate) fn gate(login: &Login, path: &str, headers: &HeaderMap) -> Result<(), Held> {
    if path == LOGIN_PATH || path == LOGOUT_PATH {
        return Err(Held::Endpoint);
    }
    let now = SystemTime::now();
    let mut presented = false;
    let basic = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(basic_password);
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| token_cookies(value.as_bytes()).map(<[u8]>::to_vec));
    for token in basic.chain(cookies) {
        presented = true;
        if login.admits(&token, now) {
            return Ok(());
        }
    }
    Err(Held::Refused(if presented {
        Refusal::TokenNotAccepted
    } else {
        Refusal::NoToken
    }))
}

/// Remove what the proxy consumes before a request goes upstream: every `turnout_token`
/// cookie (on any host: a host that stopped being protected still receives the browser's
/// cookie, and it holds an API token), and, on a protected host, an `Authorization: Basic`
/// whose password is one of the host's tokens. Other cookies and an app's own Authorization
/// pass untouched.
pub(crate) fn strip_credentials(headers: &mut HeaderMap, login: Option<&Login>) {
    strip_token_cookies(headers);
    let Some(login) = login else { return };
    let now = SystemTime::now();
    let ours = |value: &HeaderValue| {
        basic_password(value).is_some_and(|token| login.verdict(&token, now) != Verdict::Unknown)
    };
    if !headers.get_all(header::AUTHORIZATION).iter().any(ours) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|value| !ours(value))
        .cloned()
        .collect();
    headers.remove(header::AUTHORIZATION);
    for value in kept {
        headers.append(header::AUTHORIZATION, value);
    }
}

/// Drop the `turnout_token` pairs from the Cookie field(s), keeping the other pairs as they
/// were, in one field (RFC 6265 §5.4: a user agent sends one; RFC 9113 §8.2.3: HTTP/2 ones are
/// joined for HTTP/1.1 with "; "); the field goes when nothing is left.
fn strip_token_cookies(headers: &mut HeaderMap) {
    let mentions_ours = |value: &HeaderValue| {
        value
            .as_bytes()
            .windows(COOKIE_NAME.len())
            .any(|w| w == COOKIE_NAME.as_bytes())
    };
    if !headers.get_all(header::COOKIE).iter().any(mentions_ours) {
        return;
    }
    // Pairs without `=` (a browser sends a cookie with an empty name as its bare value) are
    // somebody else's too.
    let ours = |pair: &[u8]| {
        pair.iter()
            .position(|b| *b == b'=')
            .is_some_and(|eq| pair[..eq].trim_ascii() == COOKIE_NAME.as_bytes())
    };
    let kept = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty() && !ours(pair))
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    headers.remove(header::COOKIE);
    if kept.is_empty() {
        return;
    }
    // The pairs came out of valid field values, so their join is one too.
    if let Ok(value) = HeaderValue::from_bytes(&kept) {
        headers.insert(header::COOKIE, value);
    }
}

/// The password of `Authorization: Basic base64(user-id ":" password)` (RFC 7617 §2). The
/// user-id cannot contain a colon, so the password is everything after the first one. The
/// scheme is case-insensitive (RFC 9110 §11.1).
fn basic_password(value: &HeaderValue) -> Option<Vec<u8>> {
    let value = value.as_bytes();
    let (scheme, rest) = value.split_at_checked(5)?;
    if !scheme.eq_ignore_ascii_case(b"basic") || rest.first() != Some(&b' ') {
        return None;
    }
    let decoded = BASIC.decode(rest.trim_ascii()).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let password = &decoded[colon + 1..];
    (!password.is_empty()).then(|| password.to_vec())
}

/// `name=value` pairs of a Cookie field (RFC 6265 §4.2.1: `pair *( ";" SP pair )`), read
/// leniently: any whitespace around the separators, pairs without `=` skipped.
fn cookie_pairs(field: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    field.split(|b| *b == b';').filter_map(|pair| {
        let eq = pair.iter().position(|b| *b == b'=')?;
        Some((pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii()))
    })
}

/// The values of the `turnout_token` cookies in a Cookie field, without the optional
/// DQUOTEs of RFC 6265 §4.1.1.
fn token_cookies(field: &[u8]) -> impl Iterator<Item = &[u8]> {
    cookie_pairs(field)
        .filter(|(name, _)| *name == COOKIE_NAME.as_bytes())
        .map(|(_, value)| {
            value
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(value)
        })
        .filter(|value| !value.is_empty())
}

/// A token the login form can put in a cookie: RFC 6265 §4.1.1 cookie-octets only (Turnout's
/// tokens are `tnt_` and hex digits).
fn cookie_safe(token: &[u8]) -> bool {
    !token.is_empty()
        && token
            .iter()
            .all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
}

/// Where to send the browser after logging in: a path on this host, else `/`. `//host` and
/// `/\host` are scheme-relative to a browser (WHATWG URL treats `\` like `/`), and browsers
/// drop tabs and newlines before parsing, so only visible ASCII without `\` is accepted.
fn safe_next(next: &str) -> &str {
    let bytes = next.as_bytes();
    let relative_path = bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'\\');
    if relative_path { next } else { "/" }
}

/// The fields of an `application/x-www-form-urlencoded` body (WHATWG URL §5.1): `+` is a
/// space, `%XX` a byte. Later duplicates are ignored.
fn form_field(body: &[u8], name: &str) -> Option<Vec<u8>> {
    body.split(|b| *b == b'&')
        .filter_map(|pair| {
            let (key, value) = match pair.iter().position(|b| *b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &[][..]),
            };
            (percent_decode(key) == name.as_bytes()).then(|| percent_decode(value))
        })
        .next()
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                // Not an escape: kept as it is, like the WHATWG decoder does.
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// The answer of a protected host to a request that is not forwarded.
pub(crate) async fn answer(
    login: &Login,
    held: Held,
    parts: &Parts,
    body: Option<UpstreamBody>,
) -> Response<ResponseBody> {
    let path = parts.uri.path();
    match held {
        Held::Refused(_) => {
            let next = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
            login_page(login, StatusCode::UNAUTHORIZED, next, None)
        }
        Held::Endpoint if path == LOGOUT_PATH => match parts.method {
            Method::GET | Method::HEAD | Method::POST => logout(),
            _ => method_not_allowed("GET, HEAD, POST"),
        },
        Held::Endpoint => match parts.method {
            Method::GET | Method::HEAD => {
                let next = parts
                    .uri
                    .query()
                    .and_then(|q| form_field(q.as_bytes(), "next"))
                    .and_then(|next| String::from_utf8(next).ok());
                login_page(login, StatusCode::OK, next.as_deref().unwrap_or("/"), None)
            }
            Method::POST => log_in(login, parts, body).await,
            _ => method_not_allowed("GET, HEAD, POST"),
        },
    }
}

/// `POST /.turnout/login`: check the form's token, and on success set the cookie and send the
/// browser on to `next` with `303 See Other` (RFC 9110 §15.4.4: the follow-up is a GET).
async fn log_in(
    login: &Login,
    parts: &Parts,
    body: Option<UpstreamBody>,
) -> Response<ResponseBody> {
    let form_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return local_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "turnout: the login form is sent as application/x-www-form-urlencoded\n".to_owned(),
        );
    }
    let form = match body {
        None => Bytes::new(),
        Some(body) => {
            let read = Limited::new(body, MAX_FORM_BYTES).collect();
            match tokio::time::timeout(FORM_READ_TIMEOUT, read).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                    return local_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "turnout: the login form is too large\n".to_owned(),
                    );
                }
                Ok(Err(_)) => {
                    return local_response(
                        StatusCode::BAD_REQUEST,
                        "turnout: the login form could not be read\n".to_owned(),
                    );
                }
                Err(_) => {
                    return local_response(
                        StatusCode::REQUEST_TIMEOUT,
                        "turnout: the login form was not sent in time\n".to_owned(),
                    );
                }
            }
        }
    };
    let next = form_field(&form, "next").and_then(|next| String::from_utf8(next).ok());
    let next = safe_next(next.as_deref().unwrap_or("/"));
    let token = form_field(&form, "token").unwrap_or_default();
    // A token that cannot be a cookie value cannot have been issued by Turnout.
    if !cookie_safe(&token) || !login.admits(&token, SystemTime::now()) {
        return login_page(
            login,
            StatusCode::UNAUTHORIZED,
            next,
            Some("That token is not valid for this environment."),
        );
    }
    let token = std::str::from_utf8(&token).expect("cookie-safe bytes are ASCII");
    let mut response = local_response(StatusCode::SEE_OTHER, String::new());
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(next).expect("a safe next is visible ASCII"),
    );
    // No `Secure`: internal URLs are plain http. HttpOnly keeps the app's scripts from reading
    // it; SameSite=Lax keeps other sites from sending it along with their requests.
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Lax"
        ))
        .expect("a cookie-safe token"),
    );
    response
}

fn logout() -> Response<ResponseBody> {
    let mut response = local_response(StatusCode::SEE_OTHER, String::new());
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/"));
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_static("turnout_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut response = local_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "turnout: method not allowed here\n".to_owned(),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The login page: the form, and for a 401 the `WWW-Authenticate` challenge (RFC 9110
/// §11.6.1, RFC 7617 §2) so that scripts and curl can use Basic auth instead.
fn login_page(
    login: &Login,
    status: StatusCode,
    next: &str,
    problem: Option<&str>,
) -> Response<ResponseBody> {
    let realm = escape_html(&login.realm);
    let next = escape_html(safe_next(next));
    let problem = problem
        .map(|p| format!("<p style=\"color: #b00\">{}</p>\n", escape_html(p)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Log in: {realm}</title></head>\n\
         <body style=\"font-family: sans-serif; margin: 4em auto; max-width: 40em\">\n\
         <h1>Log in</h1>\n<p><b>{realm}</b> is protected. Log in with a Turnout token that may see it.</p>\n\
         {problem}\
         <form method=\"post\" action=\"{LOGIN_PATH}\">\n\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\n\
         <label>Token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label>\n\
         <button type=\"submit\">Log in</button>\n\
         </form>\n</body></html>\n"
    );
    let mut response = local_page(status, html);
    let headers = response.headers_mut();
    // The page is the proxy's, not the app's: no scripts, no framing (clickjacking the form),
    // and the form posts only here.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, challenge(&login.realm));
    }
    response
}

/// `Basic realm="turnout: <realm>", charset="UTF-8"`; the realm is a quoted-string (RFC 9110
/// §5.6.4), so `"` and `\` are escaped and control characters, which a field cannot carry,
/// dropped.
fn challenge(realm: &str) -> HeaderValue {
    let mut quoted = String::with_capacity(realm.len() + 8);
    for c in realm.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => {}
            c => quoted.push(c),
        }
    }
    HeaderValue::from_bytes(
        format!("Basic realm=\"turnout: {quoted}\", charset=\"UTF-8\"").as_bytes(),
    )
    .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"turnout\", charset=\"UTF-8\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tnt_0123456789abcdef0123456789abcdef01234567";

    fn login(entries: &[(&str, Option<SystemTime>)]) -> Login {
        Login {
            realm: "shop/staging".to_owned(),
            credentials: entries
                .iter()
                .map(|(token, expiry)| {
                    (blake3::hash(token.as_bytes()).to_hex().to_string(), *expiry)
                })
                .collect(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn basic(user_and_password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_and_password)
        )
    }

    fn password(value: &str) -> Option<String> {
        basic_password(&HeaderValue::from_str(value).unwrap())
            .map(|p| String::from_utf8(p).unwrap())
    }

    #[test]
    fn basic_password_is_everything_after_the_first_colon() {
        assert_eq!(password(&basic("anyone:secret")).as_deref(), Some("secret"));
        assert_eq!(password(&basic(":a:b")).as_deref(), Some("a:b"));
        assert_eq!(password(&basic("x:")).as_deref(), None);
        assert_eq!(password(&basic("no colon")), None);
        // The scheme is case-insensitive; padding may be left out.
        let value = basic("u:secret").replace("Basic", "bAsIc");
        assert_eq!(password(&value).as_deref(), Some("secret"));
        assert_eq!(
            password(value.trim_end_matches('=')).as_deref(),
            Some("secret")
        );
        assert_eq!(password("Bearer dTpzZWNyZXQ="), None);
        assert_eq!(password("BasicdTpzZWNyZXQ="), None);
        assert_eq!(password("Basic !!!"), None);
        assert_eq!(password("Basic"), None);
    }

    #[test]
    fn token_cookies_are_found_among_others() {
        let tokens = |field: &str| -> Vec<String> {
            token_cookies(field.as_bytes())
                .map(|t| String::from_utf8(t.to_vec()).unwrap())
                .collect()
        };
        assert_eq!(tokens("a=1; turnout_token=abc; b=2"), ["abc"]);
        assert_eq!(tokens("turnout_token=\"abc\""), ["abc"]);
        assert_eq!(tokens("a=1;turnout_token = x ;turnout_token=y"), ["x", "y"]);
        assert!(tokens("xturnout_token=abc; turnout_tokenx=abc; Turnout_Token=abc").is_empty());
        assert!(tokens("turnout_token=; turnout_token").is_empty());
        assert!(tokens("").is_empty());
    }

    #[test]
    fn valid_expired_and_unknown_tokens() {
        let now = SystemTime::now();
        let l = login(&[
            ("forever", None),
            ("later", Some(now + Duration::from_secs(60))),
            ("earlier", Some(now - Duration::from_secs(1))),
        ]);
        assert_eq!(l.verdict(b"forever", now), Verdict::Valid);
        assert_eq!(l.verdict(b"later", now), Verdict::Valid);
        assert_eq!(l.verdict(b"earlier", now), Verdict::Expired);
        assert_eq!(l.verdict(b"other", now), Verdict::Unknown);
        assert_eq!(l.verdict(b"", now), Verdict::Unknown);
        assert_eq!(
            format!("{l:?}"),
            "Login { realm: \"shop/staging\", credentials: 3 }"
        );
    }

    #[test]
    fn gate_accepts_basic_or_cookie_and_opens_the_endpoints() {
        let l = login(&[(TOKEN, None)]);
        let cookie = format!("a=1; turnout_token={TOKEN}");
        assert_eq!(
            gate(&l, "/", &headers(&[])),
            Err(Held::Refused(Refusal::NoToken))
        );
        assert_eq!(
            gate(
                &l,
                "/",
                &headers(&[("authorization", &basic(&format!("me:{TOKEN}")))])
            ),
            Ok(())
        );
        assert_eq!(gate(&l, "/", &headers(&[("cookie", &cookie)])), Ok(()));
        // HTTP/2 may send several Cookie fields; a wrong token next to a good one is fine.
        let split = headers(&[
            ("cookie", "a=1"),
            ("cookie", "turnout_token=wrong"),
            ("cookie", &format!("turnout_token={TOKEN}")),
        ]);
        assert_eq!(gate(&l, "/x", &split), Ok(()));
        let wrong = headers(&[
            ("authorization", &basic("me:wrong")),
            ("cookie", "turnout_token=wrong"),
        ]);
        assert_eq!(
            gate(&l, "/", &wrong),
            Err(Held::Refused(Refusal::TokenNotAccepted))
        );
        assert_eq!(gate(&l, LOGIN_PATH, &headers(&[])), Err(Held::Endpoint));
        assert_eq!(gate(&l, LOGOUT_PATH, &headers(&[])), Err(Held::Endpoint));
        assert_eq!(
            gate(&l, "/.turnout/other", &headers(&[])),
            Err(Held::Refused(Refusal::NoToken))
        );
    }

    #[test]
    fn consumed_credentials_are_stripped_and_the_rest_kept() {
        let l = login(&[(TOKEN, None), ("old", Some(SystemTime::UNIX_EPOCH))]);
        let ours = basic(&format!("me:{TOKEN}"));
        let mut h = headers(&[
            ("authorization", &ours),
            ("cookie", &format!("a=1; turnout_token={TOKEN}")),
            ("cookie", "b=\"2\";turnout_token=x;;bare"),
        ]);
        strip_credentials(&mut h, Some(&l));
        assert!(!h.contains_key("authorization"));
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=\"2\"; bare"]
        );

        // Only a cookie of ours: the field goes. An expired token of ours is stripped too.
        let mut h = headers(&[
            ("cookie", "turnout_token=x"),
            ("authorization", &basic("me:old")),
        ]);
        strip_credentials(&mut h, Some(&l));
        assert!(h.is_empty(), "{h:?}");

        // The app's own Authorization stays, and so does everything on an unprotected host,
        // except the token cookie.
        let app = basic("admin:app-password");
        let mut h = headers(&[("authorization", &app), ("cookie", "a=1")]);
        strip_credentials(&mut h, Some(&l));
        assert_eq!(h["authorization"], app.as_str());
        assert_eq!(h["cookie"], "a=1");
        let mut h = headers(&[("authorization", &ours), ("cookie", "turnout_token=t; a=1")]);
        strip_credentials(&mut h, None);
        assert_eq!(h["authorization"], ours.as_str());
        assert_eq!(h["cookie"], "a=1");
    }

    #[test]
    fn next_stays_on_this_host() {
        for ok in ["/", "/cart?item=1&x=%2F%2F", "/a//b", "/.turnout/login"] {
            assert_eq!(safe_next(ok), ok);
        }
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "/\t/evil.example",
            "/a\\b",
            "/ä",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }

    #[test]
    fn form_fields_are_url_decoded() {
        let body = b"token=tnt_%41b+c&next=%2Fcart%3Fa%3D1&next=%2Fsecond&bad=%zz%4";
        let field = |name| form_field(body, name).map(|v| String::from_utf8(v).unwrap());
        assert_eq!(field("token").as_deref(), Some("tnt_Ab c"));
        assert_eq!(field("next").as_deref(), Some("/cart?a=1"));
        assert_eq!(field("bad").as_deref(), Some("%zz%4"));
        assert_eq!(field("missing"), None);
        assert_eq!(form_field(b"token", "token"), Some(Vec::new()));
    }

    #[test]
    fn only_cookie_octets_go_into_the_cookie() {
        assert!(cookie_safe(TOKEN.as_bytes()));
        for bad in ["", "a b", "a;b", "a,b", "a\"b", "a\\b", "ä"] {
            assert!(!cookie_safe(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn the_challenge_quotes_the_realm() {
        assert_eq!(
            challenge("shop/staging"),
            "Basic realm=\"turnout: shop/staging\", charset=\"UTF-8\""
        );
        assert_eq!(
            challenge("a\"b\\c\nd"),
            "Basic realm=\"turnout: a\\\"b\\\\cd\", charset=\"UTF-8\""
        );
    }
}
