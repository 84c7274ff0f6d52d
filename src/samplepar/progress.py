"""Progress display for long loops: a tqdm bar with steps/s and an exponentially smoothed loss."""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

from tqdm.auto import tqdm

LOG_INTERVAL = 30.0  # seconds between redraws of a bar written to a file or pipe


class Smoothed(NamedTuple):
    """An exponential moving average with bias correction (as Adam's moments)."""

    value: float = 0.0
    weight: float = 0.0

    def update(self, x: float, decay: float = 0.9) -> Smoothed:
        return Smoothed(decay * self.value + (1 - decay) * x, decay * self.weight + (1 - decay))

    @property
    def mean(self) -> float:
        return self.value / self.weight if self.weight else math.nan


def status(message: str, enabled: bool = True) -> None:
    """One line on stderr before work that shows no bar yet (loading, set-up, compiling)."""
    if enabled:
        print(f"samplepar: {message}", file=sys.stderr, flush=True)


def bar(total: int, initial: int = 0, description: str = "", enabled: bool = True) -> tqdm:
    """A progress bar over steps on stderr; rate shown in it/s. Disabled bars print nothing.

    A terminal redraws it every 0.5 s. A file or pipe keeps every redraw as a line, so there it
    is redrawn at most every ``LOG_INTERVAL`` seconds (and at the start and the end).
    """
    interval = 0.5 if sys.stderr.isatty() else LOG_INTERVAL
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="it",
        dynamic_ncols=True,
        disable=not enabled,
        file=sys.stderr,
        mininterval=interval,
        maxinterval=max(interval, 10.0),  # tqdm's monitor redraws a stalled bar this often
    )
