//! Git's smart HTTP protocol on the API listener, for `git push` (and `fetch`, `ls-remote`) to
//! `http://HOST:PORT/git/APP.git`: `GET …/info/refs?service=…`, `POST …/git-upload-pack`,
//! `POST …/git-receive-pack`, answered by `git upload-pack` / `receive-pack --stateless-rpc` on
//! the app's mirror (see `git::service`). The pusher authenticates with HTTP Basic, an API
//! token as the password, and is authorized before any git process starts; refs and bodies go
//! to git as data on its stdin, never through a shell. A push's outcome (which environments
//! deploy, their job ids, which were skipped and why) is appended to receive-pack's answer as
//! side-band progress, which `git push` prints as `remote: …` lines.
use std::io::Write as _;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, extract::Path};
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use turnout_model::AppName;

use super::Api;
use crate::access::Principal;
use crate::error::{ControlError, Escaped};
use crate::git::{self, Service};
use crate::plane::PushGuard;

/// How long one request may take, the client's upload included.
const RPC_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The request body goes to git in pieces of at most this many (compressed) bytes, so one piece
/// of a gzip bomb inflates to at most about a thousand times as much before the cap is checked.
const PIECE: usize = 8 * 1024;
/// The most a push's list of refs (before its pack) may take.
const MAX_COMMANDS: usize = 4 << 20;

/// The largest request body (compressed, and again inflated) a push or fetch may send.
#[derive(Debug, Clone, Copy)]
pub(super) struct MaxBody(pub u64);

pub(super) fn router(max_body: u64) -> Router<Api> {
    Router::new()
        .route("/git/{repo}/info/refs", get(info_refs))
        .route("/git/{repo}/git-upload-pack", post(upload_pack))
        .route("/git/{repo}/git-receive-pack", post(receive_pack))
        .layer(Extension(MaxBody(max_body)))
}

/// Why a git request was refused, answered as plain text (git shows it as `remote: …`).
enum GitError {
    Control(ControlError),
    /// No or a bad token: 401 with a Basic challenge, so git asks its credential helpers.
    Unauthorized(String),
}

impl From<ControlError> for GitError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Unauthorized(m) => GitError::Unauthorized(m),
            other => GitError::Control(other),
        }
    }
}

impl IntoResponse for GitError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            GitError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            GitError::Control(e) => (
                StatusCode::from_u16(e.code().http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                e.to_string(),
            ),
        };
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %Escaped(&text), "git request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %Escaped(&text), "git request refused");
        }
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"turnout\""),
            );
        }
        resp
    }
}

type Result<T> = std::result::Result<T, GitError>;

#[derive(Deserialize)]
struct InfoRefsQuery {
    service: Option<String>,
}

async fn info_refs(
    State(p): State<Api>,
    Path(repo): Path<String>,
    Query(q): Query<InfoRefsQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let service = q
        .service
        .as_deref()
        .and_then(Service::from_name)
        .ok_or_else(|| {
            ControlError::Invalid(
                "Turnout serves git's smart HTTP protocol only: ask for ?service=git-upload-pack or ?service=git-receive-pack (any recent git does)".into(),
            )
        })?;
    let who = authenticate(&p, &headers).await?;
    let app = app_name(&repo)?;
    let mirror = p.git_mirror(&who, &app, service).await?;
    let protocol = git_protocol(&headers);
    let run = git::service(&mirror, service, true, protocol).output();
    let out = tokio::time::timeout(RPC_TIMEOUT, run)
        .await
        .map_err(|_| ControlError::internal("git did not list the refs in time"))?
        .map_err(|e| ControlError::internal(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(ControlError::internal(format!(
            "git {} --advertise-refs: {}",
            service.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .into());
    }
    // Protocol v2 (upload-pack only) starts with its capabilities; the others with this line.
    let v2 = service == Service::UploadPack
        && protocol.is_some_and(|p| p.split(':').any(|x| x == "version=2"));
    let mut body = Vec::with_capacity(out.stdout.len() + 64);
    if !v2 {
        pkt_line(
            &mut body,
            format!("# service={}\n", service.name()).as_bytes(),
        );
        body.extend_from_slice(FLUSH);
    }
    body.extend_from_slice(&out.stdout);
    Ok(answer(
        &format!("application/x-{}-advertisement", service.name()),
        Body::from(body),
    ))
}

async fn upload_pack(
    State(p): State<Api>,
    Extension(MaxBody(max)): Extension<MaxBody>,
    Path(repo): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let who = authenticate(&p, &headers).await?;
    let app = app_name(&repo)?;
    let gzip = request_shape(&headers, Service::UploadPack, max)?;
    let mirror = p.git_mirror(&who, &app, Service::UploadPack).await?;
    let mut child = git::service(&mirror, Service::UploadPack, false, git_protocol(&headers))
        .spawn()
        .map_err(|e| ControlError::internal(format!("cannot run git: {e}")))?;
    let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
    let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(ControlError::internal("git upload-pack has no pipes").into());
    };
    // Fed while the answer streams out: a fetch's answer (a pack) can be large.
    tokio::spawn(async move {
        let mut stdin = stdin;
        // On an error the request stays cut short: upload-pack reads a broken request and ends.
        let mut inflow = Inflow::new(body, gzip, max);
        if let Err(e) = feed(&mut inflow, &[], &mut stdin).await {
            tracing::info!(error = %Escaped(&e.to_string()), "fetch request cut short");
        }
    });
    let stream = futures_util::stream::unfold((stdout, child), |(mut out, child)| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::time::timeout(RPC_TIMEOUT, out.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (out, child)))
            }
            // The end (or a failure: the client sees a cut pack); the child is killed on drop.
            _ => None,
        }
    });
    Ok(answer(
        "application/x-git-upload-pack-result",
        Body::from_stream(stream),
    ))
}

