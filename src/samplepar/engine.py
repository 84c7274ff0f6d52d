"""The sharded training step for any particle function.

A *particle function* computes one Monte-Carlo sample's contribution:

    particle_fn(params, rng_key, batch) -> (log_lik [B_local], global_term [])

where ``log_lik`` holds the per-example log-likelihood of this shard's examples and
``global_term`` the sample's log p(theta) - log q(theta). The engine evaluates the ``S`` samples
with samples sharded over ``sample`` and examples over ``data``, reduces the objective exactly
(:mod:`samplepar.objectives`) and differentiates the global value, so its loss and gradient equal
the single-device computation on every layout. Strategies none / sample / data / hybrid are only
different layouts of the same mesh.

The key of global sample ``s`` is ``fold_in(rng_key, s)`` whatever device computes it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from samplepar import random as sp_random
from samplepar.checks import is_whole_number
from samplepar.dispatch import BoundedDispatch
from samplepar.mesh import (
    DATA,
    SAMPLE,
    check_batch_size,
    check_num_samples,
    layout_of,
    replicated,
)
from samplepar.objectives import Objective, reduce_objective
from samplepar.variational import Family

PyTree = Any
ParticleFn = Callable[[PyTree, jax.Array, PyTree], tuple[jax.Array, jax.Array]]
LossFn = Callable[[PyTree, jax.Array, PyTree], tuple[jax.Array, dict[str, jax.Array]]]


class TrainState(NamedTuple):
    """Everything the next step needs: variational parameters, optimizer state, step count."""

    params: PyTree
    opt_state: optax.OptState
    step: jax.Array


class StepInfo(NamedTuple):
    """Diagnostics of one step (not needed by the next one). No gradient norm: it cost a pass
    over every gradient and, for parameters split over ``data``, one more all-reduce (demand-
    medium, one block per device, 2 CPU devices, timed alternating in one process: 1.59 ms a
    step with it, 1.17 without)."""

    loss: jax.Array
    log_likelihood: jax.Array
    kl: jax.Array


def bayesian_particle(family: Family, log_lik_fn: Callable) -> ParticleFn:
    """A particle function for a model with a variational family over its weights.

    ``log_lik_fn(weights, batch, rng_key) -> [B_local]`` is the model's per-example
    log-likelihood for one weight sample; its key (e.g. for augmentation) is independent of the
    key that drew the weights.
    """

    def particle(params, rng_key, batch):
        weight_key, data_key = jax.random.split(rng_key)
        weights, log_q = family.sample_and_log_prob(weight_key, params)
        log_lik = log_lik_fn(weights, batch, data_key)
        return log_lik, family.log_prior(weights) - log_q

    return particle


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def fan_out(x: jax.Array, copies: int) -> jax.Array:
    """``[copies, *x.shape]``: one copy of ``x`` per vectorised sample.

    Its cotangent is the sum of the copies' cotangents, written as ``copies - 1`` additions of
    slices. Left to ``vmap``, that sum is a ``reduce_sum`` over the sample axis, which XLA's CPU
    backend hands to YNNPACK with its producers fused in, where it ran slowly: on the demand
    model (100,000 products, 4 particles) the four such sums of the guide's gradients took
    46 to 68 ms of a 160 to 190 ms step on each device.
    """
    return jnp.broadcast_to(x, (copies, *x.shape))


def _fan_out_fwd(x, copies):
    return fan_out(x, copies), None


def _fan_out_bwd(copies, _, cotangent):
    total = cotangent[0]
    for i in range(1, copies):
        total = total + cotangent[i]
    return (total,)


fan_out.defvjp(_fan_out_fwd, _fan_out_bwd)


def map_samples(fn: Callable, xs: PyTree, samples_per_pass: int | None):
    """``fn`` over the leading axis of ``xs``: vectorised, or ``samples_per_pass`` at a time."""
    if samples_per_pass is None:
        return jax.vmap(fn)(xs)
    return jax.lax.map(fn, xs, batch_size=samples_per_pass)


def mark_varying(params: PyTree, param_specs: PyTree | None, mesh: Mesh) -> PyTree:
    """``params`` inside ``shard_map``, marked varying over every mesh axis they are replicated on.

    Their cotangents are then summed over those axes once, at the parameters' own size;
    otherwise the psum lands on per-sample cotangents, S_local times larger. The replicated
    leaves are raveled first, so that their sum is one all-reduce rather than one per leaf:
    between two CPU processes, 12 all-reduces of the MLP's leaves took 80 ms, one of their
    concatenation 20 ms. A leaf sharded over ``data`` (``param_specs``) is summed over the
    other axes only.
    """
    leaves, treedef = jax.tree.flatten(params)
    specs = (
        [PartitionSpec()] * len(leaves)
        if param_specs is None
        else treedef.flatten_up_to(param_specs)
    )
    sharded_axes = [{a for a in spec if a is not None} for spec in specs]
    replicated_leaves = [i for i, axes in enumerate(sharded_axes) if not axes]
    flat, unravel = ravel_pytree([leaves[i] for i in replicated_leaves])
    flat = jax.lax.pcast(flat, mesh.axis_names, to="varying")
    for i, leaf in zip(replicated_leaves, unravel(flat), strict=True):
        leaves[i] = leaf
    for i, axes in enumerate(sharded_axes):
        others = tuple(a for a in mesh.axis_names if a not in axes)
        if axes and others:
            leaves[i] = jax.lax.pcast(leaves[i], others, to="varying")
    return treedef.unflatten(leaves)


def make_loss(
    particle_fn: ParticleFn,
    objective: Objective,
    mesh: Mesh,
    num_samples: int,
    dataset_size: int | None = None,
    kl_fn: Callable[[PyTree], jax.Array] | None = None,
    augment_fn: Callable[[jax.Array, jax.Array, PyTree], PyTree] | None = None,
    samples_per_pass: int | None = None,
    fan_out_flat: bool = False,
    slice_params: Callable[[PyTree, PyTree], PyTree] | None = None,
    param_specs: PyTree | None = None,
) -> LossFn:
    """``loss(params, rng_key, batch) -> (-objective, diagnostics)``, sharded over ``mesh``.

    ``batch`` is a pytree whose leaves share a leading example axis, sharded over ``data``;
    ``dataset_size`` (default: the batch size) scales the data term to the whole data set.
    ``kl_fn`` is the family's analytic KL, used by objectives that take one.
    ``augment_fn(rng_key, sample_index, batch) -> batch`` transforms the batch each sample sees,
    given the step key and the global sample index (so samples may share or not share it).
    ``samples_per_pass`` evaluates a shard's samples that many at a time (``lax.map``) instead of
    all at once (``vmap``): less memory, and faster for convolutions, whose per-sample kernels
    become grouped convolutions under ``vmap``.

    Vectorised samples each take their own copy of the parameters (:func:`fan_out`), leaf by
    leaf, or, with ``fan_out_flat``, as one raveled vector. Flat suits many small leaves whose
    gradients share producers (a NumPyro guide's locations and scales): their per-sample
    gradients are then written once into one array and summed, where leaf by leaf XLA fused the
    shared producers, random draws included, into each leaf's sum (demand-small step, each pair
    timed alternating in one process: flat 14.1 ms against 15.2 without copies; by leaf 18.4
    against 14.1). By leaf suits large weight matrices, whose gradients a flat copy would
    concatenate into one more ``S``-fold array (784-512-512-10 MLP at S = 16: by leaf 205 ms
    against 250 without copies, and 146 MiB of temporaries either way; flat 242 ms against 269,
    and 193 MiB).

    ``slice_params(params, batch) -> params`` gives the parameters a shard's particles need for
    its batch, for example the batch's rows of per-row parameters (a NumPyro guide's local
    latents). Taken before the copies, it makes their copies and per-sample gradients the
    batch's size; the gradient of the full parameters is then one scatter of the slices'.

    ``param_specs`` (a ``PartitionSpec`` per parameter leaf; default: all replicated) shards
    parameters over ``data``, for example the per-row parameters of local latents: each data
    shard then gets its own rows' slice, whose cotangent is summed over the other axes only.
    No ``kl_fn`` with them (it would see one shard).
    """
    if param_specs is not None and kl_fn is not None:
        raise ValueError("kl_fn needs every parameter on every device; drop param_specs")
    layout = layout_of(mesh)
    check_num_samples(num_samples, layout)
    samples_per_shard = num_samples // layout.sample
    if dataset_size is not None and not (is_whole_number(dataset_size) and dataset_size >= 1):
        raise ValueError(
            "dataset_size must be the number of examples in the data set, a positive integer; "
            f"got {dataset_size!r}"
        )

    def shard_loss(params, rng_key, batch, data_scale):
        indices = sp_random.local_sample_indices(samples_per_shard, SAMPLE)
        keys = sp_random.sample_keys(rng_key, indices)
        local_params = mark_varying(params, param_specs, mesh)
        particle_params = local_params
        if slice_params is not None:
            particle_params = slice_params(local_params, batch)

        def one_particle(key, index, particle_params):
            sample_batch = batch if augment_fn is None else augment_fn(rng_key, index, batch)
            return particle_fn(particle_params, key, sample_batch)

        if samples_per_pass is None:
            shared, as_params = particle_params, lambda p: p
            if fan_out_flat:
                shared, as_params = ravel_pytree(particle_params)
            copies = jax.tree.map(lambda x: fan_out(x, samples_per_shard), shared)
            log_lik, global_term = jax.vmap(
                lambda key, index, p: one_particle(key, index, as_params(p))
            )(keys, indices, copies)
        else:
            log_lik, global_term = map_samples(
                lambda key_and_index: one_particle(*key_and_index, particle_params),
                (keys, indices),
                samples_per_pass,
            )
        # Equal on every data shard, but computed from the varying copy: a mean of S_local
        # scalars over ``data`` says so to shard_map.
        global_term = jax.lax.pmean(global_term, DATA)
        # From the varying copy too, so that the KL's gradient joins the one all-reduce of the
        # data term's instead of being added to it afterwards, where its parameter-sized
        # temporaries sat on top of the optimizer's at the step's memory peak.
        kl = None if kl_fn is None else jax.lax.pmean(kl_fn(local_params), mesh.axis_names)
        value, aux = reduce_objective(objective, log_lik, global_term, kl, num_samples, data_scale)
        return -value, aux

    sharded = jax.shard_map(
        shard_loss,
        mesh=mesh,
        in_specs=(
            PartitionSpec() if param_specs is None else param_specs,
            PartitionSpec(),
            PartitionSpec(DATA),
            PartitionSpec(),
        ),
        out_specs=(PartitionSpec(), PartitionSpec()),
    )

    def loss(params, rng_key, batch):
        batch_size = jax.tree.leaves(batch)[0].shape[0]
        check_batch_size(batch_size, layout)
        scale = 1.0 if dataset_size is None else dataset_size / batch_size
        return sharded(params, rng_key, batch, jnp.float32(scale))

    return loss


def state_shardings(
    params: PyTree,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    param_specs: PyTree | None = None,
) -> TrainState:
    """The shardings of a :class:`TrainState` over ``mesh``: replicated, except parameters
    sharded by ``param_specs`` (as in :func:`make_loss`) and their copies in the optimizer's
    state (its moments, for instance). ``params`` may be abstract (shapes and dtypes)."""
    whole = replicated(mesh)
    if param_specs is None:
        return TrainState(whole, whole, whole)
    param_shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), param_specs)
    opt_shardings = optax.tree_map_params(
        optimizer,
        lambda _, sharding: sharding,
        jax.eval_shape(optimizer.init, params),
        param_shardings,
        transform_non_params=lambda _: whole,
    )
    return TrainState(param_shardings, opt_shardings, whole)


def init(
    params: PyTree,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    param_specs: PyTree | None = None,
) -> TrainState:
    """The initial state over ``mesh`` (laid out by :func:`state_shardings`); ``params`` is
    copied (steps donate state)."""
    shardings = state_shardings(params, optimizer, mesh, param_specs)
    params = jax.device_put(jax.tree.map(jnp.array, params), shardings.params)
    opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), shardings.step)
    return TrainState(params, opt_state, step)


YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"


def weight_sample_compiler_options(mesh: Mesh) -> dict[str, str]:
    """XLA options for a step that sums per-sample weight gradients (Bayesian neural nets).

    On CPU, YNNPACK is given the matrix products only. By default XLA also hands it fused
    reductions, and it ran the sums of per-sample weight gradients over samples several times
    slower than XLA's own loops (a step of the 784-512-512-10 MLP at S=16: 413 ms with them,
    296 ms without; LeNet-5: 443 and 387 ms). Not for the demand model, whose contiguous
    reductions over periods YNNPACK runs faster (59 against 51 it/s). A
    ``--xla_cpu_experimental_ynn_fusion_type`` in ``XLA_FLAGS`` wins; other platforms get none.
    """
    on_cpu = mesh.devices.flat[0].platform == "cpu"
    if not on_cpu or YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
        return {}
    return {YNN_FUSION_OPTION: "LIBRARY_FUSION_TYPE_DOT"}


def build_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    compiler_options: dict[str, str] | None = None,
    state_sharding: TrainState | None = None,
):
    """A jitted ``step(rng_key, state, batch) -> (state, info)``; the state keeps its layout
    (``state_sharding``, from :func:`state_shardings`; default: replicated).

    ``compiler_options`` are XLA's (e.g. :func:`weight_sample_compiler_options`). A call waits
    for the loss of the call before last first (:class:`samplepar.dispatch.BoundedDispatch`):
    on several CPU devices, XLA's collectives can deadlock when a loop queues many steps unread.
    """

    def step(rng_key, state: TrainState, batch) -> tuple[TrainState, StepInfo]:
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, rng_key, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        info = StepInfo(loss, aux["log_likelihood"], aux["kl"])
        return TrainState(params, opt_state, state.step + 1), info

    state_sharding = replicated(mesh) if state_sharding is None else state_sharding
    return BoundedDispatch(
        jax.jit(
            step,
            out_shardings=(state_sharding, replicated(mesh)),
            donate_argnums=(1,),
            compiler_options=compiler_options,
        ),
        donated=1,
    )
