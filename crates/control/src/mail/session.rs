//! One SMTP conversation with the catcher: mailin's state machine (no I/O) fed line by line
//! from the socket, with what mailin leaves to its user done here: lines and messages bounded,
//! idle connections closed, SIZE advertised and enforced, MAIL/RCPT parameters it does not
//! parse removed, and the sender known before MAIL (a login on the host's listener; the
//! namespace inside one).
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tracing::{info, warn};
use turnout_model::{RelayOutcome, Tier};

use super::{
    Catcher, IDLE, MAX_COMMAND_LINE, MAX_DATA_LINE, MAX_LOGIN_FAILURES, MAX_MESSAGE, MAX_RECIPIENTS,
};
use crate::store::mail::{self as mq, NewMail};
use crate::store::now;
use crate::vault::Credentials;
use crate::vault::service_user;

const HOW: &str = "use the user and password of the environment's SMTP_URL";

/// The environment a logged-in client sends as.
#[derive(Clone)]
struct Sender {
    env_id: i64,
    /// `APP.ENV`, and the password it logged in with (to log in again after EHLO or RSET,
    /// which return mailin's state machine to before the login).
    user: String,
    password: String,
}

/// What one connection has said so far; shared between mailin's handler and the loop.
struct Visit {
    credentials: Credentials,
    /// The environment whose namespace the listener is in.
    inside: Option<i64>,
    /// `APP.ENV` → (environment id, tier), read before each login step.
    directory: HashMap<String, (i64, Tier)>,
    sender: Option<Sender>,
    recipients: usize,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    too_big: bool,
    /// A complete message, to be kept by the loop.
    done: Option<(String, Vec<String>, Vec<u8>)>,
    /// The answer to the final dot of a message that was refused.
    refusal: Option<Response>,
}

impl Visit {
    fn login(&mut self, user: &str, password: &str) -> Response {
        let Some(&(env_id, tier)) = self.directory.get(user) else {
            return Response::custom(535, format!("5.7.8 unknown user or wrong password: {HOW}"));
        };
        if !self.credentials.check_credential(env_id, password) {
            return Response::custom(535, format!("5.7.8 unknown user or wrong password: {HOW}"));
        }
        if self.inside.is_some_and(|own| own != env_id) {
            return Response::custom(
                535,
                "5.7.8 these are another environment's credentials: an environment sends mail only as itself"
                    .to_owned(),
            );
        }
        if tier == Tier::Production {
            return Response::custom(
                535,
                "5.7.8 production does not use the mail catcher: its SMTP_URL is the one set with `turnout config`"
                    .to_owned(),
            );
        }
        self.sender = Some(Sender {
            env_id,
            user: user.to_owned(),
            password: password.to_owned(),
        });
        mailin::response::AUTH_OK
    }

    fn reset(&mut self) {
        self.recipients = 0;
        self.from.clear();
        self.to.clear();
        self.data = Vec::new();
        self.too_big = false;
    }
}

/// What `strip_parameters` hands mailin for the null reverse-path `<>`: an empty quoted local
/// part without a domain, which no real sender can be.
const NULL_SENDER: &str = "\"\"";

/// The envelope sender as kept: empty for the null reverse-path.
fn sender(from: &str) -> String {
    match from {
        NULL_SENDER => String::new(),
        _ => from.to_owned(),
    }
}

/// mailin's handler: decisions made from the shared `Visit`.
struct Shared(Arc<Mutex<Visit>>);

