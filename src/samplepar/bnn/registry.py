"""Models by name: ``get_model(name, input_shape, num_outputs, **options)``.

``input_shape`` is one example's shape, channels last (``(28, 28, 1)``, ``(8, 8, 1)``,
``(32, 32, 3)``; a time-series window is ``(window,)`` or ``(window, features)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

from flax import linen as nn

from samplepar.bnn.conv import CONVOLUTIONS, ResNet
from samplepar.bnn.dense import MLP, Forecaster
from samplepar.bnn.lenet import LeNet5
from samplepar.bnn.vit import ViT
from samplepar.checks import is_whole_number


class _Entry(NamedTuple):
    cls: type[nn.Module]
    likelihood: str
    check: Callable[[str, tuple[int, ...], dict], dict]  # -> options, filled in


def _any_shape(name, shape, options):
    return options


def _image(name, shape, options, min_size=1):
    if len(shape) not in (2, 3):
        raise ValueError(f"model {name!r} needs an image shape (H, W) or (H, W, C), got {shape}")
    if min(shape[:2]) < min_size:
        raise ValueError(
            f"model {name!r} needs images of at least {min_size}x{min_size}, got {shape}"
        )
    return options


def _convolution(name, options):
    convolution = options.get("convolution", "patches")
    if convolution not in CONVOLUTIONS:
        raise ValueError(
            f"model {name!r}: convolution={convolution!r} is unknown; choose "
            + " or ".join(CONVOLUTIONS)
        )


def _positive_option(name, options, option: str, default: int) -> int:
    """``options[option]`` (or ``default``), refused unless an integer >= 1."""
    value = options.get(option, default)
    if not (is_whole_number(value) and value >= 1):
        raise ValueError(f"model {name!r}: {option} must be an integer >= 1, got {value!r}")
    return value


def _lenet(name, shape, options):
    _convolution(name, options)
    return _image(name, shape, options, min_size=4)


def _resnet(name, shape, options):
    _convolution(name, options)
    widths = tuple(options.get("widths", ResNet.widths))
    groups = _positive_option(name, options, "groups", ResNet.groups)
    bad = [w for w in widths if w % groups]
    if bad:
        raise ValueError(f"model {name!r}: GroupNorm groups={groups} must divide widths {bad}")
    return _image(name, shape, options, min_size=2 ** (len(widths) - 1))


def _vit(name, shape, options):
    _image(name, shape, options)
    patch = _positive_option(name, options, "patch_size", 4 if min(shape[:2]) >= 16 else 2)
    if shape[0] % patch or shape[1] % patch:
        raise ValueError(
            f"model {name!r}: patch_size={patch} must divide the image size {shape[0]}x{shape[1]}"
        )
    heads = _positive_option(name, options, "heads", ViT.heads)
    if _positive_option(name, options, "dim", ViT.dim) % heads:
        raise ValueError(f"model {name!r}: dim must be a multiple of heads={heads}")
    return {**options, "patch_size": patch}


def _series(name, shape, options):
    if len(shape) not in (1, 2):
        raise ValueError(
            f"model {name!r} needs a window shape (window,) or (window, features), got {shape}"
        )
    return options


MODELS: dict[str, _Entry] = {
    "mlp": _Entry(MLP, "categorical", _any_shape),
    "lenet5": _Entry(LeNet5, "categorical", _lenet),
    "resnet": _Entry(ResNet, "categorical", _resnet),
    "vit": _Entry(ViT, "categorical", _vit),
    "forecaster": _Entry(Forecaster, "gaussian", _series),
}
_ALIASES = {"lenet": "lenet5", "lenet-5": "lenet5"}


def model_name(name: str) -> str:
    """The registry's name of model ``name`` (``LeNet`` -> ``lenet5``); raises for unknown ones."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in MODELS:
        aliases = {m: [a for a, k in _ALIASES.items() if k == m] for m in MODELS}
        known = ", ".join(m + (f" ({', '.join(aliases[m])})" if aliases[m] else "") for m in MODELS)
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    return key


def _entry(name: str) -> tuple[str, _Entry]:
    key = model_name(name)
    return key, MODELS[key]


def get_model(name: str, input_shape, num_outputs: int, **options) -> nn.Module:
    """A flax linen model for examples of ``input_shape``, with ``num_outputs`` outputs
    (classes, or the forecast horizon). ``options`` set the model's fields (e.g. ``hidden``)."""
    key, entry = _entry(name)
    sizes = input_shape if isinstance(input_shape, (tuple, list)) else None
    if not sizes or not all(is_whole_number(d) and d >= 1 for d in sizes):
        raise ValueError(
            f"model {key!r}: input_shape must be a tuple of positive sizes (one example's shape, "
            f"e.g. (28, 28, 1)), got {input_shape!r}"
        )
    shape = tuple(int(d) for d in sizes)
    if not (is_whole_number(num_outputs) and num_outputs >= 1):
        raise ValueError(f"model {key!r}: num_outputs must be an integer >= 1, got {num_outputs!r}")
    fields = {f.name for f in dataclasses.fields(entry.cls)} - {"parent", "name", "num_outputs"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(
            f"model {key!r} has no option(s) {unknown}; its options are {sorted(fields)}"
        )
    options = entry.check(key, shape, options)
    return entry.cls(num_outputs=int(num_outputs), **options)


def model_likelihood(name: str) -> str:
    """The likelihood a named model is built for: ``"categorical"`` or ``"gaussian"``."""
    return _entry(name)[1].likelihood
