"""``kernel_product``: inputs times a weight kernel, with a custom VJP that computes the kernel's
gradient as one contraction of the inputs with the output gradient.

Autodiff's own rule for ``x @ W`` computes the kernel gradient as ``[N, K]`` and transposes it,
and for a kernel with several output axes it contracts the output gradient read in a transposed
order. Under ``vmap`` over weight samples XLA then copies activation-sized arrays into that order:
in LeNet-5's fused first block (:func:`samplepar.bnn.conv.conv_relu_pool`) that copy took 52 ms
of a 137 ms step at S=16 on a 2-core CPU, and nothing here.
"""

from __future__ import annotations

import functools

import jax
from jax import lax


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
    leading = tuple(range(inputs.ndim - 1))
    outputs = tuple(range(inputs.ndim - 1, cotangent.ndim))
    d_inputs = lax.dot_general(
        cotangent, kernel, ((outputs, tuple(range(1, kernel.ndim))), ((), ())), precision
    )
    d_kernel = lax.dot_general(inputs, cotangent, ((leading, leading), ((), ())), precision)
    return _summed_to_type_of(d_inputs, inputs), _summed_to_type_of(d_kernel, kernel)


kernel_product.defvjp(_forward, _backward)
