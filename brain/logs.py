"""Logs as etcd writes them with --logger=zap: one JSON object per line,
"level", "ts" (RFC 3339, UTC), "logger", "caller", "msg", and the
traceback under "error" when there is one."""
from __future__ import annotations

import datetime
import functools
import json
import logging
import sys
from typing import Any, NoReturn

from pythonjsonlogger.json import JsonFormatter

# zap's level names
_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "fatal"}


class ZapStyleFormatter(JsonFormatter):
    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_record["level"] = _LEVELS.get(record.levelname, record.levelname.lower())
        log_record["ts"] = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        log_record["logger"] = record.name
        log_record["caller"] = f"{record.filename}:{record.lineno}"
        super().add_fields(log_record, record, message_dict)
        log_record["msg"] = log_record.pop("message", record.getMessage())
        if "exc_info" in log_record:
            log_record["error"] = log_record.pop("exc_info")


# etcd's --log-level values
_LEVEL_NUMBERS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR,
                  "panic": logging.CRITICAL, "fatal": logging.CRITICAL}


def _handler(output: str) -> logging.Handler:
    """etcd's --log-outputs entries: default or stderr, stdout, a file path
    (appended to); systemd/journal goes to stderr, which systemd collects."""
    if output in ("default", "stderr", "systemd/journal"):
        return logging.StreamHandler(sys.stderr)
    if output == "stdout":
        return logging.StreamHandler(sys.stdout)
    return logging.FileHandler(output, encoding="utf-8")


def setup_logging(level: str, stream: Any = None, outputs: str = "default") -> None:
    """level: etcd's --log-level (debug, info, warn, error, panic, fatal);
    outputs: etcd's --log-outputs, comma-separated."""
    # compact, as zap writes it, so that line-oriented tools matching
    # '"level":"error"' work on brain's logs as on etcd's
    compact = functools.partial(json.dumps, separators=(",", ":"))
    formatter = ZapStyleFormatter(json_ensure_ascii=False, json_serializer=compact)
    if stream is not None:
        handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    else:
        handlers = [_handler(o.strip()) for o in dict.fromkeys(outputs.split(",")) if o.strip()] or [_handler("default")]
    for h in handlers:
        h.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(_LEVEL_NUMBERS.get(level, logging.INFO))


def fatal(message: str, code: int = 1) -> NoReturn:
    """One log line at level fatal, then exit: how start errors end, as in etcd."""
    logging.getLogger("brain").critical(message, stacklevel=2)
    for h in logging.getLogger().handlers:
        h.flush()
    sys.exit(code)
