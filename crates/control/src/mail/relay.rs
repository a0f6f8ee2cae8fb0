//! The minimal SMTP client that passes an allowed caught message on to a tier's relay: EHLO,
//! STARTTLS when the server offers it (or TLS from the start for `smtps://`), AUTH PLAIN when
//! the URL has credentials (never over a plain connection, except to loopback), MAIL, RCPT,
//! DATA, QUIT, all under one deadline. TLS is rustls with the `ring` provider and the
//! webpki roots; the server's certificate must name the URL's host.
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use turnout_model::MAX_RELAY_URL;

/// The whole exchange with the relay, connection included.
const DEADLINE: Duration = Duration::from_secs(120);
/// The longest reply line and the most lines of one reply read from the relay.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 100;

/// A relay's URL: `smtp://` (port 25, STARTTLS when offered) or `smtps://` (port 465, TLS
/// from the start), with an optional `user:password@`.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub implicit_tls: bool,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

const URL_HOW: &str = "write smtp://[USER:PASSWORD@]HOST[:PORT] or smtps://…";

impl RelayUrl {
    pub fn parse(text: &str) -> Result<RelayUrl, String> {
        if text.len() > MAX_RELAY_URL {
            return Err(format!(
                "the relay URL is longer than {MAX_RELAY_URL} bytes; {URL_HOW}"
            ));
        }
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!(
                "the relay URL contains spaces or control characters; {URL_HOW}"
            ));
        }
        let (implicit_tls, rest) = if let Some(r) = text.strip_prefix("smtps://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("smtp://") {
            (false, r)
        } else {
            return Err(format!(
                "the relay URL must start with smtp:// or smtps://; {URL_HOW}"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "the relay URL has a path, query or fragment; {URL_HOW}"
            ));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user)?;
                if user.is_empty() {
                    return Err(format!("the relay URL has an empty user name; {URL_HOW}"));
                }
                (Some(user), Some(percent_decode(password)?))
            }
        };
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (addr, after) = v6.split_once(']').ok_or_else(|| {
                    format!("the relay URL's IPv6 address lacks its ']'; {URL_HOW}")
                })?;
                addr.parse::<std::net::Ipv6Addr>()
                    .map_err(|_| format!("'{addr}' is not an IPv6 address; {URL_HOW}"))?;
                (addr.to_owned(), after.strip_prefix(':'))
            }
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            },
        };
        if !host.contains(':') && !valid_host(&host) {
            return Err(format!(
                "'{host}' is not a host name or address (letters, digits, '-' and '.'); {URL_HOW}"
            ));
        }
        let port = match port {
            None => {
                if implicit_tls {
                    465
                } else {
                    25
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("'{p}' is not a port (1-65535); {URL_HOW}"))?,
        };
        Ok(RelayUrl {
            implicit_tls,
            host: host.to_ascii_lowercase(),
            port,
            user,
            password,
        })
    }

    /// The URL without its password.
    pub fn shown(&self) -> String {
        let scheme = if self.implicit_tls { "smtps" } else { "smtp" };
        let user = self
            .user
            .as_ref()
            .map(|u| format!("{}@", percent_encode(u)))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{user}{host}:{}", self.port)
    }

    fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("the relay URL has a bad %-escape; {URL_HOW}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| format!("the relay URL's credentials are not UTF-8; {URL_HOW}"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the relay said to a delivered message.
#[derive(Debug)]
pub struct Delivered {
    /// The recipients it accepted.
    pub accepted: Vec<String>,
    /// Its answer to the message (and, if it refused some recipients, which and why).
    pub reply: String,
}

/// The TLS settings relays are checked with: the public roots (webpki-roots), and any CA
/// certificates the daemon was given for private relays (`turnout serve --mail-relay-ca`).
#[derive(Clone)]
pub struct RelayTls(Arc<rustls::ClientConfig>);

impl RelayTls {
    /// The public roots, plus every certificate in the PEM file `extra_ca`, if given; an error
    /// names the file and what is wrong with it.
    pub fn new(extra_ca: Option<&std::path::Path>) -> Result<RelayTls, String> {
        let config = crate::tls::client_config(extra_ca)?;
        Ok(RelayTls(Arc::new(config)))
    }
}

/// Send `raw` from `from` to `to` through the relay at `url`.
pub async fn send(
    tls: &RelayTls,
    url: &RelayUrl,
    from: &str,
    to: &[String],
    raw: &[u8],
) -> Result<Delivered, String> {
    tokio::time::timeout(DEADLINE, exchange(tls, url, from, to, raw))
        .await
        .map_err(|_| {
            format!(
                "no answer from {} within {}s",
                url.shown(),
                DEADLINE.as_secs()
            )
        })?
}

struct Conn {
    io: BufReader<Box<dyn Io>>,
}

impl Conn {
    /// One reply: its code and the text of each line.
    async fn reply(&mut self) -> Result<(u16, Vec<String>), String> {
        let mut text = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            let mut line = Vec::new();
            let n = (&mut self.io)
                .take(MAX_REPLY_LINE as u64)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| format!("reading the relay's answer: {e}"))?;
            if n == 0 {
                return Err("the relay closed the connection".to_owned());
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            let shown: String = line.chars().take(100).collect();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    format!("the relay answered something that is not SMTP: {shown:?}")
                })?;
            text.push(line.get(4..).unwrap_or("").to_owned());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
        }
        Err(format!(
            "the relay's answer has more than {MAX_REPLY_LINES} lines"
        ))
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        self.io
            .get_mut()
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("writing to the relay: {e}"))
    }

    /// Send `line`, expect a reply of `class` (2 or 3); its text.
    async fn command(&mut self, line: &str, class: u16, what: &str) -> Result<String, String> {
        self.send(line).await?;
        let (code, text) = self.reply().await?;
        let text = text.join(" ");
        if code / 100 != class {
            return Err(format!("the relay refused {what}: {code} {text}"));
        }
        Ok(text)
    }

    /// EHLO; the extensions the relay offers (their keywords, upper-cased).
    async fn ehlo(&mut self) -> Result<Vec<String>, String> {
        self.send("EHLO turnout\r\n").await?;
        let (code, lines) = self.reply().await?;
        if code != 250 {
            return Err(format!(
                "the relay refused EHLO: {code} {}",
                lines.join(" ")
            ));
        }
        Ok(lines
            .iter()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_ascii_uppercase)
            .collect())
    }

    async fn start_tls(self, tls: &RelayTls, host: &str) -> Result<Conn, String> {
        let inner = self.io.into_inner();
        let tls = tls_connect(tls, inner, host).await?;
        Ok(Conn {
            io: BufReader::new(Box::new(tls)),
        })
    }
}