async fn receive_pack(
    State(p): State<Api>,
    Extension(MaxBody(max)): Extension<MaxBody>,
    Path(repo): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let who = authenticate(&p, &headers).await?;
    let app = app_name(&repo)?;
    let gzip = request_shape(&headers, Service::ReceivePack, max)?;
    // Authorized, and the app's pushes serialized, before git reads a byte.
    let push = p.begin_push(&who, &app).await?;
    let inflow = Inflow::new(body, gzip, max);
    let protocol = git_protocol(&headers);
    match tokio::time::timeout(RPC_TIMEOUT, run_push(&p, push, inflow, protocol)).await {
        Ok(done) => done,
        Err(_) => Err(ControlError::internal(format!(
            "the push took longer than {} minutes",
            RPC_TIMEOUT.as_secs() / 60
        ))
        .into()),
    }
}

/// Read the push's commands; refuse it whole (a report git prints as `[remote rejected]`) when
/// a ref may not move; else run receive-pack on it and append what the push started.
async fn run_push(
    p: &Api,
    push: PushGuard,
    mut inflow: Inflow,
    protocol: Option<&str>,
) -> Result<Response> {
    let mut prefix = Vec::new();
    let commands = loop {
        if let Some(commands) = Commands::parse(&prefix) {
            break commands?;
        }
        if prefix.len() > MAX_COMMANDS {
            return Err(ControlError::TooLarge(format!(
                "the push names more refs than fit in {} MiB of commands; push fewer at a time",
                MAX_COMMANDS >> 20
            ))
            .into());
        }
        match inflow.next().await? {
            Some(data) => prefix.extend_from_slice(&data),
            None => {
                return Err(ControlError::Invalid(
                    "the push request ends before its list of refs does".into(),
                )
                .into());
            }
        }
    };
    let refused = p.check_push(&push, &commands.refs).await?;
    if !refused.is_empty() {
        // Read to the end (within the limit) so that the client hears the answer.
        inflow.drain().await?;
        return Ok(answer(
            "application/x-git-receive-pack-result",
            Body::from(rejection(&commands, &refused)),
        ));
    }
    let mut child = git::service(push.mirror(), Service::ReceivePack, false, protocol)
        .spawn()
        .map_err(|e| ControlError::internal(format!("cannot run git: {e}")))?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
        return Err(ControlError::internal("git receive-pack has no pipes").into());
    };
    // Written while its answer is read: a pack larger than the pipes would otherwise stall both.
    let (fed, mut out, err) = tokio::join!(
        async {
            let mut stdin = stdin;
            let fed = feed(&mut inflow, &prefix, &mut stdin).await;
            if fed.is_err() {
                // Killed while its input is still open, so a cut pack is never taken for a
                // whole one and no ref moves.
                let _ = child.start_kill();
            }
            drop(stdin);
            fed
        },
        read_all(stdout),
        read_all(stderr)
    );
    if let Err(e) = fed {
        let _ = child.wait().await;
        git::remove_quarantines(push.mirror()).await;
        return Err(e.into());
    }
    let status = child
        .wait()
        .await
        .map_err(|e| ControlError::internal(format!("git receive-pack: {e}")))?;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err);
        tracing::warn!(%status, stderr = %Escaped(stderr.trim()), "git receive-pack failed");
    }
    let lines = match p.end_push(push).await {
        Ok(lines) => lines,
        Err(e) => vec![format!("the push was stored, but acting on it failed: {e}")],
    };
    if commands.sideband {
        add_progress(&mut out, &lines);
    }
    Ok(answer(
        "application/x-git-receive-pack-result",
        Body::from(out),
    ))
}

