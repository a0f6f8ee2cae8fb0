"""The demo app: a tiny web server that says which environment and release it runs in.

It needs nothing but python3. Turnout starts it with PORT, TURNOUT_ENV, TURNOUT_TIER and
TURNOUT_RELEASE in its environment, and its own database in TURNOUT_SQLITE_PATH (DATABASE_URL):
the notes shown on the page are each environment's own (seeded from seed.sql below production).
Like a real app it has third parties: each new note is mailed to the team through SMTP_URL
(below production, Turnout's mail catcher), and GET /outbound calls https://example.com/ through
whatever HTTP_PROXY it was given (below production, Turnout's egress proxy). A BANNER set with
`turnout config set` is shown on the page.
"""
import html
import os
import signal
import smtplib
import sqlite3
import sys
import urllib.error
import urllib.request
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))


def message():
    with open(os.path.join(HERE, "message.txt"), encoding="utf-8") as f:
        return f.read().strip()


def db():
    path = os.environ.get("TURNOUT_SQLITE_PATH")
    return sqlite3.connect(path, timeout=5) if path else None


def notes_html():
    conn = db()
    if conn is None:
        return ""
    with conn:
        rows = conn.execute(
            "SELECT author, text FROM notes ORDER BY id DESC LIMIT 5"
        ).fetchall()
        count = conn.execute("SELECT count(*) FROM notes").fetchone()[0]
    items = "".join(
        f"<li><b>{html.escape(a)}</b>: {html.escape(t)}</li>" for a, t in rows
    )
    return f"""<h2>{count} notes in this environment's database</h2><ul>{items}</ul>
<form method="post" action="/notes"><label>Add a note <input name="text" required></label>
<button>Add</button></form>"""


def mail_the_team(text):
    """Mail a new note to the team at SMTP_URL; what happened, for the log."""
    url = os.environ.get("SMTP_URL")
    if not url:
        return "no SMTP_URL: not mailed"
    url = urlsplit(url)
    msg = EmailMessage()
    msg["From"] = "hello@example.com"
    msg["To"] = "team@example.com"
    msg["Subject"] = "New note on " + os.environ.get("TURNOUT_ENV", "?")
    msg.set_content(text)
    try:
        with smtplib.SMTP(url.hostname, url.port or 25, timeout=10) as smtp:
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(msg)
        return "mailed to team@example.com"
    except (OSError, smtplib.SMTPException) as e:
        return f"not mailed: {e}"


def call_outside():
    """GET https://example.com/ the way an app calls a partner's API: through the proxy it was
    given, if any."""
    try:
        with urllib.request.urlopen("https://example.com/", timeout=10) as r:
            return f"https://example.com/ answered {r.status}\n"
    except urllib.error.HTTPError as e:
        return f"https://example.com/ refused: {e.code} {e.read(300).decode('utf-8', 'replace')}\n"
    except (OSError, urllib.error.URLError) as e:
        reason = getattr(e, "reason", e)
        if "Tunnel connection failed" in str(reason):
            # The proxy answered the CONNECT with a refusal (urllib keeps only its status line).
            return f"https://example.com/ refused by the proxy: {reason}\n"
        return f"https://example.com/ unreachable: {reason}\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # http.server writes the head and the body in separate sends; with Nagle's algorithm on,
    # the body waits for the client's delayed ACK of the head (~40 ms per keep-alive request).
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, "text/plain", "ok\n")
            return
        if self.path == "/outbound":
            self.reply(200, "text/plain", call_outside())
            return
        env = os.environ.get("TURNOUT_ENV", "?")
        tier = os.environ.get("TURNOUT_TIER", "?")
        release = os.environ.get("TURNOUT_RELEASE", "?")[:12]
        built = os.path.exists(os.path.join(HERE, "build-stamp.txt"))
        body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hello · {html.escape(env)}</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>{html.escape(message())}</h1>
{f"<p><mark>{html.escape(os.environ['BANNER'])}</mark></p>" if os.environ.get("BANNER") else ""}
<p>environment <b>{html.escape(env)}</b> · tier <b>{html.escape(tier)}</b> · release <code>{html.escape(release)}</code>{" · built" if built else ""}</p>
{notes_html()}
</body></html>
"""
        self.reply(200, "text/html; charset=utf-8", body)

    def do_POST(self):
        conn = db()
        if self.path != "/notes" or conn is None:
            self.reply(404, "text/plain", "not found\n")
            return
        length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        text = (form.get("text") or [""])[0].strip()[:500]
        if text:
            with conn:
                conn.execute(
                    "INSERT INTO notes (author, email, text) VALUES (?, ?, ?)",
                    ("visitor", "visitor@example.com", text),
                )
            print(f"new note: {mail_the_team(text)}", flush=True)
        self.send_response(303)
        self.send_header("Location", "/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def reply(self, status, content_type, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()


def main():
    port = int(os.environ["PORT"])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"hello listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
