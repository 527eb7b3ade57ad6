"""A gRPC server transport for brain: gRPC over HTTP/2 on asyncio
Protocols, serving the same grpc.GenericRpcHandler objects as grpc.aio, at a
fraction of grpc.aio's per-call cost."""
from __future__ import annotations

from brain.transport.server import Server
from brain.transport.tls import server_context

__all__ = ["Server", "server_context"]
