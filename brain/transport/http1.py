"""Plain HTTP/1.1 GETs on the gRPC port, as etcd answers /health, /version
and /metrics beside gRPC: a bounded, sans-IO request-head parser and the
response bytes. One request per connection; the response says
`Connection: close`."""
from __future__ import annotations

import re
from dataclasses import dataclass

# the head (request line and headers) of a probe or a scrape is small
MAX_HEAD = 16 * 1024
READ_TIMEOUT = 10.0

_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) (\S{1,8192}) HTTP/1\.[01]")
_METHOD_START = re.compile(rb"[A-Z]{1,16}( |$)")
REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
}


class BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(slots=True)
class RequestHead:
    method: str
    path: str  # without the query


def looks_like_http1(start: bytes) -> bool | None:
    """Whether a connection's first bytes begin an HTTP/1.x request line
    (None: too few bytes to tell)."""
    if _METHOD_START.match(start):
        return True
    if len(start) <= 16 and start.isalpha() and start.isupper():
        return None
    return False


def parse_head(buf: bytes) -> RequestHead | None:
    """The request's head once it is complete (None: not yet)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise BadRequest(431)
        return None
    if end > MAX_HEAD:
        raise BadRequest(431)
    line = buf[:buf.find(b"\r\n")]
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        raise BadRequest(400)
    target = match.group(2).decode("latin-1")
    return RequestHead(match.group(1).decode("ascii"), target.split("?", 1)[0])


def response(status: int, content_type: str, body: bytes, allow: str = "") -> bytes:
    head = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if allow:
        head.append(f"Allow: {allow}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def error_response(status: int) -> bytes:
    body = b"404 page not found\n" if status == 404 else f"{REASONS.get(status, 'Error')}\n".encode()
    return response(status, "text/plain; charset=utf-8", body, allow="GET" if status == 405 else "")
