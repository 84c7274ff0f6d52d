"""Randomness: the fast normal draws and the unrolled Threefry are JAX's numbers, bit for bit."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32

from samplepar import random as sp_random


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 2), (100_003,)])
@pytest.mark.parametrize("seed", [0, 12345])
def test_normal_equals_jax_random_normal(shape, seed):
    key = jax.random.fold_in(jax.random.key(seed), 3)
    ours = jax.jit(lambda k: sp_random.normal(k, shape))(key)
    theirs = jax.jit(lambda k: jax.random.normal(k, shape))(key)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_normal_under_vmap_equals_per_key_draws():
    keys = jax.random.split(jax.random.key(1), 4)
    ours = jax.jit(jax.vmap(lambda k: sp_random.normal(k, (257,))))(keys)
    theirs = jnp.stack([jax.random.normal(k, (257,)) for k in keys])
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_normal_accepts_raw_uint32_keys():
    raw = jax.random.PRNGKey(9)
    np.testing.assert_array_equal(
        np.asarray(sp_random.normal(raw, (64,))), np.asarray(jax.random.normal(raw, (64,)))
    )


@pytest.mark.parametrize(
    "key, dtype",
    [(jax.random.key(2, impl="rbg"), jnp.float32), (jax.random.key(2), jnp.float16)],
)
def test_normal_falls_back_to_jax_for_other_keys_and_dtypes(key, dtype):
    np.testing.assert_array_equal(
        np.asarray(sp_random.normal(key, (33,), dtype)),
        np.asarray(jax.random.normal(key, (33,), dtype)),
    )


@pytest.mark.parametrize(("shape", "axis"), [((300, 1), 0), ((4, 7, 5), 1), ((3, 6), -1)])
def test_normal_rows_are_the_whole_draws_rows(shape, axis):
    """Rows drawn alone (repeats included, any order) equal those rows of the whole draw."""
    key = jax.random.key(5)
    rows = jnp.array([shape[axis] - 1, 0, 2, 2])
    whole = jax.random.normal(key, shape)
    expected = jnp.take(whole, rows, axis=axis % len(shape))
    np.testing.assert_array_equal(sp_random.normal_rows(key, shape, axis, rows), expected)
    keys = jax.random.split(key, 3)  # vectorised over particles' keys, as the engine does
    drawn = jax.vmap(lambda k: sp_random.normal_rows(k, shape, axis, rows))(keys)
    whole = jax.vmap(lambda k: jax.random.normal(k, shape))(keys)
    np.testing.assert_array_equal(drawn, jnp.take(whole, rows, axis=1 + axis % len(shape)))


def test_normal_is_standard_normal():
    draws = np.asarray(sp_random.normal(jax.random.key(4), (200_000,)))
    # mean and standard deviation within 5 standard errors of 0 and 1
    assert abs(draws.mean()) < 5 / np.sqrt(draws.size)
    assert abs(draws.std() - 1.0) < 5 / np.sqrt(2 * draws.size)


# Known-answer vectors of Threefry-2x32 with 20 rounds (Salmon et al., Random123): (key, counter)
# -> output, as uint32 pairs.
THREEFRY_KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]

# Draws through every Threefry use: keys, splits, fold-ins, bits, uniforms, normals, vmap.
DRAWS_SCRIPT = """
import sys
import numpy as np
from samplepar import random as sp_random
unrolled = sp_random.unroll_threefry_on_cpu()
import jax, jax.numpy as jnp
key = jax.random.fold_in(jax.random.key(7), 3)
keys = jax.random.split(key, 4)
draws = {
    "normal": jax.random.normal(key, (1001,)),
    "uniform": jax.jit(lambda k: jax.random.uniform(k, (5, 7)))(key),
    "split": jax.random.key_data(keys),
    "vmap": jax.jit(jax.vmap(lambda k: jax.random.normal(k, (9,))))(keys),
    "bits": jax.random.bits(key, (17,), jnp.uint8),
    "unrolled": np.asarray(unrolled),
}
np.savez(sys.argv[1], **{name: np.asarray(value) for name, value in draws.items()})
"""


def run_draws(path, env_switch: str) -> dict:
    env = {**os.environ, sp_random.UNROLL_SWITCH: env_switch}
    run = subprocess.run(
        [sys.executable, "-c", DRAWS_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@pytest.mark.parametrize("key, counter, expected", THREEFRY_KNOWN_ANSWERS)
def test_unrolled_threefry_gives_the_known_answers(key, counter, expected):
    assert sp_random.unroll_threefry_on_cpu()  # tests/conftest.py did too; calling again is fine
    hashed = jax.jit(threefry_2x32)(np.uint32(key), np.uint32(counter))
    assert [int(v) for v in np.asarray(hashed)] == list(expected)


def test_unrolled_threefry_draws_jax_numbers_bit_for_bit(tmp_path):
    rolled = run_draws(tmp_path / "rolled.npz", "0")
    unrolled = run_draws(tmp_path / "unrolled.npz", "1")
    assert not rolled.pop("unrolled") and unrolled.pop("unrolled")
    for name, reference in rolled.items():
        np.testing.assert_array_equal(unrolled[name], reference, err_msg=name)


def test_unrolled_threefry_compiles_without_loops():
    sp_random.unroll_threefry_on_cpu()
    jax.clear_caches()  # programs compiled before the call keep the lowering they had
    compiled = jax.jit(lambda k: jax.random.normal(jax.random.split(k)[1], (100,)))
    assert " while(" not in compiled.lower(jax.random.key(0)).compile().as_text()


def test_unroll_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(sp_random.UNROLL_SWITCH, "0")
    assert sp_random.unroll_threefry_on_cpu() is False


@pytest.mark.parametrize(
    ("step", "message"),
    [(-1, "integer >= 0, got -1"), (1.5, "integer >= 0, got 1.5"), (2**32, "below 2\\*\\*32")],
)
def test_step_key_names_a_step_it_cannot_fold_in(step, message):
    """-1 and 2**32 had raised a bare OverflowError; 1.5 had silently given step 1's key."""
    with pytest.raises(ValueError, match=f"step must be .*{message}"):
        sp_random.step_key(jax.random.key(0), step)
    assert jnp.array_equal(
        jax.random.key_data(sp_random.step_key(jax.random.key(0), np.int64(7))),
        jax.random.key_data(jax.jit(sp_random.step_key)(jax.random.key(0), 7)),
    )
