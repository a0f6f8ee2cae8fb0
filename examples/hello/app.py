"""The demo app: a tiny web server that says which environment and release it runs in.

It needs nothing but python3. Turnout starts it with PORT, TURNOUT_ENV, TURNOUT_TIER and
TURNOUT_RELEASE in its environment.
"""
import html
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))


def message():
    with open(os.path.join(HERE, "message.txt"), encoding="utf-8") as f:
        return f.read().strip()


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
</body></html>
"""
        self.reply(200, "text/html; charset=utf-8", body)

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
