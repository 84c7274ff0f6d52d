"""The device mesh: two named axes, ``sample`` (Monte-Carlo samples) and ``data`` (examples).

Sampling parallelism shards ``sample``, data parallelism shards ``data``, the hybrid shards both.
A layout is written ``sample=4,data=2``; ``sample`` or ``data`` alone puts every device on that
axis, and ``none`` (or ``1``) is one device.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from samplepar.checks import is_whole_number

SAMPLE = "sample"
DATA = "data"
AXES = (SAMPLE, DATA)


class LayoutError(ValueError):
    """A layout, sample count or batch size that does not fit the devices."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """How many devices lie along each mesh axis."""

    sample: int = 1
    data: int = 1

    @property
    def size(self) -> int:
        return self.sample * self.data

    def __str__(self) -> str:
        return f"sample={self.sample},data={self.data}"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def parse_layout(text: str | Layout | None, num_devices: int | None = None) -> Layout:
    """Parses ``"sample=4,data=2"``, ``"sample"``, ``"data"``, ``"none"`` or ``"1"`` into a Layout.

    ``num_devices`` (default: every device JAX sees) fills in an axis named without a size and
    is checked against the product of the sizes.
    """
    if isinstance(text, Layout):
        layout = text
    else:
        num_devices = jax.device_count() if num_devices is None else num_devices
        spec = ("none" if text is None else text).strip().lower().replace(" ", "")
        if not spec:
            raise LayoutError(
                "layout is empty; give e.g. 'sample=4,data=2', 'sample', 'data' or 'none'"
            )
        if spec in ("none", "1", "single"):
            return Layout(1, 1)
        sizes: dict[str, int] = {}
        for part in spec.split(","):
            name, _, value = part.partition("=")
            if name not in AXES:
                raise LayoutError(
                    f"layout {text!r}: unknown axis {name!r}; axes are 'sample' and 'data', "
                    "e.g. 'sample=4,data=2'"
                )
            if name in sizes:
                raise LayoutError(f"layout {text!r}: axis {name!r} given twice")
            if value == "":
                sizes[name] = -1
                continue
            if not value.isdigit() or int(value) < 1:
                raise LayoutError(
                    f"layout {text!r}: size of {name!r} must be a positive integer, got {value!r}"
                )
            sizes[name] = int(value)
        if list(sizes.values()).count(-1) > 1:
            raise LayoutError(f"layout {text!r}: at most one axis may be left without a size")
        if -1 in sizes.values():
            known = int(np.prod([v for v in sizes.values() if v != -1]))
            if num_devices % known:
                raise LayoutError(
                    f"layout {text!r}: {num_devices} devices cannot be split with {known} "
                    "on the other axis"
                )
            sizes = {k: (num_devices // known if v == -1 else v) for k, v in sizes.items()}
        layout = Layout(sizes.get(SAMPLE, 1), sizes.get(DATA, 1))
    if num_devices is not None and layout.size > num_devices:
        raise LayoutError(
            f"layout {layout} needs {layout.size} devices but {num_devices} are present; "
            f"the product of its sizes may be at most {num_devices}"
        )
    return layout


def make_mesh(layout: str | Layout | None = None, devices=None) -> Mesh:
    """A ``(sample, data)`` mesh over ``devices`` (default: the first ``layout.size`` devices).

    Given explicit ``devices``, their number must equal the layout's product. With several
    processes, the ``data`` axis is split across processes where it can be (so each process loads
    only its own rows), otherwise the ``sample`` axis is.
    """
    if not (layout is None or isinstance(layout, (str, Layout))):
        raise LayoutError(
            f"layout must be a string such as 'sample=4,data=2' (or a Layout), got {layout!r}"
        )
    all_devices = jax.devices() if devices is None else list(devices)
    layout = parse_layout(layout, len(all_devices))
    if devices is not None and layout.size != len(all_devices):
        raise LayoutError(
            f"layout {layout} has {layout.size} devices but {len(all_devices)} were given"
        )
    num_processes = len({d.process_index for d in all_devices})
    if num_processes == 1:
        grid = np.asarray(all_devices[: layout.size], dtype=object)
        return Mesh(grid.reshape(layout.sample, layout.data), AXES)
    if layout.size != len(all_devices):
        raise LayoutError(
            f"layout {layout} has {layout.size} devices but the {num_processes} processes "
            f"hold {len(all_devices)}; a multi-process layout must use every device"
        )
    by_process = sorted(all_devices, key=lambda d: (d.process_index, d.id))
    blocks = np.asarray(by_process, dtype=object).reshape(num_processes, -1)
    if layout.data % num_processes == 0:
        per = layout.data // num_processes
        grid = np.concatenate([b.reshape(layout.sample, per) for b in blocks], axis=1)
    elif layout.sample % num_processes == 0:
        per = layout.sample // num_processes
        grid = np.concatenate([b.reshape(per, layout.data) for b in blocks], axis=0)
    else:
        raise LayoutError(
            f"layout {layout} cannot be split over {num_processes} processes: the data or "
            f"the sample axis size must be a multiple of {num_processes}"
        )
    return Mesh(grid, AXES)


def layout_of(mesh: Mesh) -> Layout:
    return Layout(mesh.shape[SAMPLE], mesh.shape[DATA])


def check_num_samples(
    num_samples: int, layout: Layout, setting: str | None = None, other: int | None = None
) -> None:
    """Raises unless ``num_samples`` splits evenly over the sample axis; the message starts
    with ``setting`` (the option that set the count) when given, and suggests axis sizes that
    also divide ``other``, a second count the same axis must split."""
    if not is_whole_number(num_samples):
        named = setting or "num_samples"
        raise LayoutError(f"{named} must be a whole number of samples, got {num_samples!r}")
    if num_samples < 1 or num_samples % layout.sample:
        both = math.gcd(max(num_samples, 1), other or 0)
        fits = [k for k in _divisors(both) if k <= 64]
        named = f"{setting}: " if setting else ""
        raise LayoutError(
            f"{named}{num_samples} samples cannot be split over sample={layout.sample} devices; "
            f"the sample axis size must divide the sample count: sizes {fits} would work, "
            f"or use a multiple of {layout.sample} samples"
        )


def check_batch_size(batch_size: int, layout: Layout) -> None:
    """Raises unless the global batch splits evenly over the data axis."""
    if batch_size < 1 or batch_size % layout.data:
        raise LayoutError(
            f"batch of {batch_size} examples cannot be split over data={layout.data} devices; "
            f"use a batch that is a multiple of {layout.data} or a data axis size in "
            f"{_divisors(max(batch_size, 1))}"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``data``; used for batches."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def sample_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``sample``; used for per-sample outputs."""
    return NamedSharding(mesh, PartitionSpec(SAMPLE))