async fn tls_connect(
    tls: &RelayTls,
    io: Box<dyn Io>,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<Box<dyn Io>>, String> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("'{host}' cannot be checked against a certificate: {e}"))?;
    TlsConnector::from(tls.0.clone())
        .connect(name, io)
        .await
        .map_err(|e| format!("TLS with the relay failed: {e}"))
}

async fn exchange(
    tls: &RelayTls,
    url: &RelayUrl,
    from: &str,
    to: &[String],
    raw: &[u8],
) -> Result<Delivered, String> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", url.shown()))?;
    let io: Box<dyn Io> = if url.implicit_tls {
        Box::new(tls_connect(tls, Box::new(tcp), &url.host).await?)
    } else {
        Box::new(tcp)
    };
    let mut conn = Conn {
        io: BufReader::new(io),
    };
    let mut secure = url.implicit_tls;
    let (code, text) = conn.reply().await?;
    if code != 220 {
        return Err(format!(
            "the relay did not greet: {code} {}",
            text.join(" ")
        ));
    }
    let extensions = conn.ehlo().await?;
    if !secure && extensions.iter().any(|e| e == "STARTTLS") {
        conn.command("STARTTLS\r\n", 2, "STARTTLS").await?;
        conn = conn.start_tls(tls, &url.host).await?;
        secure = true;
        conn.ehlo().await?;
    }
    if let (Some(user), Some(password)) = (&url.user, &url.password) {
        if !secure && !url.is_loopback() {
            return Err(format!(
                "{} offers no TLS: the password is not sent over a plain connection (use smtps:// or a server with STARTTLS)",
                url.shown()
            ));
        }
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        conn.command(&format!("AUTH PLAIN {token}\r\n"), 2, "the login")
            .await?;
    }
    conn.command(&format!("MAIL FROM:<{from}>\r\n"), 2, "the sender")
        .await?;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for rcpt in to {
        conn.send(&format!("RCPT TO:<{rcpt}>\r\n")).await?;
        let (code, text) = conn.reply().await?;
        if code / 100 == 2 {
            accepted.push(rcpt.clone());
        } else {
            refused.push(format!("{rcpt}: {code} {}", text.join(" ")));
        }
    }
    if accepted.is_empty() {
        return Err(format!(
            "the relay refused every recipient ({})",
            refused.join("; ")
        ));
    }
    conn.command("DATA\r\n", 3, "DATA").await?;
    conn.io
        .get_mut()
        .write_all(&dot_stuffed(raw))
        .await
        .map_err(|e| format!("writing to the relay: {e}"))?;
    let (code, text) = conn.reply().await?;
    let text = text.join(" ");
    if code / 100 != 2 {
        return Err(format!("the relay refused the message: {code} {text}"));
    }
    let _ = conn.send("QUIT\r\n").await;
    let mut reply = format!("{code} {text}");
    if !refused.is_empty() {
        reply.push_str(&format!(" (refused: {})", refused.join("; ")));
    }
    Ok(Delivered { accepted, reply })
}

