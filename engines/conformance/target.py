"""The engine under test: how to open it, here and in a child process.

The kill checks run a writer in a child process, SIGKILL it, and reopen the
engine in the parent, so the target is described by plain data (engine name,
JSON-able options, a data directory, and the dotted path of the function that
opens it) rather than by a Python callable, which a child could not receive.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from engines.base import Engine

DEFAULT_OPENER = "engines:open_engine"


def load_opener(path: str) -> Callable[..., Engine]:
    """"module:function" -> the function (called as fn(name, data_dir=..., **options))."""
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"engine opener must look like 'module:function', not {path!r}")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class EngineTarget:
    """An engine to open: name and options as passed to the opener.

    base_dir is where the checks put their data: each check opens the engine
    in its own subdirectory, so checks never see each other's keys. None for
    engines without a data directory.

    slot_prefix_option: for an engine that keeps no data directory but takes
    a key prefix (tikv's key_prefix), the name of that option: each check
    then opens the engine under <the option's value><slot>/ instead.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    base_dir: str | None = None
    opener: str = DEFAULT_OPENER
    slot_prefix_option: str | None = None

    def data_dir(self, slot: str) -> str | None:
        return None if self.base_dir is None else os.path.join(self.base_dir, slot)

    def open(self, slot: str) -> Engine:
        options = self.options
        if self.slot_prefix_option is not None:
            base = options.get(self.slot_prefix_option, "")
            options = dict(options, **{self.slot_prefix_option: f"{base}{slot}/"})
        return load_opener(self.opener)(self.name, data_dir=self.data_dir(slot), **options)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> EngineTarget:
        return cls(**json.loads(text))

    def with_base_dir(self, base_dir: str | None) -> EngineTarget:
        return replace(self, base_dir=base_dir)
