"""Demand data: simulation with known truth, table validation, and the arrays the models take.

A demand table has one row per (product, period) with columns ``product``, ``category``,
``period``, ``price`` (> 0) and ``units`` (counts). :func:`read_table` loads one from a DataFrame,
Parquet or CSV and :func:`validate` rejects bad rows with a :class:`DemandDataError` naming them;
nothing is dropped silently. :func:`observations` gives the long vectors of the published model,
:func:`panel` the blocked product x period panel of the fast one.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import gammaln

from samplepar.models.block_poisson import CHUNK_BLOCKS, blocks

COLUMNS = ("product", "category", "period", "price", "units")
_MAX_ROWS_SHOWN = 5


class DemandDataError(ValueError):
    """A demand table that cannot be used as it is; the message names the rows."""


class TrueParams(NamedTuple):
    """The parameters a simulated table was drawn from (log scale where it says so)."""

    global_elasticity: np.ndarray  # []
    category_elasticity: np.ndarray  # [C]
    product_elasticity: np.ndarray  # [P]
    product_effect: np.ndarray  # [P] log base demand
    cat_period_effect: np.ndarray  # [C, T]
    product_category: np.ndarray  # [P] int, category of each product


def simulate(
    seed: int, num_products: int, num_periods: int, num_categories: int
) -> tuple[pd.DataFrame, TrueParams]:
    """A demand table with one row per product-period, and the truth it was drawn from.

    Elasticities: global -2, categories ~ N(-2, 0.3), products ~ N(category, 0.2). Log base
    demand ~ N(5, 1); category-period effects ~ N(0, 0.2). Log price = product base log price
    ~ N(1, 0.5) + log(1 - discount), a discount of U(0.1, 0.5) in 30% of periods (the price
    variation that identifies each product's elasticity).
    Units ~ Poisson(exp(clip(log demand, -4, 20))).
    """
    rng = np.random.default_rng(seed)
    P, T, C = num_products, num_periods, num_categories
    product_category = rng.integers(0, C, size=P)
    global_elasticity = np.float64(-2.0)
    category_elasticity = global_elasticity + 0.3 * rng.standard_normal(C)
    product_elasticity = category_elasticity[product_category] + 0.2 * rng.standard_normal(P)
    product_effect = 5.0 + rng.standard_normal(P)
    cat_period_effect = 0.2 * rng.standard_normal((C, T))
    base_log_price = 1.0 + 0.5 * rng.standard_normal(P)
    discounted = rng.random((P, T)) < 0.3
    discount = rng.uniform(0.1, 0.5, size=(P, T))
    log_price = base_log_price[:, None] + np.where(discounted, np.log1p(-discount), 0.0)
    log_demand = (
        product_effect[:, None]
        + cat_period_effect[product_category]
        + product_elasticity[:, None] * log_price
    )
    units = rng.poisson(np.exp(np.clip(log_demand, -4.0, 20.0)))
    table = pd.DataFrame(
        {
            "product": np.repeat(np.arange(P), T),
            "category": np.repeat(product_category, T),
            "period": np.tile(np.arange(T), P),
            "price": np.exp(log_price).ravel(),
            "units": units.ravel(),
        }
    )
    truth = TrueParams(
        np.asarray(global_elasticity),
        category_elasticity,
        product_elasticity,
        product_effect,
        cat_period_effect,
        product_category,
    )
    return table, truth


def _rows(mask, lines: np.ndarray | None = None) -> str:
    """The first few rows where ``mask`` holds, and their count: 0-based data rows (the header
    not counted), with each row's file line where ``lines`` gives them (a CSV file)."""
    positions = np.flatnonzero(mask)
    shown = positions[:_MAX_ROWS_SHOWN]
    more = ", ..." if len(positions) > _MAX_ROWS_SHOWN else ""
    plural = "s" if len(positions) > 1 else ""
    where = f"file line{plural} {_listed(lines[shown])}{more}; " if lines is not None else ""
    return f"data row{plural} {_listed(shown)}{more} (0-based; {where}{len(positions)} in all)"


def _listed(numbers) -> str:
    return ", ".join(str(int(n)) for n in numbers)


def validate(table: pd.DataFrame, lines: np.ndarray | None = None) -> pd.DataFrame:
    """Returns the table (columns in order, price float64, units int64) or raises.

    Raises :class:`DemandDataError` for a missing column, no rows, a NaN, a price or units that
    are not numbers, a price <= 0, negative or non-integer units, a product in two categories,
    or a repeated (product, period), naming every such problem the table has at once. Rows are
    named as 0-based data rows (positions in the table), with the first few shown and the count,
    and with their file lines when ``lines`` gives the line of each row (:func:`read_table` does
    for a CSV file).
    """
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise DemandDataError(
            f"demand table lacks column(s) {missing}; it needs {list(COLUMNS)} "
            f"(has {list(table.columns)})"
        )
    if table.empty:
        raise DemandDataError("demand table has no rows: it holds the column names only")
    table = table.loc[:, list(COLUMNS)].reset_index(drop=True)
    problems = []
    missing = {column: table[column].isna().to_numpy() for column in COLUMNS}
    for column in COLUMNS:
        if missing[column].any():
            problems.append(
                f"column {column!r} is missing a value in {_rows(missing[column], lines)}"
            )
    numbers, known = {}, {}
    for column in ("price", "units"):
        values = pd.to_numeric(table[column], errors="coerce")
        text = values.isna().to_numpy() & ~missing[column]
        if pd.api.types.is_bool_dtype(table[column]):
            problems.append(f"column {column!r} holds true/false values, not numbers")
            text = np.ones(len(table), bool)  # no value to check further
        elif text.any():
            problems.append(
                f"column {column!r} must be numeric but holds text, e.g. "
                f"{table[column][text].iloc[0]!r}, in {_rows(text, lines)}"
            )
        numbers[column] = values.to_numpy(np.float64)
        known[column] = ~(missing[column] | text)
    price, units = numbers["price"], numbers["units"]
    bad = known["price"] & (~(price > 0) | ~np.isfinite(price))
    if bad.any():
        problems.append(f"price must be positive and finite; it is not in {_rows(bad, lines)}")
    negative = known["units"] & (units < 0)
    if negative.any():
        problems.append(f"units must be >= 0; negative in {_rows(negative, lines)}")
    fractional = known["units"] & (~np.isfinite(units) | (units != np.round(units)))
    if fractional.any():
        problems.append(f"units must be whole counts; not in {_rows(fractional, lines)}")
    huge = known["units"] & np.isfinite(units) & (units > MAX_UNITS)
    if huge.any():
        problems.append(f"units above 2**53 cannot be counted exactly; in {_rows(huge, lines)}")
    categories = table.groupby("product", sort=False)["category"].transform("nunique")
    if (categories > 1).any():
        products = table.loc[categories > 1, "product"].drop_duplicates().tolist()
        problems.append(
            f"each product must lie in one category; {len(products)} product(s) "
            f"(e.g. {products[:_MAX_ROWS_SHOWN]}) have several, in "
            f"{_rows((categories > 1).to_numpy(), lines)}"
        )
    keyed = ~(missing["product"] | missing["period"])
    repeated = keyed & table.duplicated(["product", "period"], keep=False).to_numpy()
    if repeated.any():
        problems.append(
            f"each (product, period) must appear once; repeated in {_rows(repeated, lines)}"
        )
    if len(problems) == 1:
        raise DemandDataError(problems[0])
    if problems:
        raise DemandDataError(
            f"demand table has {len(problems)} problems:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return table.assign(price=price, units=units.astype(np.int64))


TABLE_SUFFIXES = (".parquet", ".csv")
MAX_UNITS = 2**53  # float64 counts exactly up to here


def check_table_path(path: str | Path) -> Path:
    """``path`` as a Path, or raises unless it names a ``.parquet`` or ``.csv`` file."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise DemandDataError(f"{path}: expected a .parquet or .csv file")
    return path


def read_table(source: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A validated demand table from a DataFrame, a ``.parquet`` or a ``.csv`` file."""
    if isinstance(source, pd.DataFrame):
        return validate(source)
    path = check_table_path(source)
    if not path.is_file():
        raise DemandDataError(f"demand table {path} does not exist")
    if path.suffix.lower() == ".parquet":
        try:
            table = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises its own types for a damaged file
            raise DemandDataError(
                f"demand table {path} cannot be read as Parquet: {error}"
            ) from error
        return validate(table)
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DemandDataError(f"demand table {path} is empty: not even a header") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DemandDataError(f"demand table {path} cannot be read as CSV: {error}") from error
    lines = _csv_lines(path)
    return validate(table, lines if len(lines) == len(table) else None)


def _csv_lines(path: Path) -> np.ndarray:
    """The file line (from 1) of each data row of a CSV file: the lines after the header that
    are not blank (``pandas.read_csv`` skips blank lines). A quoted field spanning lines makes
    the count differ from the rows read, and the lines are then not used."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        filled = [number for number, line in enumerate(handle, 1) if not line.isspace()]
    return np.asarray(filled[1:], np.int64)


def save(path: str | Path, table: pd.DataFrame, truth: TrueParams | None = None) -> None:
    """Writes ``table`` to ``path`` (Parquet or CSV, by its suffix) and ``truth`` beside it as
    ``<stem>.truth.npz``, where :func:`load` finds it."""
    path = check_table_path(path)
    if path.suffix.lower() == ".parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
    if truth is not None:
        np.savez(path.with_suffix(".truth.npz"), **truth._asdict())


def load(path: str | Path) -> tuple[pd.DataFrame, TrueParams | None]:
    """Reads what :func:`save` wrote: the validated table and the truth when present."""
    path = Path(path)
    truth_path = path.with_suffix(".truth.npz")
    truth = None
    if truth_path.exists():
        with np.load(truth_path, allow_pickle=False) as stored:
            truth = TrueParams(**{name: stored[name] for name in TrueParams._fields})
    return read_table(path), truth


class Encoding(NamedTuple):
    """Labels of the integer codes: ``products[i]`` is the label of product code ``i``."""

    products: np.ndarray
    categories: np.ndarray
    periods: np.ndarray


class Observations(NamedTuple):
    """The published model's inputs: long vectors of length N (observations) plus indices."""

    product: np.ndarray  # [N] int32 product code
    category: np.ndarray  # [N] int32
    period: np.ndarray  # [N] int32
    log_price: np.ndarray  # [N] float32
    units: np.ndarray  # [N] float32 (integer-valued)
    product_category: np.ndarray  # [P] int32
    encoding: Encoding


def observations(table: pd.DataFrame) -> Observations:
    """Integer codes (labels sorted) and long observation vectors of a validated table."""
    product, products = pd.factorize(table["product"], sort=True)
    period, periods = pd.factorize(table["period"], sort=True)
    category, categories = pd.factorize(table["category"], sort=True)
    product_category = np.zeros(len(products), np.int32)
    product_category[product] = category
    return Observations(
        product.astype(np.int32),
        category.astype(np.int32),
        period.astype(np.int32),
        np.log(table["price"].to_numpy(np.float64)).astype(np.float32),
        table["units"].to_numpy().astype(np.float32),
        product_category,
        Encoding(np.asarray(products), np.asarray(categories), np.asarray(periods)),
    )


class Panel(NamedTuple):
    """The fast model's inputs: blocks of up to K products of one category, periods last.

    Products are sorted by category and cut into blocks; a block's empty slots and the cells
    with no observation have ``observed`` False, units 0 and log price 0 (empty slots point at
    product 0, whose parameters they leave untouched). Blocks are the rows of the model's data
    plate, so they shard over ``data`` and are what a mini-batch draws.
    """

    product: np.ndarray  # [B, K] int32 product code of each slot
    category: np.ndarray  # [B] int32 category of each block
    log_price: np.ndarray  # [B, K, T] float32
    units: np.ndarray  # [B, K, T] float32
    observed: np.ndarray  # [B, K, T] bool
    units_total: np.ndarray  # [B, K] and the rest: the cells' sums (block_poisson.Blocks)
    units_log_price: np.ndarray  # [B, K]
    units_per_period: np.ndarray  # [B, T]
    log_price_low: np.ndarray  # [B, K]
    log_price_high: np.ndarray  # [B, K]
    log_units_factorial: np.ndarray  # [B] float32: sum of log(units!) over the block (a constant)


MAX_BLOCK_PRODUCTS = 32
MAX_EMPTY_SLOTS = 0.1  # fraction of slots a block size may leave empty


def panel(obs: Observations, block_products: int | None = None, num_shards: int = 1) -> Panel:
    """The blocked product x period panel of :func:`observations`' vectors.

    ``block_products`` defaults to the largest power of two up to ``MAX_BLOCK_PRODUCTS`` that
    leaves at most ``MAX_EMPTY_SLOTS`` of the slots empty (large blocks are faster; small
    categories waste slots in them). The block count is padded (with empty blocks) so that each
    of ``num_shards`` data shards gets the same number of blocks, in chunks of at most
    ``CHUNK_BLOCKS`` of nearly equal size.
    """
    T = len(obs.encoding.periods)
    order = np.argsort(obs.product_category, kind="stable")
    sorted_category = obs.product_category[order]
    starts = np.flatnonzero(np.r_[True, sorted_category[1:] != sorted_category[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    block_products = block_products or _block_products(sizes)
    blocks_of = -(-sizes // block_products)
    num_blocks = _padded_block_count(int(blocks_of.sum()), num_shards)
    product = np.zeros((num_blocks, block_products), np.int32)
    filled = np.zeros((num_blocks, block_products), bool)
    category = np.zeros(num_blocks, np.int32)
    block = 0
    for start, size, count in zip(starts, sizes, blocks_of, strict=True):
        slots = np.arange(count * block_products) < size
        members = np.zeros(count * block_products, np.int32)
        members[slots] = order[start : start + size]
        product[block : block + count] = members.reshape(count, block_products)
        filled[block : block + count] = slots.reshape(count, block_products)
        category[block : block + count] = sorted_category[start]
        block += count
    slot_of = np.zeros(len(order), np.int64)  # flat (block, slot) index of each product
    slot_of[product[filled]] = np.flatnonzero(filled)
    cell = slot_of[obs.product] * T + obs.period
    log_price = np.zeros(num_blocks * block_products * T, np.float32)
    units = np.zeros_like(log_price)
    observed = np.zeros(log_price.shape, bool)
    log_price[cell] = obs.log_price
    units[cell] = obs.units
    observed[cell] = True
    log_units_factorial = np.zeros(num_blocks, np.float64)
    np.add.at(
        log_units_factorial,
        slot_of[obs.product] // block_products,
        gammaln(obs.units.astype(np.float64) + 1.0),
    )
    shape = (num_blocks, block_products, T)
    cells = blocks(log_price.reshape(shape), units.reshape(shape), observed.reshape(shape))
    return Panel(product, category, *cells, log_units_factorial.astype(np.float32))


def _block_products(category_sizes: np.ndarray) -> int:
    """The largest power-of-two block size whose empty slots are few (see :func:`panel`)."""
    size = MAX_BLOCK_PRODUCTS
    while size > 1:
        slots = size * np.sum(-(-category_sizes // size))
        if slots <= (1 + MAX_EMPTY_SLOTS) * category_sizes.sum():
            break
        size //= 2
    return size


def _padded_block_count(num_blocks: int, num_shards: int) -> int:
    """Blocks after padding: ``num_shards`` equal shards of equal chunks of <= CHUNK_BLOCKS."""
    per_shard = -(-num_blocks // num_shards)
    chunks = -(-per_shard // CHUNK_BLOCKS)
    return num_shards * chunks * -(-per_shard // chunks)


def mean_log_price(obs: Observations) -> np.ndarray:
    """``[P]`` each product's mean log price over its observed periods."""
    num_products = len(obs.product_category)
    total = np.bincount(obs.product, weights=obs.log_price, minlength=num_products)
    return (total / np.bincount(obs.product, minlength=num_products)).astype(np.float32)