/// The message as DATA sends it (RFC 5321 §4.5.2): CRLF line ends, a '.' doubled at the start
/// of a line, then the closing `.`.
fn dot_stuffed(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 50 + 5);
    for line in raw.split_inclusive(|b| *b == b'\n') {
        let body = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if body.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_and_shown_without_their_password() {
        let u = RelayUrl::parse("smtp://me%40x:s%3Acret@Mail.Example.com:587").unwrap();
        assert_eq!(u.user.as_deref(), Some("me@x"));
        assert_eq!(u.password.as_deref(), Some("s:cret"));
        assert_eq!(u.host, "mail.example.com");
        assert_eq!(u.port, 587);
        assert_eq!(u.shown(), "smtp://me%40x@mail.example.com:587");
        assert_eq!(
            format!("{u:?}"),
            u.shown(),
            "Debug never shows the password"
        );
        let u = RelayUrl::parse("smtps://[::1]").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.implicit_tls),
            ("::1", 465, true)
        );
        assert_eq!(RelayUrl::parse("smtp://relay.test").unwrap().port, 25);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://x.test", "smtp:// or smtps://"),
            ("smtp://x.test:0", "not a port"),
            ("smtp://x.test:99999", "not a port"),
            ("smtp://x.test/path", "path"),
            ("smtp://bad_host", "not a host"),
            ("smtp://x.test\r\nRCPT", "control"),
            ("smtp://:pw@x.test", "empty user"),
            ("smtp://a:%zz@x.test", "%-escape"),
        ] {
            let e = RelayUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        assert!(RelayUrl::parse(&format!("smtp://{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn data_is_dot_stuffed_with_crlf_line_ends() {
        assert_eq!(
            dot_stuffed(b"Subject: x\r\n\r\n.hidden\nlast"),
            b"Subject: x\r\n\r\n..hidden\r\nlast\r\n.\r\n".to_vec()
        );
    }
}
