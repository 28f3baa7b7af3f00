#!/usr/bin/env python3
"""A tiny app for the invocation demo (Python standard library only).

    app.py NAME APP_PORT DAPR_HTTP_PORT PEER

GET /ping asks PEER's /pong through this app's own daprd (service invocation: daprd to daprd
over mutual TLS) and answers with what came back; GET /pong answers with this app's name and
the caller daprd stamped (dapr-caller-app-id).
"""
import json
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT, DAPR_HTTP_PORT, PEER = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


class Handler(BaseHTTPRequestHandler):
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/pong"):
            self.reply({"app": NAME, "called_by": self.headers.get("dapr-caller-app-id")})
        elif self.path.startswith("/ping"):
            url = f"http://127.0.0.1:{DAPR_HTTP_PORT}/v1.0/invoke/{PEER}/method/pong"
            with urllib.request.urlopen(url, timeout=10) as r:
                self.reply({"app": NAME, "asked": PEER, "answer": json.loads(r.read())})
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
