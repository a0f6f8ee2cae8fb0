//! HTTP/1.1 on the wire for the plain path (`plain`): which requests it takes, the request
//! head it sends the instance, the response head it sends the client, and where a chunked body
//! ends. Pure functions over byte buffers, so each rule is tested on its own.
//!
//! The header rules are those of `headers` (RFC 9110 §7.6: hop-by-hop fields never cross the
//! proxy; X-Forwarded-*, Via), applied while copying the head once instead of through a
//! `HeaderMap`. Anything these functions are not sure about is left to hyper: they answer
//! [`Request::Other`] and the connection is handed over with its bytes unread.

use std::cell::RefCell;
use std::io::Write as _;
use std::time::SystemTime;

use crate::headers::{HOP_BY_HOP, REWRITTEN, VIA_NAME};
use crate::login::COOKIE_NAME;

/// Header fields a head may have; more goes to hyper (which answers 431).
const MAX_HEADERS: usize = 100;
/// Largest response head accepted from an instance.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What the start of the client's buffer holds.
pub(crate) enum Request {
    /// Not a whole head yet.
    Partial,
    /// A head the plain path takes; the instance's version of it was written to `out`.
    Plain(Plain),
    /// Anything else (HTTP/1.0, HTTP/2, an upgrade, a chunked or expecting body, an
    /// absolute-form target, a malformed head, ...): hyper takes the connection from here.
    Other,
}

/// A request head the plain path forwards.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plain {
    /// Bytes of the head, CRLF CRLF included.
    pub(crate) head_len: usize,
    /// The Host field's value, as sent (port included).
    pub(crate) host: std::ops::Range<usize>,
    pub(crate) content_length: u64,
    pub(crate) head_method: bool,
    /// RFC 9110 §9.2.2 idempotent, and without a body: safe to send again if it never left.
    pub(crate) replayable: bool,
    /// The client said `Connection: close`.
    pub(crate) close: bool,
    /// `METHOD PATH` of the request line in `out`, for the log.
    pub(crate) line: std::ops::Range<usize>,
}

impl Plain {
    /// Bytes of the whole request: head and body.
    pub(crate) fn len(&self) -> usize {
        self.head_len + usize::try_from(self.content_length).unwrap_or(usize::MAX)
    }
}

/// Put `name: value` into the whole head in `out` (its blank line last), in place of any field
/// of that name (any case) the instance sent: the proxy's own HSTS wins, as on hyper's path.
pub(crate) fn replace_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let mut kept = Vec::with_capacity(out.len() + name.len() + value.len() + 4);
    let head = out.strip_suffix(b"\r\n").unwrap_or(out);
    for line in head.split_inclusive(|b| *b == b'\n') {
        let field = line.split(|b| *b == b':').next().unwrap_or_default();
        if !field.eq_ignore_ascii_case(name) {
            kept.extend_from_slice(line);
        }
    }
    push_field(&mut kept, name, value);
    kept.extend_from_slice(b"\r\n");
    *out = kept;
}

