"""NumPyro traces as sharded SVI reads them: the data plate's rows, local latents' parameters
and draws, and the per-row split of a site's log-density (used by :mod:`samplepar.svi`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro import distributions as dist
from numpyro.distributions.distribution import Unit
from numpyro.primitives import Messenger

from samplepar import random as sp_random


def local_param_axes(guide_trace, data_plate: str) -> dict[str, int]:
    """``{name: axis}`` of the guide's params inside a full-size data plate (local latents').

    Such a param holds one entry per row of the data set along ``axis``; NumPyro's plate
    slices it to the rows held (its ``event_dim`` says which axis).
    """
    plate = guide_trace.get(data_plate)
    if plate is None or plate["type"] != "plate" or plate["args"][1] is None:
        return {}
    axes = {}
    for site in guide_trace.values():
        frame = plate_frame(site, data_plate) if site["type"] == "param" else None
        event_dim = None if frame is None else site["kwargs"].get("event_dim")
        if event_dim is not None:
            axes[site["name"]] = jnp.ndim(site["value"]) + frame.dim - event_dim
    return axes


def take_rows(params: dict, axes: dict[str, int], rows) -> dict:
    """``params`` with each local param (``axes``: its row axis) taken at ``rows``."""
    return {
        name: jnp.take(value, rows, axis=axes[name], mode="clip") if name in axes else value
        for name, value in params.items()
    }


def site_log_prob(site) -> jax.Array:
    """A sample site's scaled log-density with its batch shape."""
    fn, value = site["fn"], site["value"]
    intermediates = site["intermediates"]
    log_prob = fn.log_prob(value, intermediates) if intermediates else fn.log_prob(value)
    return log_prob if site["scale"] is None else site["scale"] * log_prob


def plate_frame(site, plate: str):
    return next((f for f in site["cond_indep_stack"] if f.name == plate), None)


def per_example(site, frame, num_rows: int, scale: float) -> jax.Array:
    """``[num_rows]``: the site's log-density over ``scale``, summed over all but its plate's
    axis."""
    log_prob = jnp.asarray(site_log_prob(site))
    if log_prob.ndim < -frame.dim or log_prob.shape[frame.dim] != num_rows:
        raise ValueError(
            f"site {site['name']!r} has log-density of shape {log_prob.shape}; its "
            f"plate {frame.name!r} (dim {frame.dim}) must span the {num_rows} rows of the shard"
        )
    return jnp.moveaxis(log_prob, frame.dim, 0).reshape(num_rows, -1).sum(axis=1) / scale


def data_plate_scale(model_trace, data_plate: str) -> tuple[float, bool]:
    """(the scale NumPyro's data plate puts on its sites, whether it is declared full-size).

    A full-size plate scales its sites by (its size) / (rows held); the engine scales the rows'
    terms itself, so they are divided by it.
    """
    plate = model_trace.get(data_plate)
    if plate is None or plate["type"] != "plate":
        plates = sorted(name for name, site in model_trace.items() if site["type"] == "plate")
        raise ValueError(
            f"the model has no plate named {data_plate!r} (data_plate); its plates: {plates}"
        )
    size, subsample_size = plate["args"]
    if subsample_size is None:
        return 1.0, False
    return size / len(plate["value"]), True


class data_rows(Messenger):
    """Gives a full-size data plate (``plate(name, N, subsample_size=B)``) the rows it holds.

    ``rows`` ``[B]`` are the global indices, among ``num_rows``, of the rows the model is given;
    NumPyro's plate then slices full-size parameters declared inside it (a guide's, of local
    latents) to them, unless ``params_taken``: then their values are given at the rows already
    and the plate is kept from slicing them (by hiding their ``event_dim`` from it). A plate
    that takes its size from the rows (no ``subsample_size``) is left alone.
    """

    def __init__(self, fn, plate: str, rows, num_rows: int, params_taken: bool = False):
        self.plate, self.rows, self.num_rows = plate, rows, num_rows
        self.params_taken, self.full_size = params_taken, False
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "param" and self.params_taken and self.full_size:
            if plate_frame(msg, self.plate) is not None:
                msg["kwargs"] = {**msg["kwargs"], "event_dim": None}
        if msg["type"] != "plate" or msg["name"] != self.plate:
            return
        size, subsample_size = msg["args"]
        if subsample_size is None:
            if size != self.rows.shape[0]:
                raise ValueError(
                    f"plate {self.plate!r} has size {size}, but the model was given "
                    f"{self.rows.shape[0]} rows (it is given parts of the data: a device's rows, "
                    f"a mini-batch): size it from the arrays, numpyro.plate({self.plate!r}, "
                    f"x.shape[0]), or declare the data set's size with the rows as its "
                    f"subsample, numpyro.plate({self.plate!r}, {self.num_rows}, "
                    f"subsample_size=x.shape[0])"
                )
            return
        if size != self.num_rows:
            raise ValueError(
                f"plate {self.plate!r} is declared with size {size}, but the data "
                f"have {self.num_rows} rows: declare numpyro.plate({self.plate!r}, "
                f"{self.num_rows}, subsample_size=<rows given to the model>)"
            )
        msg["value"] = self.rows
        msg["args"] = (size, self.rows.shape[0])
        self.full_size = True


