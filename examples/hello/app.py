"""The demo app: a tiny web server that says which environment and release it runs in.

It needs nothing but python3. Turnout starts it with PORT, TURNOUT_ENV, TURNOUT_TIER and
TURNOUT_RELEASE in its environment, and its own database in TURNOUT_SQLITE_PATH (DATABASE_URL):
the notes shown on the page are each environment's own (seeded from seed.sql below production).
"""
import html
import os
import signal
import sqlite3
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # http.server writes the head and the body in separate sends; with Nagle's algorithm on,
    # the body waits for the client's delayed ACK of the head (~40 ms per keep-alive request).
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, "text/plain", "ok\n")
            return
        env = os.environ.get("TURNOUT_ENV", "?")
        tier = os.environ.get("TURNOUT_TIER", "?")
        release = os.environ.get("TURNOUT_RELEASE", "?")[:12]
        built = os.path.exists(os.path.join(HERE, "build-stamp.txt"))
        body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hello · {html.escape(env)}</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>{html.escape(message())}</h1>
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
