"""Progress of one timed run: a tqdm bar when tqdm is installed and stderr is
a terminal, else a plain line about once a second (a bar's carriage returns
make logs unreadable)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total_s: float, unit: str, enabled: bool = True) -> None:
        self.label = label
        self.total_s = total_s
        self.unit = unit
        self.enabled = enabled
        self.bar = None
        self.last_line = 0.0
        self.last_ops: tuple[float, int] | None = None
        self.rate: float | None = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=round(total_s, 1), desc=label, unit="s", leave=False,
                                bar_format="{desc} {bar} {n:.1f}/{total:.1f}s {postfix}", file=sys.stderr)

    def update(self, elapsed_s: float, ops: int | None = None) -> None:
        if not self.enabled:
            return
        elapsed = min(max(elapsed_s, 0.0), self.total_s)
        if ops is not None:
            # the rate over the last half second or more, not since the start
            if self.last_ops is None:
                self.last_ops = (elapsed_s, ops)
            elif elapsed_s - self.last_ops[0] >= 0.5:
                self.rate = (ops - self.last_ops[1]) / (elapsed_s - self.last_ops[0])
                self.last_ops = (elapsed_s, ops)
        rate = f"{self.rate:,.0f} {self.unit}" if self.rate is not None else ""
        if self.bar is not None:
            self.bar.n = round(elapsed, 1)
            self.bar.set_postfix_str(rate, refresh=False)
            self.bar.refresh()
            return
        now = time.monotonic()
        if now - self.last_line >= 1.0:
            self.last_line = now
            print(f"  {self.label}: {elapsed:4.1f}/{self.total_s:.0f} s {rate}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
