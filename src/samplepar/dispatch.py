"""Steps that never run more than two calls ahead of their results.

JAX dispatches a jitted call and returns at once, so a loop that never reads a result can queue
thousands of steps. On several CPU devices XLA's collectives can then deadlock: with jax 0.10.2,
a demand-model step on two virtual devices stopped with "Termination timeout for `all reduce`"
in 14 of 15 runs that queued 1,500 to 3,600 steps unread, and in none of 8 runs that read each
step's loss at most one step late. :class:`BoundedDispatch` makes every loop do the latter, so
that no caller's loop needs to take care; it costs nothing a loop that reads its losses does not
already pay.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import jax

IN_FLIGHT = 2  # calls whose results may be pending: the one running and the one queued


class BoundedDispatch:
    """``step(*args) -> (state, info)`` that, before each call, waits for ``info.loss`` of the
    call ``IN_FLIGHT`` calls back. Calls made while tracing (``step`` inside another jitted
    function) pass straight through. Other attributes are ``step``'s (``lower``, for one).

    With ``donated``, the position of an argument ``step`` donates (the state), a call given
    arrays an earlier call consumed raises a ValueError: passing the same state twice otherwise
    ended the process with a segmentation fault on several devices (jax 0.10.2).
    """

    def __init__(self, step: Callable, donated: int | None = None):
        self._step = step
        self._donated = donated
        self._pending: collections.deque = collections.deque(maxlen=IN_FLIGHT)

    def __call__(self, *args, **kwargs):
        if self._donated is not None and self._donated < len(args):
            check_not_donated(args[self._donated])
        if len(self._pending) == IN_FLIGHT:
            self._pending[0].block_until_ready()
        state, info = self._step(*args, **kwargs)
        if not isinstance(info.loss, jax.core.Tracer):
            self._pending.append(info.loss)  # the oldest drops out
        return state, info

    def __getattr__(self, name: str):
        return getattr(self._step, name)


def check_not_donated(state) -> None:
    """Raises a ValueError when an array of ``state`` was donated to (consumed by) a call."""
    for leaf in jax.tree.leaves(state):
        if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
            if leaf.is_deleted():
                raise ValueError(
                    "this state was consumed by an earlier step (steps donate their state to "
                    "reuse its memory): pass the state the last call returned, e.g. "
                    "state, info = step(key, state, batch)"
                )
