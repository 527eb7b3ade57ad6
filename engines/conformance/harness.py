"""What a conformance check is, what it is given, and how it fails or skips."""
from __future__ import annotations

import inspect
import reprlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from engines.base import Engine
from engines.conformance.target import EngineTarget

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = 8
_repr.maxtuple = 8


def short(value: object) -> str:
    """A repr bounded in size: failure messages may involve 1.5 MiB values."""
    return _repr.repr(value)


class CheckFailed(AssertionError):
    """The engine broke the contract; the message says how."""


class CheckSkipped(Exception):
    """The check does not apply to this engine (the message says why)."""


def expect(cond: object, message: str) -> None:
    if not cond:
        raise CheckFailed(message)


def expect_eq(got: object, want: object, what: str) -> None:
    if got == want:
        return
    if isinstance(got, list) and isinstance(want, list):
        for i, (g, w) in enumerate(zip(got, want)):
            if g != w:
                raise CheckFailed(f"{what}: item {i} is {short(g)}, expected {short(w)} ({len(got)} items, expected {len(want)})")
        raise CheckFailed(f"{what}: {len(got)} items, expected {len(want)}; first extra/missing {short((got or want)[min(len(got), len(want))])}")
    raise CheckFailed(f"{what}: got {short(got)}, expected {short(want)}")


async def expect_raises(
    errors: type[BaseException] | tuple[type[BaseException], ...],
    fn: Callable[[], Any],
    what: str,
) -> BaseException:
    """fn() (awaited if it returns an awaitable) must raise one of errors.

    Engines may raise argument errors before or after the first await; both
    are fine, so the call and the await are inside the same try."""
    names = errors.__name__ if isinstance(errors, type) else "/".join(e.__name__ for e in errors)
    try:
        result = fn()
        if inspect.isawaitable(result):
            await result
    except errors as e:
        return e
    except Exception as e:
        raise CheckFailed(f"{what}: raised {type(e).__name__}({e}), expected {names}") from None
    raise CheckFailed(f"{what}: returned normally, expected {names}")


@dataclass
class CheckContext:
    """Handed to each check: opens the engine under test in the check's own
    slot (its own data directory), and closes whatever the check left open."""

    target: EngineTarget
    slot: str
    _open: list[Engine] = field(default_factory=list)

    async def open(self, slot: str | None = None) -> Engine:
        engine = self.target.open(slot or self.slot)
        self._open.append(engine)
        return engine

    async def reopen(self, engine: Engine) -> Engine:
        await engine.close()
        return await self.open()

    def data_dir(self, slot: str | None = None) -> str | None:
        return self.target.data_dir(slot or self.slot)

    def require_durable(self, engine: Engine) -> None:
        if not engine.durable:
            raise CheckSkipped(f"{engine.name} is not durable")

    async def close_all(self) -> None:
        for engine in self._open:
            try:
                await engine.close()
            except Exception:  # closing twice or after a failure: not this check's concern
                pass
        self._open.clear()


CheckFn = Callable[[CheckContext], Awaitable["str | None"]]


@dataclass(frozen=True)
class Check:
    """One named property of the engine contract. fn returns an optional note
    printed after PASS (e.g. how many writes a kill test saw)."""

    name: str
    fn: CheckFn
    about: str