/// Parse the head at the start of `buf`; for a plain request, write the head the instance gets
/// into `out` (cleared first), with `client_ip` appended to X-Forwarded-For, and
/// X-Forwarded-Proto `https` when it came over TLS (`secure`), else `http`.
pub(crate) fn request(buf: &[u8], out: &mut Vec<u8>, client_ip: &str, secure: bool) -> Request {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Request::Partial,
        Err(_) => return Request::Other,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Request::Other;
    };
    // Origin-form only (RFC 9112 §3.2.1); CONNECT, absolute and asterisk forms go to hyper.
    if !path.starts_with('/') || method == "CONNECT" {
        return Request::Other;
    }
    let mut host = None;
    let mut content_length = None;
    let mut close = false;
    let mut te_trailers = false;
    let mut named = Named::default();
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        let value = field.value;
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_graphic) {
                return Request::Other;
            }
            host = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if content_length.is_some() {
                return Request::Other;
            }
            match parse_length(value) {
                Some(n) => content_length = Some(n),
                None => return Request::Other,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Request::Other;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in list_items(value) {
                if option.eq_ignore_ascii_case(b"upgrade") {
                    return Request::Other;
                }
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                }
                named.add(option);
            }
        } else if name.eq_ignore_ascii_case(b"cookie")
            && value
                .windows(COOKIE_NAME.len())
                .any(|w| w == COOKIE_NAME.as_bytes())
        {
            // A login cookie never reaches an app; hyper's path takes it out.
            return Request::Other;
        } else if name.eq_ignore_ascii_case(b"te") {
            te_trailers |= list_items(value).any(|t| {
                let t = t.split(|b| *b == b';').next().unwrap_or_default();
                trim(t).eq_ignore_ascii_case(b"trailers")
            });
        }
    }
    let Some(host) = host else {
        return Request::Other;
    };
    let content_length = content_length.unwrap_or(0);

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    let line = 0..out.len();
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        if is_one_of(name, &HOP_BY_HOP) || named.contains(name) || is_one_of(name, &REWRITTEN) {
            continue;
        }
        push_field(out, name, field.value);
    }
    if te_trailers {
        // RFC 9110 §10.1.4: "trailers" stays true across the proxy, and TE must be listed in
        // Connection.
        out.extend_from_slice(b"te: trailers\r\nconnection: te\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if join_into(out, req.headers, b"x-forwarded-for") {
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(if secure {
        b"\r\nx-forwarded-proto: https\r\n"
    } else {
        b"\r\nx-forwarded-proto: http\r\n"
    });
    push_field(out, b"x-forwarded-host", host);
    push_via(out, req.headers, b"1.1");
    out.extend_from_slice(b"\r\n");

    let host_start = host.as_ptr() as usize - buf.as_ptr() as usize;
    let head_method = method == "HEAD";
    Request::Plain(Plain {
        head_len,
        host: host_start..host_start + host.len(),
        content_length,
        head_method,
        replayable: content_length == 0
            && matches!(
                method,
                "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
            ),
        close,
        line,
    })
}

/// What the start of an instance's buffer holds.
pub(crate) enum Response {
    Partial,
    /// An interim (1xx) response of this many bytes, which the client does not get.
    Interim(usize),
    /// A final response; the client's head was written to `out`.
    Final(Final),
    /// The instance's answer cannot be relayed; the text says why (for the log).
    Invalid(&'static str),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Final {
    pub(crate) status: u16,
    pub(crate) head_len: usize,
    pub(crate) body: BodyKind,
    /// The instance will keep its connection open after this response.
    pub(crate) reusable: bool,
    /// A server-sent-event stream (WHATWG HTML §9.2).
    pub(crate) event_stream: bool,
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// No body: a HEAD answer, 204 or 304.
    None,
    Length(u64),
    /// Relayed as it comes, chunked.
    Chunked,
    /// Until the instance closes; the client gets it chunked.
    UntilClose,
}

/// Parse the instance's response head at the start of `buf`. For a final response write the
/// client's head into `out`: hop-by-hop fields dropped, Via appended, a Date added when the
/// instance sent none (RFC 9110 §6.6.1), and `Connection: close` when `close`.
pub(crate) fn response(buf: &[u8], out: &mut Vec<u8>, head_request: bool, close: bool) -> Response {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut fields);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            return Response::Invalid("response head too large");
        }
        Ok(httparse::Status::Partial) => return Response::Partial,
        Err(_) => return Response::Invalid("malformed response head"),
    };
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Response::Invalid("malformed response head");
    };
    if status == 101 {
        return Response::Invalid("switched protocols without being asked to");
    }
    if (100..200).contains(&status) {
        return Response::Interim(head_len);
    }
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = version == 1;
    let mut has_date = false;
    let mut event_stream = false;
    let mut named = Named::default();
    for field in res.headers.iter() {
        let name = field.name.as_bytes();
        let value = field.value;
        if name.eq_ignore_ascii_case(b"content-length") {
            match (parse_length(value), length) {
                (None, _) => return Response::Invalid("invalid Content-Length"),
                (Some(n), Some(earlier)) if n != earlier => {
                    return Response::Invalid("conflicting Content-Length fields");
                }
                (Some(n), _) => length = Some(n),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only plain chunked is relayed; another coding would need its own field kept.
            if chunked || !trim(value).eq_ignore_ascii_case(b"chunked") {
                return Response::Invalid("unsupported Transfer-Encoding");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in list_items(value) {
                if option.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    keep_alive = true;
                }
                named.add(option);
            }
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        } else if name.eq_ignore_ascii_case(b"content-type") {
            let media = value.split(|b| *b == b';').next().unwrap_or_default();
            event_stream = trim(media).eq_ignore_ascii_case(b"text/event-stream");
        }
    }
    let no_body = head_request || status == 204 || status == 304;
    let body = if no_body {
        BodyKind::None
    } else if chunked {
        BodyKind::Chunked
    } else if let Some(n) = length {
        BodyKind::Length(n)
    } else {
        BodyKind::UntilClose
    };

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    match res.reason {
        Some(reason) if !reason.is_empty() => out.extend_from_slice(reason.as_bytes()),
        _ => out.extend_from_slice(
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .as_bytes(),
        ),
    }
    out.extend_from_slice(b"\r\n");
    for field in res.headers.iter() {
        let name = field.name.as_bytes();
        if is_one_of(name, &HOP_BY_HOP)
            || named.contains(name)
            || name.eq_ignore_ascii_case(b"via")
            || name.eq_ignore_ascii_case(b"content-length")
        {
            continue;
        }
        push_field(out, name, field.value);
    }
    match body {
        BodyKind::Length(n) => push_length(out, n),
        BodyKind::Chunked | BodyKind::UntilClose => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        // A HEAD or 304 answer describes the body it would have had (RFC 9110 §8.6); a 204
        // has none to describe.
        BodyKind::None if status != 204 => {
            if let Some(n) = length {
                push_length(out, n);
            } else if chunked {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
        }
        BodyKind::None => {}
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    push_via(out, res.headers, if version == 1 { b"1.1" } else { b"1.0" });
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Response::Final(Final {
        status,
        head_len,
        body,
        reusable: keep_alive && !matches!(body, BodyKind::UntilClose),
        event_stream,
    })
}

/// Where a chunked body (RFC 9112 §7.1) ends. The bytes are relayed as they are; this only
/// follows them.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u8,
    /// Length of the trailer field line being read.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    Done,
}

/// What [`Chunked::scan`] reports as it goes.
pub(crate) enum Seen<'a> {
    /// Content of a chunk.
    Data(&'a [u8]),
    /// A chunk has ended; the watcher answers true to stop the scan here.
    ChunkEnd,
}

/// A chunked body that does not follow RFC 9112 §7.1.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadChunk;

impl Chunked {
    /// Follow `data`. Returns how many of its bytes belong to the body: all of them, or fewer
    /// when the body ends inside `data`, or when `watch` asks to stop at the end of a chunk.
    pub(crate) fn scan<'d>(
        &mut self,
        data: &'d [u8],
        mut watch: impl FnMut(Seen<'d>) -> bool,
    ) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < data.len() {
            if self.state == ChunkState::Data {
                let n = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                watch(Seen::Data(&data[i..i + n]));
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (ChunkState::Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == 16 {
                        return Err(BadChunk);
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex(b));
                    ChunkState::Size
                }
                (ChunkState::Size, b';' | b' ' | b'\t') if self.digits > 0 => ChunkState::Extension,
                (ChunkState::Size, b'\r') if self.digits > 0 => ChunkState::SizeLf,
                (ChunkState::Extension, b'\r') => ChunkState::SizeLf,
                (ChunkState::Extension, b) if b == b'\t' || b >= b' ' => ChunkState::Extension,
                (ChunkState::SizeLf, b'\n') if self.size == 0 => {
                    self.line = 0;
                    ChunkState::Trailer
                }
                (ChunkState::SizeLf, b'\n') => ChunkState::Data,
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => {
                    self.digits = 0;
                    self.state = ChunkState::Size;
                    if watch(Seen::ChunkEnd) {
                        return Ok(i);
                    }
                    ChunkState::Size
                }
                (ChunkState::Trailer, b'\r') => ChunkState::TrailerLf,
                (ChunkState::Trailer, _) => {
                    self.line += 1;
                    ChunkState::Trailer
                }
                (ChunkState::TrailerLf, b'\n') if self.line == 0 => {
                    self.state = ChunkState::Done;
                    return Ok(i);
                }
                (ChunkState::TrailerLf, b'\n') => {
                    self.line = 0;
                    ChunkState::Trailer
                }
                _ => return Err(BadChunk),
            };
        }
        Ok(i)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Between two chunks: a last chunk can be sent here.
    pub(crate) fn between_chunks(&self) -> bool {
        self.state == ChunkState::Size && self.digits == 0
    }
}

/// The end of a chunked body with no trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Append one chunk holding `data` to `out`.
pub(crate) fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// RFC 9110 §8.6: `1*DIGIT`, nothing else (no sign, no list, no spaces inside).
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = trim(value);
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// `name` is one of `names` (lower case), in any case.
fn is_one_of(name: &[u8], names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Field names listed in Connection, which are hop-by-hop too. Host is never one: a client
/// cannot make the proxy drop the Host it routes by.
#[derive(Default)]
struct Named<'a>(Vec<&'a [u8]>);

impl<'a> Named<'a> {
    fn add(&mut self, option: &'a [u8]) {
        if !option.eq_ignore_ascii_case(b"host")
            && !option.eq_ignore_ascii_case(b"close")
            && !option.eq_ignore_ascii_case(b"keep-alive")
        {
            self.0.push(option);
        }
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.0.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Items of a comma-separated list field (RFC 9110 §5.6.1), trimmed, empty ones skipped.
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim)
        .filter(|item| !item.is_empty())
}

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_length(out: &mut Vec<u8>, n: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "content-length: {n}\r\n");
}

