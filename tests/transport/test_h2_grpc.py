"""grpcio clients over real sockets against the h2 transport."""
from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest

from echo import ServerThread

BIG = 12 * 1024 * 1024
OPTS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def channel(srv: ServerThread) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{srv.port}", options=OPTS)


def test_unary_and_metadata(echo_server):
    with channel(echo_server) as ch:
        call = ch.unary_unary("/test.Echo/Unary")
        for i in range(50):
            assert call(b"hello %d" % i, timeout=5) == b"hello %d" % i
        assert call(b"", timeout=5) == b""
        call(b"m", metadata=[("x-token", "abc")], timeout=5)
    assert ("x-token", "abc") in echo_server.service.metadata[-1]


def test_status_and_percent_encoded_message(echo_server):
    with channel(echo_server) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Abort")("100% wrong: ünïcode\nline".encode(), timeout=5)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert e.value.details() == "100% wrong: ünïcode\nline"
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Missing")(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/no.Such/Service")(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_deadline_exceeded(echo_server):
    with channel(echo_server) as ch:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Echo/Sleep")(b"10", timeout=0.3)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 3
        assert ch.unary_unary("/test.Echo/Sleep")(b"0.01", timeout=5) == b"slept"
    deadline = time.monotonic() + 3
    while "sleep" not in echo_server.service.cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "sleep" in echo_server.service.cancelled


def test_client_cancel(echo_server):
    with channel(echo_server) as ch:
        fut = ch.unary_unary("/test.Echo/Sleep").future(b"10", timeout=30)
        time.sleep(0.3)
        fut.cancel()
        deadline = time.monotonic() + 3
        while "sleep" not in echo_server.service.cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "sleep" in echo_server.service.cancelled
        # the connection is still good
        assert ch.unary_unary("/test.Echo/Unary")(b"after", timeout=5) == b"after"


def test_large_messages_both_ways(echo_server):
    payload = bytes(range(256)) * (BIG // 256)
    with channel(echo_server) as ch:
        assert ch.unary_unary("/test.Echo/Unary")(payload, timeout=60) == payload
        assert len(ch.unary_unary("/test.Echo/Big")(str(BIG).encode(), timeout=60)) == BIG
        # two big ones at once share the connection window
        f1 = ch.unary_unary("/test.Echo/Big").future(str(BIG).encode(), timeout=60)
        f2 = ch.unary_unary("/test.Echo/Unary").future(payload, timeout=60)
        assert len(f1.result()) == BIG and f2.result() == payload


def test_message_over_limit_is_resource_exhausted():
    srv = ServerThread(max_receive=1024 * 1024).start()
    try:
        with channel(srv) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/test.Echo/Unary")(b"x" * (2 * 1024 * 1024), timeout=10)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert ch.unary_unary("/test.Echo/Unary")(b"ok", timeout=5) == b"ok"
    finally:
        srv.stop()


def test_server_stream_bidi_and_client_stream(echo_server):
    with channel(echo_server) as ch:
        assert list(ch.unary_stream("/test.Echo/Count")(b"1000", timeout=10)) == [str(i).encode() for i in range(1000)]
        msgs = [b"m%d" % i for i in range(500)]
        assert list(ch.stream_stream("/test.Echo/Bidi")(iter(msgs), timeout=10)) == msgs
        assert ch.stream_unary("/test.Echo/Gather")(iter(msgs), timeout=10) == b"".join(msgs)
        big = [b"y" * (3 * 1024 * 1024)] * 3
        assert list(ch.stream_stream("/test.Echo/Bidi")(iter(big), timeout=30)) == big
        with pytest.raises(grpc.RpcError) as e:
            list(ch.stream_stream("/test.Echo/Bidi")(iter([b"a", b"abort"]), timeout=10))
        assert e.value.code() == grpc.StatusCode.ABORTED


def test_bidi_cancel(echo_server):
    with channel(echo_server) as ch:
        gate = threading.Event()

        def requests():
            yield b"first"
            gate.wait(5)

        call = ch.stream_stream("/test.Echo/Bidi")(requests(), timeout=30)
        assert next(call) == b"first"
        call.cancel()
        gate.set()
        deadline = time.monotonic() + 3
        while "bidi" not in echo_server.service.cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "bidi" in echo_server.service.cancelled


def test_many_concurrent_streams_on_one_connection(echo_server):
    async def run() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_server.port}", options=OPTS) as ch:
            unary = ch.unary_unary("/test.Echo/Unary")
            sleep = ch.unary_unary("/test.Echo/Sleep")
            bodies = [b"%d" % i * (i % 50 + 1) for i in range(2000)]
            got = await asyncio.gather(*(unary(b, timeout=30) for b in bodies))
            assert got == bodies
            # 300 calls open at once
            t0 = time.monotonic()
            slept = await asyncio.gather(*(sleep(b"0.5", timeout=30) for _ in range(300)))
            assert slept == [b"slept"] * 300 and time.monotonic() - t0 < 10

    asyncio.run(run())


def test_graceful_stop_finishes_running_calls():
    srv = ServerThread().start()
    with channel(srv) as ch:
        fut = ch.unary_unary("/test.Echo/Sleep").future(b"0.5", timeout=10)
        time.sleep(0.2)
        srv.stop()
        assert fut.result() == b"slept"
