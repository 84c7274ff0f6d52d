"""Progress display for long loops: a tqdm bar with steps/s and an exponentially smoothed loss."""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

from tqdm.auto import tqdm


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
    """A progress bar over steps; rate shown in it/s. Disabled bars print nothing."""
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="it",
        dynamic_ncols=True,
        disable=not enabled,
        file=sys.stderr,
        mininterval=0.5,
    )