/// Append the non-empty values of every `name` field to `out`, joined with ", ". True if
/// there was any.
fn join_into(out: &mut Vec<u8>, fields: &[httparse::Header<'_>], name: &[u8]) -> bool {
    let mut any = false;
    for field in fields {
        if field.name.as_bytes().eq_ignore_ascii_case(name) {
            let value = trim(field.value);
            if !value.is_empty() {
                if any {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(value);
                any = true;
            }
        }
    }
    any
}

/// RFC 9110 §7.6.3: the protocol the message was received with and the proxy's pseudonym,
/// after the entries of earlier hops.
fn push_via(out: &mut Vec<u8>, fields: &[httparse::Header<'_>], received: &[u8]) {
    out.extend_from_slice(b"via: ");
    if join_into(out, fields, b"via") {
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(received);
    out.push(b' ');
    out.extend_from_slice(VIA_NAME.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn itoa3(status: u16) -> [u8; 3] {
    [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]
}

thread_local! {
    /// The IMF-fixdate of the current second, rendered once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

pub(crate) fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != second {
            *cell = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(cell.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_field_takes_the_place_of_the_instances_own() {
        let mut head =
            b"HTTP/1.1 200 OK\r\nStrict-Transport-Security: max-age=1\r\ncontent-length: 2\r\n\r\n"
                .to_vec();
        replace_field(&mut head, b"strict-transport-security", b"max-age=63072000");
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nstrict-transport-security: max-age=63072000\r\n\r\n"
        );
    }

    fn plain(head: &str) -> (Plain, String) {
        let mut out = Vec::new();
        match request(head.as_bytes(), &mut out, "127.0.0.1", false) {
            Request::Plain(p) => (p, String::from_utf8(out).unwrap()),
            Request::Partial => panic!("partial: {head:?}"),
            Request::Other => panic!("other: {head:?}"),
        }
    }

    fn other(head: &str) -> bool {
        matches!(
            request(head.as_bytes(), &mut Vec::new(), "127.0.0.1", false),
            Request::Other
        )
    }

    #[test]
    fn a_plain_request_is_rewritten_for_the_instance() {
        let head = "GET /a%20b?x=1 HTTP/1.1\r\nHost: a.test:8080\r\nConnection: keep-alive, X-Secret, host\r\n\
                    X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\n\
                    Proxy-Authorization: Basic x\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n\
                    X-Forwarded-Proto: https\r\nVia: 1.0 edge\r\n\r\nnext";
        let (p, out) = plain(head);
        assert_eq!(p.head_len, head.len() - 4);
        assert_eq!(&head[p.host.clone()], "a.test:8080");
        assert_eq!(&out[p.line.clone()], "GET /a%20b?x=1");
        assert!((p.replayable, p.close, p.content_length) == (true, false, 0));
        assert_eq!(
            out,
            "GET /a%20b?x=1 HTTP/1.1\r\nHost: a.test:8080\r\nProxy-Authorization: Basic x\r\n\
             x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: a.test:8080\r\nvia: 1.0 edge, 1.1 turnout\r\n\r\n"
        );
    }

    #[test]
    fn te_trailers_survive_and_close_is_seen() {
        let (p, out) = plain(
            "POST /x HTTP/1.1\r\nhost: a\r\nTE: trailers;q=1, deflate\r\nConnection: close, TE\r\ncontent-length: 12\r\n\r\n",
        );
        assert!(p.close && !p.replayable && !p.head_method);
        assert_eq!(p.content_length, 12);
        assert!(out.contains("te: trailers\r\nconnection: te\r\n"), "{out}");
        assert!(out.contains("content-length: 12\r\n"), "{out}");
        assert!(!out.contains("Connection: close"), "{out}");
    }

    #[test]
    fn unusual_requests_go_to_hyper() {
        for head in [
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: \r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1; turnout_token=tnt_x\r\n\r\n",
        ] {
            assert!(other(head), "{head:?} should go to hyper");
        }
        assert!(matches!(
            request(
                b"GET / HTTP/1.1\r\nHost: a\r\n",
                &mut Vec::new(),
                "::1",
                false
            ),
            Request::Partial
        ));
    }

    fn answer(head: &str, head_request: bool, close: bool) -> (Final, String) {
        let mut out = Vec::new();
        match response(head.as_bytes(), &mut out, head_request, close) {
            Response::Final(f) => (f, String::from_utf8(out).unwrap()),
            Response::Partial => panic!("partial"),
            Response::Interim(_) => panic!("interim"),
            Response::Invalid(why) => panic!("invalid: {why}"),
        }
    }

    #[test]
    fn a_response_is_rewritten_for_the_client() {
        let (f, out) = answer(
            "HTTP/1.1 200 Fine\r\nConnection: close, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\n\
             Date: Tue, 24 Nov 2026 10:00:00 GMT\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nVia: 1.0 app\r\n\
             Content-Length: 5\r\n\r\nhello",
            false,
            false,
        );
        assert_eq!(f.body, BodyKind::Length(5));
        assert!(!f.reusable && !f.event_stream);
        assert_eq!(f.status, 200);
        assert_eq!(
            out,
            "HTTP/1.1 200 Fine\r\nDate: Tue, 24 Nov 2026 10:00:00 GMT\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
             content-length: 5\r\nvia: 1.0 app, 1.1 turnout\r\n\r\n"
        );
    }

    #[test]
    fn response_framing() {
        let (f, out) = answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n",
            false,
            true,
        );
        assert_eq!(f.body, BodyKind::Chunked);
        assert!(f.reusable && f.event_stream);
        assert!(out.contains("transfer-encoding: chunked\r\n") && !out.contains("content-length"));
        assert!(out.contains("date: ") && out.ends_with("connection: close\r\n\r\n"));

        let (f, out) = answer("HTTP/1.0 200 OK\r\n\r\n", false, false);
        assert_eq!(f.body, BodyKind::UntilClose);
        assert!(!f.reusable);
        assert!(out.contains("transfer-encoding: chunked\r\n") && out.contains("via: 1.0 turnout"));

        let (f, out) = answer(
            "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
            true,
            false,
        );
        assert_eq!(f.body, BodyKind::None);
        assert!(out.contains("content-length: 1234\r\n"));
        let (f, out) = answer(
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            false,
            false,
        );
        assert_eq!(f.body, BodyKind::None);
        assert!(!out.contains("content-length"));
        let (f, _) = answer("HTTP/1.1 304 Not Modified\r\n\r\n", false, false);
        assert_eq!((f.body, f.reusable), (BodyKind::None, true));
        let (_, out) = answer("HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n", false, false);
        assert!(out.starts_with("HTTP/1.1 599 \r\n"), "{out}");
        let (_, out) = answer("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", false, false);
        assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");

        for (head, why) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "conflicting",
            ),
            ("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "invalid"),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "unsupported",
            ),
            ("HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched"),
            ("HTTP/1.1 2000 OK\r\n\r\n", "malformed"),
        ] {
            match response(head.as_bytes(), &mut Vec::new(), false, false) {
                Response::Invalid(text) => assert!(text.contains(why), "{head:?}: {text}"),
                _ => panic!("{head:?} should be refused"),
            }
        }
        assert!(matches!(
            response(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1",
                &mut Vec::new(),
                false,
                false
            ),
            Response::Interim(25)
        ));
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let end = body.len() - 4;
        // Fed in every possible split, the body ends at the same byte with the same content.
        for split in 0..body.len() {
            let mut scanner = Chunked::default();
            let mut content = Vec::new();
            let mut collect = |seen: Seen<'_>| {
                if let Seen::Data(d) = seen {
                    content.extend_from_slice(d);
                }
                false
            };
            let first = scanner.scan(&body[..split], &mut collect).unwrap();
            assert_eq!(first, split.min(end));
            if !scanner.is_done() {
                let second = scanner.scan(&body[split..], &mut collect).unwrap();
                assert_eq!(split + second, end);
            }
            assert!(scanner.is_done());
            assert_eq!(content, b"hello world");
        }
        // `stop` ends the scan after a whole chunk.
        let mut scanner = Chunked::default();
        let n = scanner
            .scan(body, |seen| matches!(seen, Seen::ChunkEnd))
            .unwrap();
        assert_eq!(&body[..n], b"5;ext=1\r\nhello\r\n");
        assert!(scanner.between_chunks());

        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloX",
            b"\r\n",
            b"11111111111111111\r\n",
            b"1\n",
        ] {
            assert_eq!(
                Chunked::default().scan(bad, |_| false),
                Err(BadChunk),
                "{bad:?}"
            );
        }
    }
}
