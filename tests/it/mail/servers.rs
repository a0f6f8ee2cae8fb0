//! What the mail tests use: the app that sends mail with Python's smtplib, `World`, a plain
//! SMTP server standing for the real world that records what it receives, and `Smtp`, a raw
//! conversation with the catcher.
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::support::Repo;

/// The app: `/env/NAME` answers the variable; `/send?to=A,B&subject=S[&url=U][&big=1]` sends a
/// multipart mail (text, HTML, a PDF attachment) with smtplib to the server in `SMTP_URL` (or
/// `U`), logging in with its credentials, and answers `sent` or `error: …`.
const MAILER: &str = r#"
import os, smtplib, urllib.parse
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
def send(q):
    url = urllib.parse.urlsplit(q.get("url", [os.environ.get("SMTP_URL", "")])[0])
    to = q["to"][0].split(",")
    msg = EmailMessage()
    msg["From"] = "Shop <shop@shop.example>"
    msg["To"] = ", ".join(to)
    msg["Subject"] = q.get("subject", ["Your order"])[0]
    msg.set_content("Thanks for your order.\n")
    msg.add_alternative("<p>Thanks for your <b>order</b>.</p>\n", subtype="html")
    payload = b"%PDF-1.4 invoice\n" * (700000 if "big" in q else 1)
    msg.add_attachment(payload, maintype="application", subtype="pdf", filename="invoice.pdf")
    with smtplib.SMTP(url.hostname, url.port, timeout=30) as s:
        if url.username and "nologin" not in q:
            s.login(urllib.parse.unquote(url.username), urllib.parse.unquote(url.password))
        s.send_message(msg, from_addr="shop@shop.example", to_addrs=to)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path.startswith("/env/"):
            body = os.environ.get(path[5:], "(unset)")
        elif path == "/send":
            try:
                send(urllib.parse.parse_qs(query))
                body = "sent"
            except Exception as e:
                body = "error: %s" % (e,)
        else:
            body = "up"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, fmt, *args):
        pass
s = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
s.daemon_threads = True
s.serve_forever()
"#;

pub fn mailer_repo() -> Repo {
    let repo = Repo::with_app(MAILER);
    repo.write(
        "turnout.toml",
        "[run]\ncommand = \"exec python3 -u app.py\"\n[health]\npath = \"/\"\ninterval = \"50ms\"\n\n[tiers.qa.mail]\nurl_var = \"MAILER_URL\"\n",
    );
    repo.commit("mailer");
    repo
}

/// One message the world's server received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// A plain SMTP server on 127.0.0.1 standing for the real world: it accepts everything and
/// records what it received.
pub struct World {
    pub port: u16,
    received: Arc<Mutex<Vec<Delivery>>>,
}

impl World {
    pub async fn start() -> World {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let (r, mut w) = stream.into_split();
                    let mut r = BufReader::new(r);
                    let mut delivery = Delivery {
                        from: String::new(),
                        to: vec![],
                        data: String::new(),
                    };
                    w.write_all(b"220 world ESMTP\r\n").await.unwrap();
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let answer: &[u8] = if upper.starts_with("EHLO") {
                            b"250-world\r\n250 8BITMIME\r\n"
                        } else if upper.starts_with("MAIL FROM:") {
                            delivery.from = address(&line);
                            b"250 ok\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            delivery.to.push(address(&line));
                            b"250 ok\r\n"
                        } else if upper.starts_with("DATA") {
                            w.write_all(b"354 go on\r\n").await.unwrap();
                            loop {
                                line.clear();
                                r.read_line(&mut line).await.unwrap();
                                if line == ".\r\n" {
                                    break;
                                }
                                delivery.data.push_str(&line);
                            }
                            kept.lock().unwrap().push(delivery.clone());
                            b"250 queued as world-1\r\n"
                        } else if upper.starts_with("QUIT") {
                            w.write_all(b"221 bye\r\n").await.unwrap();
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        w.write_all(answer).await.unwrap();
                    }
                });
            }
        });
        World { port, received }
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.received.lock().unwrap().clone()
    }
}

fn address(line: &str) -> String {
    let start = line.find('<').map_or(0, |i| i + 1);
    let end = line.find('>').unwrap_or(line.len());
    line[start..end].to_owned()
}

/// A raw SMTP conversation with the catcher's host listener.
pub struct Smtp {
    r: BufReader<OwnedReadHalf>,
    pub w: OwnedWriteHalf,
}

impl Smtp {
    pub async fn connect(port: u16) -> Smtp {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (r, w) = stream.into_split();
        let mut s = Smtp {
            r: BufReader::new(r),
            w,
        };
        let (code, _) = s.reply().await;
        assert_eq!(code, 220);
        let (code, text) = s.say("EHLO tester").await;
        assert_eq!(code, 250, "{text}");
        assert!(text.contains("SIZE 10485760"), "SIZE is advertised: {text}");
        assert!(text.contains("AUTH PLAIN LOGIN"), "{text}");
        s
    }

    pub async fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).await.unwrap();
            assert!(line.len() >= 4, "short reply {line:?} after {all:?}");
            all.push_str(&line);
            if line.as_bytes()[3] == b' ' {
                return (line[..3].parse().unwrap(), all);
            }
        }
    }

    pub async fn say(&mut self, line: &str) -> (u16, String) {
        self.w
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        self.reply().await
    }

    pub async fn plain(&mut self, authz: &str, user: &str, password: &str) -> (u16, String) {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{authz}\0{user}\0{password}"));
        self.say(&format!("AUTH PLAIN {token}")).await
    }

    /// MAIL, RCPT, DATA of a small message; the answer to its final dot.
    pub async fn send(&mut self, subject: &str) -> (u16, String) {
        let (code, text) = self.say("MAIL FROM:<probe@shop.example>").await;
        assert_eq!(code, 250, "{text}");
        let (code, text) = self.say("RCPT TO:<someone@customer.test>").await;
        assert_eq!(code, 250, "{text}");
        let (code, text) = self.say("DATA").await;
        assert_eq!(code, 354, "{text}");
        self.say(&format!("Subject: {subject}\r\n\r\nhello\r\n."))
            .await
    }
}

/// The catcher URL's parts: (user, password, port).
pub fn parts(url: &str) -> (String, String, u16) {
    let rest = url.strip_prefix("smtp://").unwrap();
    let (userinfo, host) = rest.rsplit_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    assert!(host.starts_with("127.0.0.1:"), "{url}");
    let port = host.rsplit_once(':').unwrap().1.parse().unwrap();
    (user.to_owned(), password.to_owned(), port)
}
