"""Progress bars that stay quiet in log files.

On a terminal, ``progress(...)`` is a normal tqdm bar. Anywhere else (a file, a pipe, a Slurm
log) tqdm would write one carriage-return frame per update, hundreds of them per run; there it
is a :class:`LineProgress` instead, which prints one plain line at most every 30 s
(``EVERY_S``) or when another 10% (``EVERY_FRAC``) of the total is done, and a last line on
``close()``. Both offer the part of tqdm's API the project uses: ``n``, ``update``,
``set_postfix``, ``refresh``, ``close`` and use as a context manager.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

EVERY_S = 30.0
EVERY_FRAC = 0.10


def progress(total: int, desc: str, unit: str = "it", initial: int = 0, disable: bool = False,
             file: TextIO | None = None, leave: bool = False):
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise (``disable``: neither prints)."""
    stream = file if file is not None else sys.stderr
    isatty = getattr(stream, "isatty", lambda: False)
    if disable or isatty():
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=stream,
                    leave=leave, dynamic_ncols=True)
    return LineProgress(total, desc, unit, initial, stream)


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class LineProgress:
    """One line per 30 s or per 10% of the total, e.g.
    ``train run_x: 900/3000 step (30%), 2.9 step/s, 5m10s elapsed, ~12m05s left, loss=0.512``."""

    def __init__(self, total: int, desc: str, unit: str = "it", initial: int = 0,
                 file: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, int(initial)
        self.file, self.clock = file if file is not None else sys.stderr, clock
        self.start_n, self.t0 = self.n, clock()
        self.last_t, self.last_n = self.t0, self.n
        self.postfix = ""
        self.closed = False

    def _step(self, n: int) -> int:
        return int(n / (EVERY_FRAC * self.total)) if self.total > 0 else 0   # which 10% band n is in

    def _emit(self) -> None:
        now = self.clock()
        elapsed = now - self.t0
        line = f"{self.desc}: {self.n}/{self.total} {self.unit}"
        if self.total > 0:
            line += f" ({100 * self.n / self.total:.0f}%)"
        done = self.n - self.start_n
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            line += f", {rate:.3g} {self.unit}/s, {_duration(elapsed)} elapsed"
            if self.total > self.n:
                line += f", ~{_duration((self.total - self.n) / rate)} left"
        if self.postfix:
            line += f", {self.postfix}"
        print(line, file=self.file, flush=True)
        self.last_t, self.last_n = now, self.n

    def refresh(self) -> None:
        """Print a line if one is due (30 s since the last, or a new 10% band)."""
        if self.closed or self.n == self.last_n:
            return
        if self.clock() - self.last_t >= EVERY_S or self._step(self.n) > self._step(self.last_n):
            self._emit()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.refresh()

    def set_postfix(self, **kw) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if not self.closed and self.n != self.last_n:
            self._emit()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
