"""BoundedDispatch: at most two calls in flight, calls under a trace passed through."""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from samplepar.dispatch import IN_FLIGHT, BoundedDispatch


class Info(NamedTuple):
    loss: object


class Loss:
    """A result that records when something waits for it."""

    def __init__(self, call: int, waits: list):
        self.call, self.waits = call, waits

    def block_until_ready(self):
        self.waits.append(self.call)
        return self


def test_each_call_waits_for_the_call_before_last():
    waits, calls = [], []

    def step(state):
        calls.append(state)
        return state + 1, Info(Loss(state, waits))

    bounded = BoundedDispatch(step)
    state = 0
    for waited_before in ([], [], [0], [0, 1], [0, 1, 2]):  # during calls 0 to 4
        state, _ = bounded(state)
        assert waits == waited_before
    assert calls == [0, 1, 2, 3, 4] and IN_FLIGHT == 2


def test_a_traced_call_passes_through_and_attributes_are_the_steps():
    step = jax.jit(lambda x: (x + 1.0, Info(jnp.sum(x))))
    bounded = BoundedDispatch(step)
    outer = jax.jit(lambda x: bounded(x)[0] * 2.0)
    assert float(outer(jnp.ones(3)).sum()) == 12.0
    assert not bounded._pending  # nothing traced was kept
    state, info = bounded(jnp.ones(3))
    assert float(info.loss) == 3.0 and len(bounded._pending) == 1
    assert "add" in bounded.lower(jnp.ones(3)).as_text()
