#!/usr/bin/env python3
"""A deliberately vulnerable web application for the Wapiti adapter's tests.

It listens on 127.0.0.1 only, on a port the kernel picks, and prints `PORT <n>` on its first line of
output so that the test knows where it is. Pages:

- `/`            links to the others and sets a cookie without the HttpOnly and Secure flags;
- `/search?q=`   reflects `q` unescaped into the page (reflected XSS, CWE-79);
- `/item?id=`    answers a MySQL syntax error when `id` holds a quote (error-based SQL injection, CWE-89);
- `/report?n=`   fails with HTTP 500 when `n` is not a number (an anomaly for Wapiti);
- `/feedback`    a form whose POSTed `comment` is reflected unescaped (reflected XSS over POST).

No security headers are sent. Never expose it beyond the loopback interface.
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

INDEX = b"""<html><head><title>Shop</title></head><body>
<h1>Shop</h1>
<a href="/search?q=shoes">Search shoes</a>
<a href="/item?id=1">Item 1</a>
<a href="/report?n=3">Report 3</a>
<form action="/search" method="get"><input type="text" name="q" value=""><input type="submit"></form>
<form action="/feedback" method="post"><input type="text" name="comment" value="nice">
<input type="hidden" name="token" value="s3cr3t-form-token"><input type="submit"></form>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "VulnerableApp/1.0"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # keep test output quiet

    def answer(self, status, body, extra_headers=()):
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        first = lambda name: (query.get(name) or [""])[0]  # noqa: E731
        if url.path == "/":
            self.answer(200, INDEX, [("Set-Cookie", "session=abc123; Path=/")])
        elif url.path == "/search":
            q = first("q")
            body = "<html><body><p>Results for " + q + "</p><a href=\"/\">home</a></body></html>"
            self.answer(200, body.encode("utf-8", "replace"))
        elif url.path == "/item":
            item = first("id")
            if "'" in item or '"' in item:
                body = (
                    "<html><body><b>Warning</b>: You have an error in your SQL syntax; check the manual that "
                    "corresponds to your MySQL server version for the right syntax to use near '"
                    + item.replace("<", "&lt;")
                    + "' at line 1</body></html>"
                )
            else:
                body = "<html><body><p>Item " + item.replace("<", "&lt;") + "</p></body></html>"
            self.answer(200, body.encode("utf-8", "replace"))
        elif url.path == "/report":
            n = first("n")
            if n.isdigit():
                self.answer(200, b"<html><body><p>Report ready</p></body></html>")
            else:
                self.answer(500, b"<html><body><p>Traceback: ValueError</p></body></html>")
        else:
            self.answer(404, b"<html><body>not found</body></html>")

    def do_POST(self):
        url = urlparse(self.path)
        length = min(int(self.headers.get("Content-Length") or 0), 65536)
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), keep_blank_values=True)
        if url.path == "/feedback":
            comment = (form.get("comment") or [""])[0]
            body = "<html><body><p>Thanks for: " + comment + "</p></body></html>"
            self.answer(200, body.encode("utf-8", "replace"))
        else:
            self.answer(404, b"<html><body>not found</body></html>")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
