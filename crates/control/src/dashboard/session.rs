//! Dashboard sessions: signing in with an API token opens a session whose id travels in an
//! HttpOnly, SameSite=Strict cookie (Secure behind HTTPS); the server keeps, in memory and by
//! the id's hash, only the token's hash (so each request is authenticated afresh: a revoked
//! token or a changed role counts at once), a CSRF token for its forms, its expiry and a
//! one-shot notice. Nothing here decides what a user may do: that is the plane's.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header;

use crate::access;
use crate::error::ControlError;

/// The session cookie's name.
pub const COOKIE: &str = "turnout_session";
/// A session ends this long after sign-in, whatever happens meanwhile.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// At most this many sessions are kept; signing in beyond it ends the oldest.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    token_hash: String,
    csrf: String,
    expires: Instant,
    notice: Option<String>,
}

/// What a request's session gives the page: whose token, and the CSRF token its forms carry.
#[derive(Debug, Clone)]
pub struct Opened {
    pub token_hash: String,
    pub csrf: String,
    pub notice: Option<String>,
}

/// Every open session, by the blake3 hash of its id (the id itself is only in the cookie).
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<blake3::Hash, Session>>,
}

impl Sessions {
    /// Open a session for a token already checked; returns the session id for the cookie.
    pub fn open(&self, token: &str) -> Result<String, ControlError> {
        let id = random_hex()?;
        let session = Session {
            token_hash: access::hash_token(token),
            csrf: random_hex()?,
            expires: Instant::now() + LIFETIME,
            notice: None,
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(blake3::hash(id.as_bytes()), session);
        Ok(id)
    }

    /// The live session a request's cookie names, taking its notice (shown once).
    pub fn get(&self, headers: &HeaderMap) -> Option<Opened> {
        let id = cookie(headers, COOKIE)?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let key = blake3::hash(id.as_bytes());
        let s = map.get_mut(&key)?;
        if s.expires <= Instant::now() {
            map.remove(&key);
            return None;
        }
        Some(Opened {
            token_hash: s.token_hash.clone(),
            csrf: s.csrf.clone(),
            notice: s.notice.take(),
        })
    }

    /// Whether `csrf` is the CSRF token of the request's session (compared in constant time:
    /// blake3's `Hash` equality is).
    pub fn check_csrf(&self, headers: &HeaderMap, csrf: &str) -> bool {
        let Some(id) = cookie(headers, COOKIE) else {
            return false;
        };
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&blake3::hash(id.as_bytes())).is_some_and(|s| {
            s.expires > Instant::now()
                && blake3::hash(s.csrf.as_bytes()) == blake3::hash(csrf.as_bytes())
        })
    }

    /// Leave a notice for the session's next page (the outcome of the action just posted).
    pub fn notify(&self, headers: &HeaderMap, notice: String) {
        if let Some(id) = cookie(headers, COOKIE) {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.get_mut(&blake3::hash(id.as_bytes())) {
                s.notice = Some(notice);
            }
        }
    }

    /// End the request's session (sign out).
    pub fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.remove(&blake3::hash(id.as_bytes()));
        }
    }
}

/// The `Set-Cookie` value that carries a new session: the cookie is for the dashboard's paths
/// only, never readable by scripts, never sent on another site's requests, and Secure when the
/// dashboard is reached over HTTPS.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the browser reached the dashboard over HTTPS (through a proxy that terminates it
/// and says so).
pub fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A request a browser made from another site (`Sec-Fetch-Site`), or whose `Origin` is not the
/// host it was sent to: refused for every POST, sign-in included, before its CSRF token is
/// even looked at.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    origin_host.is_none() || origin_host != host
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// 32 random bytes from the kernel, as hex (session ids and CSRF tokens).
fn random_hex() -> Result<String, ControlError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ControlError::internal(format!("read /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={id}")).unwrap(),
        );
        h
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_over_https() {
        let plain = set_cookie("abc", false);
        assert!(
            plain.starts_with(
                "turnout_session=abc; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=28800"
            ),
            "{plain}"
        );
        assert!(!plain.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn a_session_keeps_the_token_hash_only_and_checks_its_csrf_token() {
        let sessions = Sessions::default();
        let id = sessions.open("tnt_secret").unwrap();
        assert_eq!(id.len(), 64);
        let h = with_cookie(&id);
        let s = sessions.get(&h).unwrap();
        assert_eq!(s.token_hash, access::hash_token("tnt_secret"));
        assert!(sessions.check_csrf(&h, &s.csrf));
        assert!(!sessions.check_csrf(&h, "forged"));
        assert!(!sessions.check_csrf(&h, ""));
        assert!(
            !sessions.check_csrf(&HeaderMap::new(), &s.csrf),
            "no cookie"
        );
        // A second session has a CSRF token of its own.
        let other = sessions.open("tnt_secret").unwrap();
        assert!(!sessions.check_csrf(&with_cookie(&other), &s.csrf));
        sessions.notify(&h, "switched".into());
        assert_eq!(
            sessions.get(&h).unwrap().notice.as_deref(),
            Some("switched")
        );
        assert_eq!(sessions.get(&h).unwrap().notice, None, "shown once");
        sessions.close(&h);
        assert!(sessions.get(&h).is_none());
        assert!(!sessions.check_csrf(&h, &s.csrf));
    }

    #[test]
    fn cross_site_posts_are_told_apart() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7070"));
        assert!(
            !cross_site(&h),
            "no Origin: a same-origin form or a non-browser client"
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7070"),
        );
        assert!(!cross_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(cross_site(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_site(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h));
    }
}