def pad_to_multiple(array: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Pads the leading axis with zeros to a multiple; returns (padded, mask of real rows)."""
    array = np.asarray(array)
    n = array.shape[0]
    padded_n = -(-n // multiple) * multiple
    mask = np.zeros(padded_n, dtype=bool)
    mask[:n] = True
    pad = [(0, padded_n - n)] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, pad), mask


def global_batch(local_batch, mesh: Mesh):
    """Assembles a global batch, sharded on ``data``, from this process's slice of it.

    Every process passes the rows ``process_slice(num_rows, mesh)`` of the global batch; in a
    single process that is the whole batch. Every leaf must have the same number of rows
    (its leading axis), and in a single process they must split evenly over ``data``.
    """
    leaves = jax.tree_util.tree_leaves_with_path(local_batch)
    rows = {jax.tree_util.keystr(path): np.shape(leaf)[:1] for path, leaf in leaves}
    if any(len(r) == 0 for r in rows.values()) or len(set(rows.values())) > 1:
        listed = ", ".join(
            f"{name or 'batch'}: {r[0] if r else 'a scalar'}" for name, r in rows.items()
        )
        raise LayoutError(f"the batch's arrays must share their leading (row) axis; rows {listed}")
    if rows and jax.process_count() == 1:
        check_batch_size(next(iter(rows.values()))[0], layout_of(mesh))
    sharding = data_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def process_slice(num_rows: int, mesh: Mesh) -> slice:
    """The rows of a global batch of ``num_rows`` that this process's devices hold."""
    check_batch_size(num_rows, layout_of(mesh))
    index_map = data_sharding(mesh).addressable_devices_indices_map((num_rows,))
    starts = [index[0].start or 0 for index in index_map.values()]
    stops = [num_rows if index[0].stop is None else index[0].stop for index in index_map.values()]
    return slice(min(starts), max(stops))
