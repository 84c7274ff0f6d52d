"""A tiny vision transformer (the sampling-parallelism paper's main model).

Non-overlapping ``patch_size`` patches, learned position embeddings, pre-norm transformer
blocks, mean pooling over tokens. Patch 4 on 32x32 images gives 64 tokens; patch 2 on 8x8, 16.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from samplepar.bnn.conv import as_image


class EncoderBlock(nn.Module):
    """``x + MHA(LN(x))`` then ``x + MLP(LN(x))``."""

    heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(nn.LayerNorm()(x))
        y = nn.gelu(nn.Dense(self.mlp_dim)(nn.LayerNorm()(x)))
        return x + nn.Dense(x.shape[-1])(y)


class ViT(nn.Module):
    """Inputs ``[B, H, W, C]`` with ``H`` and ``W`` multiples of ``patch_size``."""

    num_outputs: int = 10
    patch_size: int = 4
    dim: int = 64
    depth: int = 2
    heads: int = 4
    mlp_dim: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.patch_size
        x = nn.Conv(self.dim, (p, p), strides=(p, p), padding="VALID")(as_image(x))
        x = x.reshape(x.shape[0], -1, self.dim)
        init = nn.initializers.normal(0.02)
        x = x + self.param("pos_embedding", init, (1, x.shape[1], self.dim))
        for _ in range(self.depth):
            x = EncoderBlock(self.heads, self.mlp_dim)(x)
        return nn.Dense(self.num_outputs)(jnp.mean(nn.LayerNorm()(x), axis=1))