fn lock(v: &Mutex<Visit>) -> MutexGuard<'_, Visit> {
    v.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handler for Shared {
    fn mail(&mut self, _ip: std::net::IpAddr, _domain: &str, from: &str) -> Response {
        let mut v = lock(&self.0);
        v.reset();
        v.from = sender(from);
        mailin::response::OK
    }

    fn rcpt(&mut self, _to: &str) -> Response {
        let mut v = lock(&self.0);
        if v.recipients >= MAX_RECIPIENTS {
            return Response::custom(
                452,
                format!("4.5.3 too many recipients: at most {MAX_RECIPIENTS} per message"),
            );
        }
        v.recipients += 1;
        mailin::response::OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        let mut v = lock(&self.0);
        v.from = sender(from);
        v.to = to.to_vec();
        v.data = Vec::new();
        v.too_big = false;
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut v = lock(&self.0);
        if v.too_big {
            return Ok(());
        }
        if v.data.len() + buf.len() > MAX_MESSAGE {
            // Read to the end (the client is owed an answer after its final dot) but keep
            // nothing more.
            v.too_big = true;
            v.data = Vec::new();
        } else {
            v.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut v = lock(&self.0);
        if v.too_big {
            // mailin stays in its DATA state after an error answer here, reading the next
            // commands as message lines: it gets OK, and the loop answers the refusal.
            v.reset();
            v.refusal = Some(too_big());
            return mailin::response::OK;
        }
        let message = (
            std::mem::take(&mut v.from),
            std::mem::take(&mut v.to),
            std::mem::take(&mut v.data),
        );
        v.reset();
        v.done = Some(message);
        mailin::response::OK
    }

    fn auth_plain(
        &mut self,
        authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> Response {
        let user = if authentication_id.is_empty() {
            authorization_id
        } else {
            authentication_id
        };
        lock(&self.0).login(user, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        lock(&self.0).login(username, password)
    }
}

fn too_big() -> Response {
    Response::custom(
        552,
        format!(
            "5.3.4 message larger than the catcher's limit of {MAX_MESSAGE} bytes; nothing was kept"
        ),
    )
}

/// The answer to a connection beyond `MAX_CONNECTIONS`.
pub(super) async fn refuse_busy(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"421 4.3.2 too many connections to the mail catcher; try again later\r\n")
        .await;
}

enum Line {
    Complete,
    End,
    TooLong,
    Idle,
}

/// Read one line (through its LF) into `line`, at most `limit` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Line> {
    line.clear();
    loop {
        let buf = match tokio::time::timeout(IDLE, reader.fill_buf()).await {
            Err(_) => return Ok(Line::Idle),
            Ok(buf) => buf?,
        };
        if buf.is_empty() {
            return Ok(Line::End);
        }
        let (take, complete) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > limit {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if complete {
            return Ok(Line::Complete);
        }
    }
}

/// The command's verb, upper-cased.
fn verb(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end.min(16)]).to_ascii_uppercase()
}

/// `MAIL FROM:<a> SIZE=n BODY=8BITMIME` → (`MAIL FROM:<a> BODY=8BITMIME`, SIZE) for mailin,
/// which parses no other parameter; `RCPT TO:<a> NOTIFY=…` → `RCPT TO:<a>`. The null
/// reverse-path of bounces and notifications (`MAIL FROM:<>`, which every server must take,
/// RFC 5321 4.5.5) becomes `NULL_SENDER`, as mailin wants a path; the handler maps it back.
fn strip_parameters(line: &[u8]) -> (Vec<u8>, Option<u64>) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    let Some(close) = text.find('>') else {
        return (line.to_vec(), None);
    };
    let (path, params) = text.split_at(close + 1);
    let mut out = match path.strip_suffix("<>") {
        Some(verb) if verb.to_ascii_uppercase().starts_with("MAIL") => {
            format!("{verb}<{NULL_SENDER}>")
        }
        _ => path.to_owned(),
    };
    let mut size = None;
    for param in params.split_ascii_whitespace() {
        let upper = param.to_ascii_uppercase();
        if let Some(n) = upper.strip_prefix("SIZE=") {
            size = Some(n.parse().unwrap_or(u64::MAX));
        } else if upper.starts_with("BODY=") && path.to_ascii_uppercase().starts_with("MAIL") {
            out.push(' ');
            out.push_str(param);
        }
    }
    out.push_str("\r\n");
    (out.into_bytes(), size)
}

/// An `AUTH PLAIN` line logging in as `user`.
fn login_line(user: &str, password: &str) -> Vec<u8> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    format!("AUTH PLAIN {token}\r\n").into_bytes()
}

fn bytes(r: &Response) -> Vec<u8> {
    r.buffer().unwrap_or_default()
}

