"""Opening the TiKV engine from PD endpoints: what `open_engine("tikv", ...)` calls.

open_engine is synchronous and is called both from plain code (engine-check)
and from inside a running event loop (brain serve's startup), while
connecting to PD is a coroutine. So the connection is made on a helper
thread with its own event loop, and the caller waits for it: at startup
there is nothing else for the loop to do, and it gives the caller a clear
error right away when PD cannot be reached. The client that comes back is
not tied to the helper's loop (tikv-client runs its requests on its own
tokio threads), so every event loop may use the engine afterwards.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Sequence

from engines.base import EngineError, EngineUnavailableError
from engines.tikv.client import TransactionClient, connect_real
from engines.tikv.engine import TikvEngine
from engines.tikv.errors import describe

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX = "brain/"
DEFAULT_CONNECT_TIMEOUT = 10.0

Connector = Callable[[list[str]], Awaitable[TransactionClient]]


def parse_endpoints(pd_endpoints: str | Sequence[str] | None) -> list[str]:
    """PD endpoints as a list or a comma-separated string ("host:2379,...")."""
    if pd_endpoints is None:
        raw: list[str] = []
    elif isinstance(pd_endpoints, str):
        raw = pd_endpoints.split(",")
    else:
        raw = [str(e) for e in pd_endpoints]
    # a scheme ("http://") is fine: tikv-client strips it
    out = [e.strip() for e in raw if e.strip()]
    if not out:
        raise ValueError("the tikv engine needs PD endpoints: --tikv-pd-endpoints host:2379[,host:2379...]")
    return out


def encode_prefix(key_prefix: str | bytes) -> bytes:
    if isinstance(key_prefix, str):
        return key_prefix.encode()
    if isinstance(key_prefix, (bytes, bytearray)):
        return bytes(key_prefix)
    raise TypeError(f"tikv key_prefix must be a string, not {type(key_prefix).__name__}")


async def _connect(endpoints: list[str], connector: Connector, timeout: float, engine_options: dict[str, Any]) -> TikvEngine:
    pd = "PD " + ",".join(endpoints)
    try:
        client = await asyncio.wait_for(connector(endpoints), timeout)
    except TimeoutError:
        raise EngineUnavailableError(f"cannot reach TiKV: {pd} did not answer within {timeout:g}s") from None
    except ImportError as e:
        raise EngineError(str(e)) from None
    except Exception as e:
        raise EngineUnavailableError(f"cannot reach TiKV through {pd}: {describe(e)}") from None
    return await TikvEngine.open(client, where=f"TiKV of {pd}", **engine_options)


def open_tikv(
    *,
    pd_endpoints: str | Sequence[str] | None = None,
    key_prefix: str | bytes = DEFAULT_KEY_PREFIX,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    connector: Connector | None = None,
    **engine_options: Any,
) -> TikvEngine:
    """Connect to the TiKV cluster behind pd_endpoints and open the engine.

    engine_options are TikvEngine's (page_size, request_timeout,
    commit_timeout, write_retries); connector replaces tikv-client's connect
    (tests pass a double). Raises EngineUnavailableError when PD cannot be
    reached within connect_timeout seconds."""
    endpoints = parse_endpoints(pd_endpoints)
    options = dict(engine_options, key_prefix=encode_prefix(key_prefix))
    TikvEngine(_Unconnected(), **options)  # check the options before connecting: TypeError/ValueError now
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tikv-connect") as pool:
        future = pool.submit(asyncio.run, _connect(endpoints, connector or connect_real, connect_timeout, options))
        engine = future.result()
    log.info("tikv engine: connected to %s, key prefix %r", engine.where, engine.key_prefix)
    return engine


class _Unconnected:
    """Stands in for a client while open_tikv checks the options."""

    def __getattr__(self, name: str) -> Any:
        raise EngineError("not connected")
