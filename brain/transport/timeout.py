"""The grpc-timeout request header (the gRPC over HTTP/2 protocol
description): TimeoutValue TimeoutUnit, at most 8 ASCII digits and one of
H M S m u n."""
from __future__ import annotations

_UNITS = {ord("H"): 3600.0, ord("M"): 60.0, ord("S"): 1.0, ord("m"): 1e-3, ord("u"): 1e-6, ord("n"): 1e-9}


def grpc_timeout(value: bytes) -> float:
    """Seconds from a grpc-timeout value; ValueError if it is malformed, which
    etcd's server (grpc-go) answers with RST_STREAM(PROTOCOL_ERROR). grpc-go
    reads the digits as a signed integer, so "-1S" is a deadline already
    past, not an error: the same is done here, as etcd answers it."""
    if not 2 <= len(value) <= 9:
        raise ValueError(f"grpc-timeout of bad length: {value!r}")
    unit = _UNITS.get(value[-1])
    digits = value[:-1]
    sign = 1
    if digits[:1] in (b"-", b"+"):
        sign = -1 if digits[0] == 0x2D else 1
        digits = digits[1:]
    if unit is None or not digits.isdigit():
        raise ValueError(f"malformed grpc-timeout: {value!r}")
    return sign * int(digits) * unit