/// The principal behind `Authorization: Basic` (any user name, an API token as the password).
async fn authenticate(p: &Api, headers: &HeaderMap) -> Result<Principal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, t)| t.to_owned()))
        .filter(|t| !t.is_empty());
    match token {
        None => Err(GitError::Unauthorized(
            "authentication required: use an API token as the password, e.g. http://git:TOKEN@HOST:PORT/git/APP.git (`turnout token create --user NAME` makes one)".into(),
        )),
        Some(t) => Ok(p.authenticate(Some(&t)).await?),
    }
}

/// `shop.git` (or `shop`) → the app `shop`.
fn app_name(repo: &str) -> Result<AppName> {
    let name = repo.strip_suffix(".git").unwrap_or(repo);
    AppName::new(name).map_err(|e| {
        GitError::Control(ControlError::Invalid(format!(
            "{e}; the git URL of an app is /git/APP.git"
        )))
    })
}

fn git_protocol(headers: &HeaderMap) -> Option<&str> {
    headers.get("git-protocol").and_then(|v| v.to_str().ok())
}

/// Refuse a request body that is not the service's, or announces more than `max` bytes; true
/// when it is gzipped.
fn request_shape(headers: &HeaderMap, service: Service, max: u64) -> Result<bool> {
    let expected = format!("application/x-{}-request", service.name());
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if ctype != Some(expected.as_str()) {
        return Err(ControlError::Invalid(format!(
            "a {} request has Content-Type {expected}",
            service.name()
        ))
        .into());
    }
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max) {
        return Err(too_large(max).into());
    }
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        None => Ok(false),
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => Ok(true),
        Some(other) => Err(ControlError::Invalid(format!(
            "Content-Encoding {other:?} is not supported: send the body as is or gzipped"
        ))
        .into()),
    }
}

fn too_large(max: u64) -> ControlError {
    ControlError::TooLarge(format!(
        "the push is over the daemon's limit of {} MiB; split it into smaller pushes or start `turnout serve` with a larger --max-push-size",
        max / (1024 * 1024)
    ))
}

/// The request body as git reads it: gunzipped when the client gzipped it (in pieces of
/// `PIECE`, so a gzip bomb is caught as it inflates), refused past `max` bytes compressed or
/// inflated.
struct Inflow {
    stream: axum::body::BodyDataStream,
    inflate: Option<flate2::write::GzDecoder<Vec<u8>>>,
    max: u64,
    read: u64,
    written: u64,
    ended: bool,
}

impl Inflow {
    fn new(body: Body, gzip: bool, max: u64) -> Inflow {
        Inflow {
            stream: body.into_data_stream(),
            inflate: gzip.then(|| flate2::write::GzDecoder::new(Vec::new())),
            max,
            read: 0,
            written: 0,
            ended: false,
        }
    }

