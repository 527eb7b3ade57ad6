"""The engine conformance suite: `brain engine-check`, or run_checks() here.

An engine passes when every check passes (checks that do not apply, like the
SIGKILL checks for a non-durable engine, are skipped and say so).
"""
from __future__ import annotations

from engines.conformance.checks import CHECKS
from engines.conformance.harness import Check, CheckContext, CheckFailed, CheckSkipped
from engines.conformance.runner import CheckResult, Summary, run_check, run_checks, select
from engines.conformance.target import EngineTarget

__all__ = [
    "CHECKS",
    "Check",
    "CheckContext",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "EngineTarget",
    "Summary",
    "run_check",
    "run_checks",
    "select",
]