/// Serve one connection to its end.
pub(super) async fn converse(
    catcher: &Arc<Catcher>,
    stream: TcpStream,
    peer: SocketAddr,
    inside: Option<i64>,
) -> io::Result<()> {
    let visit = Arc::new(Mutex::new(Visit {
        credentials: catcher.credentials.clone(),
        inside,
        directory: HashMap::new(),
        sender: None,
        recipients: 0,
        from: String::new(),
        to: Vec::new(),
        data: Vec::new(),
        too_big: false,
        done: None,
        refusal: None,
    }));
    let mut builder = SessionBuilder::new("turnout-mail-catcher");
    // Plain-text logins: the catcher listens on loopback only (the host's, or inside the
    // environment's own namespace), so nothing crosses a network.
    builder
        .enable_auth(AuthMechanism::Plain)
        .enable_auth(AuthMechanism::Login)
        .insecure_enable_plaintext_auth();
    let mut session = builder.build(peer.ip(), Shared(visit.clone()));
    // Inside a namespace, a client that does not log in sends as the namespace's environment.
    let own = match inside {
        Some(id) => catcher
            .store
            .call(move |c| mq::env_of(c, id))
            .await
            .ok()
            .flatten()
            .map(|(app, env, _)| (service_user(&app, &env), catcher.credentials.credential(id))),
        None => None,
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(&bytes(&session.greeting())).await?;
    let mut in_data = false;
    let mut challenged = false;
    let mut failed_logins = 0;
    let mut line = Vec::with_capacity(1024);
    loop {
        let limit = if in_data {
            MAX_DATA_LINE
        } else {
            MAX_COMMAND_LINE
        };
        match read_line(&mut reader, &mut line, limit).await? {
            Line::Complete => {}
            Line::End => return Ok(()),
            Line::TooLong => {
                let answer = format!("500 5.5.2 line longer than {limit} bytes; closing\r\n");
                write.write_all(answer.as_bytes()).await?;
                return Ok(());
            }
            Line::Idle => {
                write
                    .write_all(b"421 4.4.2 idle for too long; closing\r\n")
                    .await?;
                return Ok(());
            }
        }
        if !line.ends_with(b"\r\n") {
            line.pop();
            line.extend_from_slice(b"\r\n");
        }
        if in_data {
            let response = session.process(&line);
            if line == b".\r\n" {
                in_data = false;
                let (kept, refusal) = {
                    let mut v = lock(&visit);
                    (v.done.take(), v.refusal.take())
                };
                let answer = match (kept, refusal) {
                    (_, Some(refusal)) => bytes(&refusal),
                    (Some(message), None) if response.code == 250 => {
                        let sender = lock(&visit).sender.clone();
                        match sender {
                            Some(s) => keep(catcher, &s, message).await,
                            None => bytes(&mailin::response::INTERNAL_ERROR),
                        }
                    }
                    _ => bytes(&response),
                };
                write.write_all(&answer).await?;
            } else if response.action != Action::NoReply {
                write.write_all(&bytes(&response)).await?;
            }
            continue;
        }
        let verb = verb(&line);
        if challenged || verb == "AUTH" {
            refresh_directory(catcher, &visit).await;
        }
        let logged_in = lock(&visit).sender.is_some();
        let mut command = line.clone();
        match verb.as_str() {
            "MAIL" if !logged_in => {
                let answer = match &own {
                    Some((user, password)) => {
                        refresh_directory(catcher, &visit).await;
                        session.process(&login_line(user, password))
                    }
                    None => Response::custom(
                        530,
                        format!("5.7.0 authentication required: log in first ({HOW})"),
                    ),
                };
                if answer.code != 235 {
                    write.write_all(&bytes(&answer)).await?;
                    continue;
                }
            }
            _ => {}
        }
        if verb == "MAIL" || verb == "RCPT" {
            let (stripped, size) = strip_parameters(&line);
            if size.is_some_and(|s| s > MAX_MESSAGE as u64) {
                write.write_all(&bytes(&too_big())).await?;
                continue;
            }
            command = stripped;
        }
        let response = session.process(&command);
        let mut answer = bytes(&response);
        if verb == "EHLO" && response.code == 250 {
            // mailin does not advertise SIZE (RFC 1870): it goes after the greeting line (its
            // answer to EHLO always lists extensions, so the greeting line ends in '-').
            if let Some(end) = answer.windows(2).position(|w| w == b"\r\n")
                && answer.get(3) == Some(&b'-')
            {
                let size = format!("250-SIZE {MAX_MESSAGE}\r\n");
                answer.splice(end + 2..end + 2, size.into_bytes());
            }
        }
        if matches!(verb.as_str(), "EHLO" | "HELO" | "RSET") {
            // mailin's state machine forgets a login on EHLO and RSET; log in again silently.
            let sender = lock(&visit).sender.clone();
            if let Some(s) = sender {
                session.process(&login_line(&s.user, &s.password));
            }
        }
        in_data = response.code == 354;
        challenged = response.code == 334;
        write.write_all(&answer).await?;
        if response.action == Action::Close {
            return Ok(());
        }
        if response.code == 535 {
            failed_logins += 1;
            if failed_logins >= MAX_LOGIN_FAILURES {
                write
                    .write_all(b"421 4.7.0 too many failed logins; closing\r\n")
                    .await?;
                return Ok(());
            }
        }
    }
}

/// Read who may log in (every environment's `APP.ENV`); a failed read leaves it empty, so a
/// login fails rather than passes.
async fn refresh_directory(catcher: &Catcher, visit: &Mutex<Visit>) {
    match catcher.store.call(|c| mq::directory(c)).await {
        Ok(directory) => lock(visit).directory = directory,
        Err(e) => {
            warn!(error = %e, "mail catcher: cannot read the environments");
            lock(visit).directory.clear();
        }
    }
}

/// Keep a complete message; the answer to the client's final dot.
async fn keep(
    catcher: &Catcher,
    sender: &Sender,
    (from, to, raw): (String, Vec<String>, Vec<u8>),
) -> Vec<u8> {
    let (app, env) = sender.user.split_once('.').unwrap_or((&sender.user, ""));
    let size = raw.len();
    let env_id = sender.env_id;
    // A log of what the environment did, bounded per environment, like the egress log: no
    // audit entry each (an app mailing in a loop would grow the audit log without end).
    let kept = catcher
        .store
        .append_log(move |c| {
            let subject = super::parse::subject(&raw);
            mq::insert(
                c,
                &NewMail {
                    env_id,
                    received_at: now(),
                    from,
                    to,
                    subject,
                    raw,
                },
            )
        })
        .await;
    match kept {
        Ok((id, relay)) => {
            info!(app, env, mail = id, size, "mail caught");
            if relay == RelayOutcome::Pending {
                catcher.queue_relay(id);
            }
            bytes(&Response::custom(
                250,
                format!("2.0.0 caught as message {id} (turnout mail show {id})"),
            ))
        }
        Err(e) => {
            warn!(app, env, error = %e, "mail catcher: cannot keep a message");
            bytes(&Response::custom(
                451,
                "4.3.0 the catcher could not keep the message; try again".to_owned(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_mailin_cannot_parse_are_removed_and_size_is_read() {
        let (line, _) = strip_parameters(b"MAIL FROM:<> SIZE=10\r\n");
        assert_eq!(line, b"MAIL FROM:<\"\">\r\n", "the null reverse-path");
        let (line, _) = strip_parameters(b"RCPT TO:<>\r\n");
        assert_eq!(line, b"RCPT TO:<>\r\n", "no recipient is null");
        let (line, size) = strip_parameters(b"MAIL FROM:<a@x.test> size=1234 BODY=8BITMIME\r\n");
        assert_eq!(line, b"MAIL FROM:<a@x.test> BODY=8BITMIME\r\n");
        assert_eq!(size, Some(1234));
        let (line, size) = strip_parameters(b"RCPT TO:<b@y.test> NOTIFY=NEVER\r\n");
        assert_eq!(line, b"RCPT TO:<b@y.test>\r\n");
        assert_eq!(size, None);
        let (_, size) = strip_parameters(b"MAIL FROM:<a@x.test> SIZE=99999999999999999999999\r\n");
        assert_eq!(size, Some(u64::MAX), "an unreadable size counts as too big");
    }

    #[test]
    fn verbs_are_read_case_blind() {
        assert_eq!(verb(b"ehlo me\r\n"), "EHLO");
        assert_eq!(verb(b"DATA\r\n"), "DATA");
    }
}