    /// The next inflated bytes (maybe none), or None at the end.
    async fn next(&mut self) -> std::result::Result<Option<Vec<u8>>, ControlError> {
        if self.ended {
            return Ok(None);
        }
        let bad_gzip = |e: std::io::Error| {
            ControlError::Invalid(format!("the gzipped request body is corrupt: {e}"))
        };
        let Some(chunk) = self.stream.next().await else {
            self.ended = true;
            return match self.inflate.take() {
                Some(d) => {
                    let rest = d.finish().map_err(bad_gzip)?;
                    self.count(rest.len())?;
                    Ok(Some(rest))
                }
                None => Ok(None),
            };
        };
        let chunk =
            chunk.map_err(|e| ControlError::Invalid(format!("reading the request body: {e}")))?;
        self.read += chunk.len() as u64;
        if self.read > self.max {
            return Err(too_large(self.max));
        }
        let Some(d) = &mut self.inflate else {
            self.count(chunk.len())?;
            return Ok(Some(chunk.to_vec()));
        };
        let mut out = Vec::new();
        for piece in chunk.chunks(PIECE) {
            d.write_all(piece).map_err(bad_gzip)?;
            let inflated = std::mem::take(d.get_mut());
            if self.written + (out.len() + inflated.len()) as u64 > self.max {
                return Err(too_large(self.max));
            }
            out.extend_from_slice(&inflated);
        }
        self.count(out.len())?;
        Ok(Some(out))
    }

    fn count(&mut self, n: usize) -> std::result::Result<(), ControlError> {
        self.written += n as u64;
        if self.written > self.max {
            return Err(too_large(self.max));
        }
        Ok(())
    }

    /// Read the rest and drop it (the pack of a refused push), still within the limit.
    async fn drain(&mut self) -> std::result::Result<(), ControlError> {
        while self.next().await?.is_some() {}
        Ok(())
    }
}

/// Write `prefix`, then the rest of the request, into git's stdin; the caller closes it (or
/// kills git first, on an error). git exiting early (its stdin closed) does not end the copy
/// with an error: its answer says why.
async fn feed(
    inflow: &mut Inflow,
    prefix: &[u8],
    stdin: &mut ChildStdin,
) -> std::result::Result<(), ControlError> {
    let mut open = stdin.write_all(prefix).await.is_ok();
    while let Some(data) = inflow.next().await? {
        if open && stdin.write_all(&data).await.is_err() {
            open = false;
        }
    }
    Ok(())
}

async fn read_all(mut r: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = r.read_to_end(&mut out).await;
    out
}

fn answer(content_type: &str, body: Body) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

const FLUSH: &[u8] = b"0000";
/// The largest pkt-line git accepts (header included).
const MAX_PKT: usize = 65520;

fn pkt_line(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
}

/// What a receive-pack request asks for, read from its start: the refs it changes and whether
/// the client takes side-band-64k (a capability after the NUL of its first command).
#[derive(Debug)]
struct Commands {
    refs: Vec<String>,
    sideband: bool,
}

impl Commands {
    /// None until `buf` holds the whole command list (up to its flush packet).
    fn parse(buf: &[u8]) -> Option<std::result::Result<Commands, ControlError>> {
        let bad = || {
            Some(Err(ControlError::Invalid(
                "the push request's list of refs is malformed".into(),
            )))
        };
        let mut commands = Commands {
            refs: Vec::new(),
            sideband: false,
        };
        let mut rest = buf;
        loop {
            let header = rest.get(..4)?;
            let Some(len) = std::str::from_utf8(header)
                .ok()
                .and_then(|h| usize::from_str_radix(h, 16).ok())
            else {
                return bad();
            };
            if len == 0 {
                return Some(Ok(commands));
            }
            if len < 4 {
                return bad();
            }
            let line = rest.get(4..len)?;
            rest = &rest[len..];
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let (command, caps) = match line.iter().position(|&b| b == 0) {
                Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
                None => (line, None),
            };
            if let Some(caps) = caps {
                commands.sideband |= caps.split(|&b| b == b' ').any(|c| c == b"side-band-64k");
            }
            if command.starts_with(b"shallow ") {
                continue;
            }
            let Some(name) = std::str::from_utf8(command)
                .ok()
                .and_then(|c| c.splitn(3, ' ').nth(2))
            else {
                return bad();
            };
            commands.refs.push(name.to_owned());
        }
    }
}

