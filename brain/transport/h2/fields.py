"""The header-field rules of a request (RFC 9113 8.2 and 8.3): a request
that breaks one is malformed, a stream error of type PROTOCOL_ERROR, which
the core answers with RST_STREAM as Go's HTTP/2 servers do.

The decoder checks a header list once, when it decodes its block; a block
it has cached was checked then, so a client's repeated calls cost nothing
here."""
from __future__ import annotations

from brain.transport.h2.hpack import Header

# the pseudo-headers a request may carry (RFC 9113 8.3.1)
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority"))
# connection-specific fields, which HTTP/2 does not use (RFC 9113 8.2.2)
_CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_UPPER = bytes(range(ord("A"), ord("Z") + 1))


class MalformedRequest(Exception):
    """A request header list RFC 9113 calls malformed."""


def check_request(headers: list[Header]) -> None:
    """Raise MalformedRequest if this request header list is malformed:
    a field name with uppercase letters (or empty), a pseudo-header after a
    regular field, one unknown, repeated or of a response, a
    connection-specific field, `te` other than "trailers", an empty :path,
    or no :method, :scheme or :path (a CONNECT has neither :scheme nor
    :path)."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if not name:
            raise MalformedRequest("empty header field name")
        if name[0] == 0x3A:  # ':'
            if regular:
                raise MalformedRequest(f"pseudo-header {name!r} after a regular header")
            if name not in _REQUEST_PSEUDO:
                raise MalformedRequest(f"pseudo-header {name!r} not of a request")
            if name in seen:
                raise MalformedRequest(f"duplicate pseudo-header {name!r}")
            if name == b":path" and not value:
                raise MalformedRequest("empty :path")
            seen.add(name)
            continue
        regular = True
        if len(name.translate(None, _UPPER)) != len(name):
            raise MalformedRequest(f"uppercase header field name {name!r}")
        if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
            raise MalformedRequest(f"connection-specific header field {name!r}")
    if b":method" not in seen:
        raise MalformedRequest("no :method")
    if (b":scheme" not in seen or b":path" not in seen) and not _is_connect(headers):
        raise MalformedRequest("no :scheme or :path")


def _is_connect(headers: list[Header]) -> bool:
    return (b":method", b"CONNECT") in headers
