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

/// How long one request may take, the client's upload included.
const RPC_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The request body goes to git in pieces of at most this many (compressed) bytes, so one piece
/// of a gzip bomb inflates to at most about a thousand times as much before the cap is checked.
const PIECE: usize = 8 * 1024;
/// What of the (inflated) request is kept to read the client's capabilities from.
const HEAD: usize = 64 * 1024;

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
        if let Err(e) = feed(body, gzip, max, &mut stdin, &mut Vec::new()).await {
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
    let mut child = git::service(
        push.mirror(),
        Service::ReceivePack,
        false,
        git_protocol(&headers),
    )
    .spawn()
    .map_err(|e| ControlError::internal(format!("cannot run git: {e}")))?;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
        return Err(ControlError::internal("git receive-pack has no pipes").into());
    };
    let mut head = Vec::new();
    // Written while its answer is read: a pack larger than the pipes would otherwise stall both.
    let run = async {
        tokio::join!(
            async {
                let mut stdin = stdin;
                let fed = feed(body, gzip, max, &mut stdin, &mut head).await;
                if fed.is_err() {
                    // Killed while its input is still open, so a cut pack is never taken as
                    // a whole one and no ref moves.
                    let _ = child.start_kill();
                }
                drop(stdin);
                fed
            },
            read_all(stdout),
            read_all(stderr)
        )
    };
    let (fed, out, err) = match tokio::time::timeout(RPC_TIMEOUT, run).await {
        Ok(done) => done,
        Err(_) => {
            return Err(ControlError::internal(format!(
                "the push took longer than {} minutes",
                RPC_TIMEOUT.as_secs() / 60
            ))
            .into());
        }
    };
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
        tracing::warn!(app = %app, %status, stderr = %Escaped(String::from_utf8_lossy(&err).trim()), "git receive-pack failed");
    }
    let mut out = out;
    let lines = match p.end_push(push).await {
        Ok(lines) => lines,
        Err(e) => vec![format!("the push was stored, but acting on it failed: {e}")],
    };
    if sideband(&head) {
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

/// Copy the request body into git's stdin, gunzipping it when `gzip`, refusing more than `max`
/// bytes either way, keeping the first inflated bytes in `head`; the caller closes `stdin` (or
/// kills git first, on an error). git exiting early (its stdin closed) ends the copy without an
/// error: its answer says why.
async fn feed(
    body: Body,
    gzip: bool,
    max: u64,
    stdin: &mut ChildStdin,
    head: &mut Vec<u8>,
) -> std::result::Result<(), ControlError> {
    let mut stream = body.into_data_stream();
    let mut inflate = gzip.then(|| flate2::write::GzDecoder::new(Vec::new()));
    let (mut read, mut written) = (0u64, 0u64);
    let bad_gzip = |e: std::io::Error| {
        ControlError::Invalid(format!("the gzipped request body is corrupt: {e}"))
    };
    let mut open = true;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ControlError::Invalid(format!("reading the request body: {e}")))?;
        read += chunk.len() as u64;
        if read > max {
            return Err(too_large(max));
        }
        for piece in chunk.chunks(PIECE) {
            let data = match &mut inflate {
                Some(d) => {
                    d.write_all(piece).map_err(bad_gzip)?;
                    std::mem::take(d.get_mut())
                }
                None => piece.to_vec(),
            };
            written += data.len() as u64;
            if written > max {
                return Err(too_large(max));
            }
            keep_head(head, &data);
            if open && stdin.write_all(&data).await.is_err() {
                open = false;
            }
        }
    }
    if let Some(d) = inflate {
        let rest = d.finish().map_err(bad_gzip)?;
        if written + rest.len() as u64 > max {
            return Err(too_large(max));
        }
        keep_head(head, &rest);
        if open {
            let _ = stdin.write_all(&rest).await;
        }
    }
    Ok(())
}

fn keep_head(head: &mut Vec<u8>, data: &[u8]) {
    let room = HEAD.saturating_sub(head.len());
    head.extend_from_slice(&data[..room.min(data.len())]);
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

/// Whether the client asked for side-band-64k: the capabilities follow a NUL in the first
/// command of a receive-pack request (after any `shallow` lines).
fn sideband(head: &[u8]) -> bool {
    let mut rest = head;
    while rest.len() >= 4 {
        let Some(len) = std::str::from_utf8(&rest[..4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            return false;
        };
        if len < 4 || len > rest.len() {
            return false;
        }
        let line = &rest[4..len];
        if let Some(nul) = line.iter().position(|&b| b == 0) {
            return line[nul + 1..]
                .split(|&b| b == b' ' || b == b'\n')
                .any(|cap| cap == b"side-band-64k");
        }
        rest = &rest[len..];
    }
    false
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

    #[test]
    fn side_band_is_read_from_the_first_command() {
        let mut req = Vec::new();
        pkt_line(
            &mut req,
            b"shallow 0123456789012345678901234567890123456789\n",
        );
        pkt_line(
            &mut req,
            b"0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/x\0report-status side-band-64k agent=git/2\n",
        );
        req.extend_from_slice(FLUSH);
        assert!(sideband(&req));
        let mut plain = Vec::new();
        pkt_line(&mut plain, b"0 1 refs/heads/x\0report-status\n");
        assert!(!sideband(&plain));
        assert!(!sideband(b"0000"));
        assert!(!sideband(b"zzzz"));
        assert!(!sideband(b"0fff0 1"), "a length past the end");
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
