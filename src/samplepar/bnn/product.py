"""``kernel_product``: inputs times a weight kernel, with a custom VJP that computes the kernel's
gradient as one contraction of the inputs with the output gradient.

Autodiff's own rule for ``x @ W`` computes the kernel gradient as ``[N, K]`` and transposes it,
and for a kernel with several output axes it contracts the output gradient read in a transposed
order. Under ``vmap`` over weight samples XLA then copies activation-sized arrays into that order:
in LeNet-5's fused first block (:func:`samplepar.bnn.conv.conv_relu_pool`) that copy took 52 ms
of a 137 ms step at S=16 on a 2-core CPU, and nothing here. Under ``vmap`` the contraction's
operands are also laid out by whether they are shared by all samples (see
``_kernel_gradient_with``): LeNet-5's step at S=16 took 87 ms instead of 92.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def kernel_product(inputs: jax.Array, kernel: jax.Array, precision=None) -> jax.Array:
    """``inputs [..., K]`` times ``kernel [K, *N]`` -> ``[..., *N]``."""
    return lax.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())), precision)


def _forward(inputs, kernel, precision):
    return kernel_product(inputs, kernel, precision), (inputs, kernel)


def _summed_to_type_of(cotangent: jax.Array, primal: jax.Array) -> jax.Array:
    """``cotangent`` summed over the mesh axes it varies over and ``primal`` does not (inside
    ``shard_map``; elsewhere there are none), as autodiff's own transpose of the implicit
    broadcast would."""
    varying = jax.typeof(primal).manual_axis_type.varying
    extra = tuple(a for a in jax.typeof(cotangent).manual_axis_type.varying if a not in varying)
    return lax.psum(cotangent, extra) if extra else cotangent


def _backward(precision, residuals, cotangent):
    inputs, kernel = residuals
    outputs = tuple(range(inputs.ndim - 1, cotangent.ndim))
    d_inputs = lax.dot_general(
        cotangent, kernel, ((outputs, tuple(range(1, kernel.ndim))), ((), ())), precision
    )
    d_kernel = _kernel_gradient_with(precision)(inputs, cotangent)
    return _summed_to_type_of(d_inputs, inputs), _summed_to_type_of(d_kernel, kernel)


kernel_product.defvjp(_forward, _backward)


@functools.cache
def _kernel_gradient_with(precision) -> custom_vmap:
    """``kernel_gradient(inputs [*rows, K], cotangent [*rows, *N]) -> [K, *N]``, the contraction
    over the rows, with its own rule under ``vmap`` (over weight samples) for ``[S, K, *N]``.

    XLA's CPU matmul copies an operand whose contracted axes are not its last into that order.
    Shared inputs (a first layer's data) are contracted as they are, so they are copied once for
    all samples. When both are per-sample, the operand copied is the cheaper one, counting the
    transpose of an ``[N, K]`` result: LeNet-5's second block (K = 421, N = 160 per 1280 rows)
    copies the output gradient.
    """

    def contract(inputs, cotangent, rows_in, rows_out, batch=((), ())):
        return lax.dot_general(inputs, cotangent, ((rows_in, rows_out), batch), precision)

    @custom_vmap
    def kernel_gradient(inputs, cotangent):
        rows = tuple(range(inputs.ndim - 1))
        return contract(inputs, cotangent, rows, rows)

    @kernel_gradient.def_vmap
    def rule(axis_size, in_batched, inputs, cotangent):
        inputs_batched, cotangent_batched = in_batched
        rows = tuple(range(inputs.ndim - 1 - inputs_batched))
        shifted = tuple(r + 1 for r in rows)
        if not inputs_batched:  # [K, S, *N]
            return jnp.moveaxis(contract(inputs, cotangent, rows, shifted), 1, 0), True
        if not cotangent_batched:
            return contract(inputs, cotangent, shifted, rows), True
        num_rows = math.prod(inputs.shape[1:-1])
        k, n = inputs.shape[-1], math.prod(cotangent.shape[len(shifted) + 1 :])
        samples = ((0,), (0,))
        if num_rows * n + k * n < num_rows * k:  # [S, *N, K]
            out = contract(cotangent, inputs, shifted, shifted, samples)
            return jnp.moveaxis(out, -1, 1), True
        return contract(inputs, cotangent, shifted, shifted, samples), True

    return kernel_gradient
