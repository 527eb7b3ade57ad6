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


def setup_logging(level: str, stream: Any = None) -> None:
    """level: debug, info, warn or error."""
    handler = logging.StreamHandler(stream or sys.stderr)
    # compact, as zap writes it, so that line-oriented tools matching
    # '"level":"error"' work on brain's logs as on etcd's
    compact = functools.partial(json.dumps, separators=(",", ":"))
    handler.setFormatter(ZapStyleFormatter(json_ensure_ascii=False, json_serializer=compact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, "WARNING" if level == "warn" else level.upper(), logging.INFO))


def fatal(message: str, code: int = 1) -> NoReturn:
    """One log line at level fatal, then exit: how start errors end, as in etcd."""
    logging.getLogger("brain").critical(message, stacklevel=2)
    for h in logging.getLogger().handlers:
        h.flush()
    sys.exit(code)
