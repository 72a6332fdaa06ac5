#!/usr/bin/env python3
"""Tiny stdlib-only HTTP target for the swarmtel Locust capture.

Usage: python3 target.py [PORT]   (binds 127.0.0.1, default port 8089; 0 for any free port,
printed as `listening on 127.0.0.1:<port>`)
"""
import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_flaky_counter = 0
_order_counter = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # avoid 40 ms Nagle/delayed-ACK stalls on keep-alive

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global _flaky_counter
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, "ok\n", "text/plain")
        elif path == "/items":
            time.sleep(random.uniform(0.001, 0.015))
            items = [{"id": i, "name": f"item-{i}", "price": round(1.5 * i, 2)} for i in range(1, 11)]
            self._send(200, json.dumps({"items": items}))
        elif path.startswith("/items/") and len(path) > len("/items/"):
            item_id = path[len("/items/"):]
            self._send(200, json.dumps({"id": item_id, "name": f"item-{item_id}"}))
        elif path == "/flaky":
            with _lock:
                _flaky_counter += 1
                n = _flaky_counter
            if n % 10 == 0:  # deterministic: every 10th call fails
                self._send(500, json.dumps({"error": "flaky failure", "n": n}))
            else:
                self._send(200, json.dumps({"ok": True, "n": n}))
        else:
            self._send(404, json.dumps({"error": "not found"}))

    def do_POST(self):
        global _order_counter
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if path == "/orders":
            time.sleep(random.uniform(0.005, 0.030))
            with _lock:
                _order_counter += 1
                oid = _order_counter
            self._send(201, json.dumps({"order_id": oid, "status": "created"}))
        else:
            self._send(404, json.dumps({"error": "not found"}))


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # Locust stops users mid-request at the end of a run: a reset is not news.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8089
    server = Server(("127.0.0.1", port), Handler)
    # Port 0 picks a free port: say which, for the scripts that start us.
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
