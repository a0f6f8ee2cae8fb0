"""The egress and mail sections' probe app: GET /proxy answers the HTTP_PROXY this environment
was started with (Turnout's egress proxy URL with the environment's credentials), GET /smtp its
SMTP_URL (the mail catcher's URL, likewise); GET / says "up".
It listens on 127.0.0.1:$PORT only, and only the benchmark's own daemon routes to it."""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        var = {"/proxy": "HTTP_PROXY", "/smtp": "SMTP_URL"}.get(self.path)
        body = (os.environ.get(var, "") if var else "up").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
