"""Progress a user can see: one log line per minute of work from every long loop.

Each long loop (generator training, synthesis, decoding, classifier fits, the reference
classifier's folds) keeps a ``Progress`` and calls ``update(done, loss)`` after each step. It logs
to the ``synth_augment.progress`` logger at INFO: at the first update, then whenever
``interval_s`` has passed since the last line, and at the end::

    generator: step 120/2000 (6%), loss 0.0412, 1.7 s/step, about 53 min left
    generator: step 2000/2000 (100%), loss 0.0311, 1.7 s/step, done in 57 min

``interval_s`` defaults to 60 s, or ``SYNTH_AUGMENT_PROGRESS_INTERVAL_S`` when set. This module only
logs; where the lines go is the front door's choice (flows.progress: the terminal for
``synth-augment run``, the flow run's log under Prefect). The rate is measured over the steps
this run did (a resumed loop counts from where it resumed).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

from pipeline.errors import ConfigError

LOGGER_NAME = "synth_augment.progress"
INTERVAL_ENV = "SYNTH_AUGMENT_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 60.0

log = logging.getLogger(LOGGER_NAME)


def interval_from_env(default: float = DEFAULT_INTERVAL_S) -> float:
    """Seconds between progress lines: ``SYNTH_AUGMENT_PROGRESS_INTERVAL_S`` when set, else ``default``."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{INTERVAL_ENV}={raw!r} is invalid; expected seconds between progress lines, "
                          f"a number >= 0 (0: a line every step)")
    return value


def duration(seconds: float) -> str:
    """42 s, 53 min, 2.1 h."""
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def pace(seconds_per_unit: float, unit: str) -> str:
    """1.7 s/step at a second or more per unit, else units per second (3.8 step/s)."""
    if seconds_per_unit >= 1:
        return f"{seconds_per_unit:.0f} s/{unit}" if seconds_per_unit >= 10 else f"{seconds_per_unit:.1f} s/{unit}"
    per_second = 1 / seconds_per_unit
    return f"{per_second:.0f} {unit}/s" if per_second >= 10 else f"{per_second:.1f} {unit}/s"


class Progress:
    """Rate-limited progress lines of one loop: ``update`` after each step, ``finish`` when it ends early.

    ``total`` units in all, ``start`` already done before this run (a resumed loop); ``clock`` is
    injectable (tests); ``enabled=False`` (the non-main processes of a multi-GPU run) logs nothing.
    Each record carries ``record.progress = {"name", "done", "total"}`` for handlers that draw bars.
    """

    def __init__(self, name: str, total: int, *, start: int = 0, unit: str = "step", interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger = log,
                 enabled: bool = True) -> None:
        self.name, self.total, self.start, self.unit = name, max(int(total), 0), int(start), unit
        self.interval_s = interval_from_env() if interval_s is None else float(interval_s)
        self.clock, self.logger, self.enabled = clock, logger, enabled
        self.began = clock()
        self.done = self.start
        self.loss: Any = None
        self._last_line: float | None = None  # clock time of the last line
        self._last_line_done: int | None = None
        self._finished = False

    def update(self, done: int, loss: Any = None) -> str | None:
        """``done`` units finished so far (absolute, not a delta); ``loss`` a float or a 0-d tensor (read
        only when a line is written, so a GPU loop is not synchronised every step). Returns the line, if any."""
        self.done, self.loss = int(done), loss
        if not self.enabled or self._finished:
            return None
        now = self.clock()
        if self.done >= self.total:
            return self._emit(now, end=True)
        if self._last_line is None or now - self._last_line >= self.interval_s:
            return self._emit(now)
        return None

    def finish(self, reason: str | None = None) -> str | None:
        """The loop ended: the last line, unless the last update already wrote it (``reason``: why it ended
        before ``total``, e.g. early_stopping)."""
        if not self.enabled or self._finished:
            return None
        if self._last_line_done == self.done and reason is None:
            self._finished = True
            return None
        return self._emit(self.clock(), end=True, reason=reason)

    def line(self, now: float, end: bool = False, reason: str | None = None) -> str:
        """The text of one line at clock time ``now``."""
        share = 100 if self.total == 0 else math.floor(100 * min(self.done, self.total) / self.total)
        parts = [f"{self.name}: {self.unit} {self.done}/{self.total} ({share}%)"]
        if self.loss is not None:
            parts.append(f"loss {float(self.loss):.4g}")
        elapsed, did = now - self.began, self.done - self.start
        per_unit = elapsed / did if elapsed > 0 and did > 0 else None
        if per_unit is not None:
            parts.append(pace(per_unit, self.unit))
        if end:
            parts.append(f"{'stopped (' + reason + ')' if reason else 'done'} in {duration(max(elapsed, 0.0))}")
        elif per_unit is not None:
            parts.append(f"about {duration(per_unit * max(self.total - self.done, 0))} left")
        return ", ".join(parts)

    def _emit(self, now: float, end: bool = False, reason: str | None = None) -> str:
        text = self.line(now, end, reason)
        self.logger.info(text, extra={"progress": {"name": self.name, "done": self.done, "total": self.total}})
        self._last_line, self._last_line_done = now, self.done
        self._finished = end
        return text