class normal_draws(Messenger):
    """Draws the handled function's latent Normal sites with :func:`samplepar.random.normal`.

    The same numbers as NumPyro's own draws (``loc + eps * scale``, ``eps`` from
    ``jax.random.normal`` with the site's key), so the objective is unchanged; put it inside
    ``seed``. Drawn by NumPyro, XLA split each site's ``erf_inv`` over several fusions and
    recomputed parts of it in each consumer; drawn here, each site's noise is made once, in one
    fusion. A demand-small step (2 CPU devices, from the initial parameters, medians of 8
    alternating rounds in one process) took 16.7 ms instead of 19.0, a step on a quarter of its
    blocks 8.6 instead of 11.3; demand-medium's quarter step 66 instead of 80 ms.

    Sites inside ``plate`` (local latents, the plate holding the rows ``rows`` of
    ``num_rows``) draw ``eps`` as the whole data set's draw would, at their rows only
    (:func:`samplepar.random.normal_rows`), so that a row's draw does not depend on the layout
    or the mini-batch; their guide distribution must be a Normal, possibly transformed (as
    AutoNormal's are).
    """

    def __init__(self, fn=None, plate: str | None = None, rows=None, num_rows: int = 0):
        self.plate, self.rows, self.num_rows = plate, rows, num_rows
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] != "sample" or msg["value"] is not None or msg["is_observed"]:
            return
        key = msg["kwargs"].get("rng_key")
        frame = None if self.plate is None else plate_frame(msg, self.plate)
        fn, transforms = msg["fn"], []
        if frame is not None and isinstance(fn, dist.TransformedDistribution):
            fn, transforms = fn.base_dist, fn.transforms
        while isinstance(fn, dist.Independent):
            fn = fn.base_dist
        if type(fn) is not dist.Normal or key is None:
            if frame is not None and key is not None and not isinstance(fn, dist.Delta):
                raise ValueError(
                    f"the guide draws local latent site {msg['name']!r} from "
                    f"{type(msg['fn']).__name__}: local latents need Normal guide sites "
                    "(AutoNormal's), so that each row's draw is the same on every layout"
                )
            return
        shape = tuple(msg["kwargs"].get("sample_shape", ())) + fn.batch_shape + fn.event_shape
        if frame is None:
            eps = sp_random.normal(key, shape, jnp.result_type(float))
        else:
            axis = len(shape) - len(msg["fn"].event_shape) + frame.dim
            full_shape = (*shape[:axis], self.num_rows, *shape[axis + 1 :])
            eps = sp_random.normal_rows(key, full_shape, axis, self.rows)
        value, intermediates = fn.loc + eps * fn.scale, []
        for transform in transforms:  # as TransformedDistribution.sample_with_intermediates
            unconstrained = value
            value, inner = transform.call_with_intermediates(value)
            intermediates.append([unconstrained, inner])
        msg["value"], msg["intermediates"] = value, intermediates


def constrain(params: dict, transforms: dict) -> dict:
    """Maps unconstrained params to their constraints' spaces."""
    return {name: transforms[name](value) for name, value in params.items()}


def varies_over(value, axis_name: str) -> bool:
    """Whether ``value``, inside ``shard_map``, differs between the devices along ``axis_name``
    (it derives from arrays sharded over it): JAX tracks this as the value's varying axes."""
    aval = jax.typeof(value)
    kind = getattr(aval, "manual_axis_type", None)  # jax 0.10; earlier versions: ``vma``
    varying = kind.varying if kind is not None else getattr(aval, "vma", frozenset())
    return axis_name in varying


def observed_data(site):
    """What an observed site scores: its value, or for ``numpyro.factor`` (a ``Unit``
    distribution, whose value is empty) the log factor."""
    fn = site["fn"]
    while isinstance(fn, (dist.MaskedDistribution, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn.log_factor if isinstance(fn, Unit) else site["value"]
