"""gRPC's HTTP/2 mapping of responses: response headers, trailers with
grpc-status and percent-encoded grpc-message, and the grpc-timeout header
(the gRPC over HTTP/2 protocol description)."""
from __future__ import annotations

import grpc

from brain.transport.h2.hpack import literal, literal_indexed_name

# :status 200 is static entry 8; content-type (static name 31) as a literal
RESPONSE_HEADERS = b"\x88" + literal_indexed_name(31, b"application/grpc")
OK_TRAILERS = literal(b"grpc-status", b"0")

_CODE_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


def code_value(code: grpc.StatusCode | int) -> int:
    return code if isinstance(code, int) else code.value[0]


def status_code(value: int) -> grpc.StatusCode:
    return _CODE_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


def percent_encode(message: str) -> bytes:
    """grpc-message: printable ASCII except '%' as is, all else as %XX of
    the UTF-8 bytes."""
    raw = message.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def trailers(code: grpc.StatusCode | int, details: str | None) -> bytes:
    value = code_value(code)
    if value == 0 and not details:
        return OK_TRAILERS
    block = literal(b"grpc-status", str(value).encode())
    if details:
        block += literal(b"grpc-message", percent_encode(details))
    return block