/// receive-pack's answer to a push refused whole: every ref `ng`, the refused ones with why,
/// which `git push` prints as `! [remote rejected] … (why)`.
fn rejection(commands: &Commands, refused: &[(String, String)]) -> Vec<u8> {
    let mut report = Vec::new();
    pkt_line(&mut report, b"unpack ok\n");
    for name in &commands.refs {
        let why = refused
            .iter()
            .find(|(r, _)| r == name)
            .map_or("another ref of this push was refused", |(_, why)| {
                why.as_str()
            });
        let why: String = why.chars().filter(|c| !c.is_control()).collect();
        let line = format!("ng {name} {why}\n");
        pkt_line(&mut report, &line.as_bytes()[..line.len().min(MAX_PKT - 5)]);
    }
    report.extend_from_slice(FLUSH);
    if !commands.sideband {
        return report;
    }
    let mut out = Vec::new();
    for part in report.chunks(MAX_PKT - 5) {
        let mut data = vec![1];
        data.extend_from_slice(part);
        pkt_line(&mut out, &data);
    }
    out.extend_from_slice(FLUSH);
    out
}

/// Insert `lines` as side-band progress (band 2) before the final flush of receive-pack's
/// answer, where `git push` prints them as `remote: …`. An answer without that flush (a probe
/// with no commands) is left as it is.
fn add_progress(out: &mut Vec<u8>, lines: &[String]) {
    if lines.is_empty() || !out.ends_with(FLUSH) {
        return;
    }
    out.truncate(out.len() - FLUSH.len());
    for line in lines {
        let mut data = Vec::with_capacity(line.len() + 2);
        data.push(2);
        let text: String = line.chars().filter(|c| !c.is_control()).collect();
        data.extend_from_slice(text.as_bytes());
        data.truncate(MAX_PKT - 5);
        data.push(b'\n');
        pkt_line(out, &data);
    }
    out.extend_from_slice(FLUSH);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(lines: &[&[u8]]) -> Vec<u8> {
        let mut req = Vec::new();
        for l in lines {
            pkt_line(&mut req, l);
        }
        req.extend_from_slice(FLUSH);
        req.extend_from_slice(b"PACK...");
        req
    }

    #[test]
    fn commands_and_side_band_are_read_from_the_start() {
        let req = request(&[
            b"shallow 0123456789012345678901234567890123456789\n",
            b"0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/x\0report-status side-band-64k agent=git/2\n",
            b"1111111111111111111111111111111111111111 0000000000000000000000000000000000000000 refs/heads/y\n",
        ]);
        let c = Commands::parse(&req).unwrap().unwrap();
        assert_eq!(c.refs, ["refs/heads/x", "refs/heads/y"]);
        assert!(c.sideband);
        let plain = request(&[b"0 1 refs/heads/x\0report-status\n"]);
        assert!(!Commands::parse(&plain).unwrap().unwrap().sideband);
        // Not all there yet: more is read.
        assert!(Commands::parse(&req[..30]).is_none());
        assert!(Commands::parse(b"00").is_none());
        let probe = Commands::parse(b"0000").unwrap().unwrap();
        assert!(probe.refs.is_empty());
        for bad in [&b"zzzz"[..], b"0003", b"0008abcd0000"] {
            assert!(Commands::parse(bad).unwrap().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_refused_push_is_reported_ref_by_ref() {
        let commands = Commands {
            refs: vec!["refs/heads/main".into(), "refs/heads/x".into()],
            sideband: false,
        };
        let refused = [("refs/heads/main".to_owned(), "forbidden:\nno".to_owned())];
        let text = String::from_utf8(rejection(&commands, &refused)).unwrap();
        assert_eq!(
            text,
            "000eunpack ok\n0024ng refs/heads/main forbidden:no\n\
             0039ng refs/heads/x another ref of this push was refused\n0000"
        );
        let banded = rejection(
            &Commands {
                sideband: true,
                ..commands
            },
            &refused,
        );
        // One band-1 packet holding the report, then the flush that ends the side band.
        assert_eq!(&banded[..4], format!("{:04x}", banded.len() - 4).as_bytes());
        assert!(banded[5..].starts_with(b"000eunpack ok\n") && banded.ends_with(b"00000000"));
        assert_eq!(banded[4], 1);
    }

    #[test]
    fn progress_goes_before_the_final_flush() {
        let mut out = Vec::new();
        pkt_line(&mut out, b"\x01000eunpack ok\n0000");
        out.extend_from_slice(FLUSH);
        add_progress(&mut out, &["shop/qa deploys\n\x1b[31mx".into()]);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with("\u{2}shop/qa deploys[31mx\n0000"),
            "{text:?}"
        );
        let mut probe = Vec::new();
        add_progress(&mut probe, &["x".into()]);
        assert!(probe.is_empty());
    }
}
