"""The one table of error statuses (brain/server/errors_grpc.py), seen by a
real gRPC client of both transports: every call shape ends with etcd's
status for brain's errors, a bug is answered UNKNOWN with its text and
logged once with its traceback, and no layer below the server knows of
gRPC or raises a shared exception instance."""
from __future__ import annotations

import ast
import asyncio
import importlib
import logging
import pathlib
import pkgutil
import threading
from concurrent.futures import Future

import grpc
import pytest

import brain
from brain.errors import DomainError, NoLeaderError
from brain.etcdpb import rpc_pb2 as pb
from brain.lease.errors import LeaseNotFoundError
from brain.mvcc.errors import CompactedError, WriteFailedError
from brain.server.errors_grpc import STATUS_OF, status_of
from brain.server.status import bidi_stream, generic, server_stream, unary

ROOT = pathlib.Path(__file__).resolve().parent.parent
SERVICE = "test.Failing"


class FailingService:
    """A test double: each method fails the way its request's key names."""

    @staticmethod
    def _fail(key: bytes) -> None:
        if key == b"compacted":
            raise CompactedError()
        if key == b"lease":
            raise LeaseNotFoundError()
        if key == b"bug":
            raise ZeroDivisionError("a bug in a handler")
        if key == b"writer-bug":
            raise WriteFailedError("KeyError: 'x'")

    async def unary(self, r: pb.RangeRequest) -> pb.RangeResponse:
        self._fail(r.key)
        return pb.RangeResponse(count=1)

    async def server_stream(self, r: pb.RangeRequest):
        yield pb.RangeResponse(count=1)
        self._fail(r.key)
        yield pb.RangeResponse(count=2)

    async def bidi(self, requests, context):
        async for r in requests:
            self._fail(r.key)
            yield pb.RangeResponse(count=1)

    def handler(self) -> grpc.GenericRpcHandler:
        return generic(SERVICE, {
            "Unary": unary(self.unary, pb.RangeRequest, pb.RangeResponse),
            "ServerStream": server_stream(self.server_stream, pb.RangeRequest, pb.RangeResponse),
            "Bidi": bidi_stream(self.bidi, pb.RangeRequest, pb.RangeResponse),
        })


class ServerThread:
    """The test double served by one transport on its own event loop thread."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.port = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._ready: Future[int] = Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self.port = self._ready.result(10)
        return self

    def __exit__(self, *exc) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.transport == "h2":
            from brain.transport import Server

            server = Server()
        else:
            server = grpc.aio.server()
        server.add_generic_rpc_handlers([FailingService().handler()])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._ready.set_result(port)
        await self._stop.wait()
        await server.stop(1.0)


def _call(ch: grpc.Channel, shape: str, key: bytes) -> tuple[list[int], grpc.StatusCode, str]:
    """(the counts of the responses received, the status code, its message)."""
    req = pb.RangeRequest(key=key).SerializeToString()
    got: list[int] = []
    try:
        if shape == "unary":
            got.append(pb.RangeResponse.FromString(ch.unary_unary(f"/{SERVICE}/Unary")(req, timeout=10)).count)
        else:
            answered = threading.Event()

            def requests():  # the second once the first is answered
                yield pb.RangeRequest(key=b"ok").SerializeToString()
                answered.wait(10)
                yield req

            if shape == "server_stream":
                call = ch.unary_stream(f"/{SERVICE}/ServerStream")(req, timeout=10)
            else:
                call = ch.stream_stream(f"/{SERVICE}/Bidi")(requests(), timeout=10)
            for raw in call:
                got.append(pb.RangeResponse.FromString(raw).count)
                answered.set()
    except grpc.RpcError as e:
        return got, e.code(), e.details() or ""
    return got, grpc.StatusCode.OK, ""


@pytest.fixture(params=["h2", "grpcio"])
def channel(request):
    with ServerThread(request.param) as srv, grpc.insecure_channel(f"127.0.0.1:{srv.port}") as ch:
        yield ch


@pytest.mark.parametrize("shape", ["unary", "server_stream", "bidi"])
def test_every_call_shape_ends_with_the_tables_status(channel, shape, caplog):
    caplog.set_level(logging.DEBUG)
    first = [] if shape == "unary" else [1]  # what the streaming calls sent before failing
    for key, code, message in [
        (b"compacted", grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"),
        (b"lease", grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found"),
        (b"writer-bug", grpc.StatusCode.UNKNOWN, "KeyError: 'x'"),  # logged by the writer, not again
    ]:
        assert _call(channel, shape, key) == (first, code, message)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert _call(channel, shape, b"ok")[1:] == (grpc.StatusCode.OK, "")


@pytest.mark.parametrize("shape", ["unary", "server_stream", "bidi"])
def test_a_bug_is_answered_unknown_with_its_text_and_logged_once(channel, shape, caplog):
    """As etcd answers an error its table does not hold (togRPCError):
    UNKNOWN and the error's text."""
    caplog.set_level(logging.DEBUG)
    got, code, message = _call(channel, shape, b"bug")
    assert (code, message) == (grpc.StatusCode.UNKNOWN, "a bug in a handler")
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 1, caplog.text
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is ZeroDivisionError
    assert logged[0].name == "brain.server.errors_grpc"


def _all_modules() -> list[str]:
    names = []
    for package in ("brain", "engines"):
        mod = importlib.import_module(package)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, package + ".") if not m.name.endswith(".__main__")]
    return names


def _import_all() -> list:
    out = []
    for name in _all_modules():
        try:
            out.append(importlib.import_module(name))
        except ImportError:  # an optional engine's client library
            continue
    return out


def test_every_domain_error_has_a_status_of_etcd():
    _import_all()
    todo, seen = [DomainError], []
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        seen.append(cls)
    errors = [c for c in seen if c.__module__.startswith("brain.")]
    assert len(errors) >= 20
    for cls in errors:
        if cls is DomainError:
            continue
        status = status_of(cls())
        assert status is not None, f"{cls.__qualname__} has no status in errors_grpc.STATUS_OF"
        assert status.message is None or status.message.startswith("etcdserver: "), status
    assert status_of(NoLeaderError()) is STATUS_OF[NoLeaderError]
    assert status_of(ValueError("x")) is None


def test_no_exception_instance_is_kept_at_module_level():
    """An instance raised from two tasks shows each task the other's
    traceback and context: every raise makes its own."""
    for module in _import_all():
        shared = [k for k, v in vars(module).items() if isinstance(v, BaseException)]
        assert not shared, f"{module.__name__}: {shared}"


@pytest.mark.parametrize("package", ["mvcc", "lease", "apply", "watch"])
def test_layers_below_the_server_know_nothing_of_grpc(package):
    for path in sorted((pathlib.Path(brain.__file__).parent / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "grpc" or n.startswith("grpc.") for n in names), f"{path.relative_to(ROOT)} imports grpc"
        assert "StatusCode" not in path.read_text(), path
