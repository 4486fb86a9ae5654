"""A small subscriber, as many webhook receivers are written: Python's http.server.

    small_subscriber.py one-at-a-time    HTTPServer: one request at a time, a listen backlog of 5
                                         (socketserver's default), HTTP/1.0 (a connection per
                                         request)
    small_subscriber.py shed N           ThreadingHTTPServer answering 503 while N requests are
                                         already in flight (each takes 20 ms)

Prints its port on the first line, then serves until killed. POST is counted; GET /count answers
the count of accepted POSTs (and, for `shed`, the count of 503s after a space).
"""

import http.server
import sys
import threading
import time

lock = threading.Lock()
accepted = 0
refused = 0
busy = 0
shed_above = None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global accepted, refused, busy
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if shed_above is not None:
            with lock:
                full = busy >= shed_above
                if full:
                    refused += 1
                else:
                    busy += 1
            if full:
                self.answer(503)
                return
            time.sleep(0.02)
            with lock:
                busy -= 1
        with lock:
            accepted += 1
        self.answer(200)

    def do_GET(self):
        with lock:
            body = f"{accepted} {refused}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    global shed_above
    mode = sys.argv[1]
    if mode == "one-at-a-time":
        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    elif mode == "shed":
        shed_above = int(sys.argv[2])
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    else:
        sys.exit(f"unknown mode {mode!r}: use one-at-a-time or shed N")
    print(server.server_address[1], flush=True)
    server.serve_forever()


main()
