#!/usr/bin/env python3
"""A small HTTP server on 127.0.0.1 for the ecosystem plugins' tests (Shardwork's own fixture).

It binds a free port, writes the port to --port-file, exits when the process --parent-pid names is
gone, and appends one JSON line per request to
--log: method, path, query, headers (lower-case names), body, and, when --secret is given, the
HMAC-SHA256 of the body under it ("hmac") and DingTalk's sign for the request's timestamp
("dingtalkSign"). The line is written before the answer is sent.

What it answers depends on the path:
  /status/CODE      CODE, with body "status CODE"
  /forged           500, with a body made to forge log lines (a line break, a fake entry, escapes)
  /delay/MS         200 after MS milliseconds
  /errcode/N        200 with {"errcode":N,"errmsg":"..."} (WeChat Work's and DingTalk's answer)
  anything else     200 "ok"
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def watch_parent(parent):
    """Exits when the test process that started the server is gone (the server is then re-parented)."""
    if parent is None:
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main():
    # A child of a Swift process may inherit a mask that blocks SIGTERM (threads of libdispatch block
    # signals, and a spawned program keeps its parent thread's mask): unblock, so stopping works.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    parser = argparse.ArgumentParser()
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--secret")
    options = parser.parse_args()
    watch_parent(options.parent_pid)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def answer(self):
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            record = {
                "method": self.command,
                "path": parts.path,
                "query": parts.query,
                "headers": {name.lower(): value for name, value in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
            }
            if options.secret is not None:
                key = options.secret.encode()
                record["hmac"] = hmac.new(key, body, hashlib.sha256).hexdigest()
                timestamp = urllib.parse.parse_qs(parts.query).get("timestamp", [None])[0]
                if timestamp is not None:
                    digest = hmac.new(key, (timestamp + "\n" + options.secret).encode(), hashlib.sha256).digest()
                    record["dingtalkSign"] = base64.b64encode(digest).decode()
            with lock, open(options.log, "a") as log:
                log.write(json.dumps(record) + "\n")

            status, reply = 200, b"ok"
            segments = parts.path.strip("/").split("/")
            if segments[0] == "status" and len(segments) > 1:
                status, reply = int(segments[1]), ("status " + segments[1]).encode()
            elif segments[0] == "delay" and len(segments) > 1:
                time.sleep(int(segments[1]) / 1000)
                reply = b"slept"
            elif segments[0] == "forged":
                # A body made to forge log lines: a line break, a fake entry, terminal escapes.
                status = 500
                reply = b"oops\n2026-12-06T00:00:00+0000 critical shardwork: [ShardworkCore] host compromised\x1b[31m"
            elif segments[0] == "errcode" and len(segments) > 1:
                reply = json.dumps({"errcode": int(segments[1]), "errmsg": "test answer " + segments[1]}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    temporary = options.port_file + ".tmp"
    with open(temporary, "w") as file:
        file.write(str(server.server_address[1]))
    os.rename(temporary, options.port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
