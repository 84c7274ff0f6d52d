"""Demand tables: simulation, validation errors that name the rows, Parquet/CSV round trips."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import gammaln

from samplepar.models import (
    DemandDataError,
    demand_data,
    observations,
    panel,
    read_table,
    simulate,
    validate,
)


@pytest.fixture(scope="module")
def table():
    return simulate(0, 6, 5, 2)[0]


def test_simulate_shapes_and_truth():
    table, truth = simulate(1, 50, 8, 4)
    assert list(table.columns) == list(demand_data.COLUMNS)
    assert len(table) == 50 * 8
    assert truth.product_elasticity.shape == (50,) and truth.cat_period_effect.shape == (4, 8)
    assert (table.groupby("product")["category"].first().to_numpy() == truth.product_category).all()
    assert float(truth.global_elasticity) == -2.0
    assert (table["price"] > 0).all() and (table["units"] >= 0).all()
    varied = table["price"].groupby(table["product"]).nunique() > 1  # discounts move prices
    assert 0.8 < varied.mean() <= 1.0


def _broken(table, **changes):
    table = table.copy()
    for column, (rows, value) in changes.items():
        table[column] = table[column].astype(object if value is None else table[column].dtype)
        table.loc[rows, column] = value
    return table


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"price": ([2, 7], np.nan)},
            r"column 'price' is missing a value in data rows 2, 7 \(0-based; 2 in all\)",
        ),
        (
            {"product": ([4], None)},
            r"column 'product' is missing a value in data row 4 \(0-based; 1 in all\)",
        ),
        (
            {"price": ([1, 3, 5], 0.0)},
            r"price must be positive and finite; it is not in data rows 1, 3, 5 \(0-based; 3",
        ),
        ({"price": ([9], -1.0)}, r"price must be positive .* data row 9 \(0-based; 1 in all\)"),
        (
            {"units": ([0, 11], -2)},
            r"units must be >= 0; negative in data rows 0, 11 \(0-based; 2 in all\)",
        ),
    ],
)
def test_bad_values_name_their_rows(table, change, message):
    with pytest.raises(DemandDataError, match=message):
        validate(_broken(table, **change))


def test_non_integer_units(table):
    broken = table.assign(units=table["units"].astype(float))
    broken.loc[[3, 4, 5, 6, 7, 8, 9], "units"] += 0.5
    with pytest.raises(
        DemandDataError,
        match=r"whole counts; not in data rows 3, 4, 5, 6, 7, \.\.\. \(0-based; 7 in all\)",
    ):
        validate(broken)


def test_missing_column(table):
    with pytest.raises(DemandDataError, match=r"lacks column\(s\) \['price'\]"):
        validate(table.drop(columns="price"))


def test_product_in_two_categories(table):
    broken = table.copy()
    broken.loc[6, "category"] = 1 - broken.loc[6, "category"]  # product 1, period 1
    with pytest.raises(DemandDataError, match=r"one category; 1 product\(s\) \(e.g. \[1\]\)"):
        validate(broken)


def test_duplicate_product_period(table):
    broken = pd.concat([table, table.iloc[[8]]], ignore_index=True)
    with pytest.raises(DemandDataError, match=r"repeated in data rows 8, 30 \(0-based; 2 in all\)"):
        validate(broken)


def test_nothing_dropped_and_round_trips(table, tmp_path):
    table, truth = simulate(3, 7, 4, 3)
    path = tmp_path / "demand.parquet"
    demand_data.save(path, table, truth)
    loaded, loaded_truth = demand_data.load(path)
    pd.testing.assert_frame_equal(loaded, validate(table))
    np.testing.assert_array_equal(loaded_truth.cat_period_effect, truth.cat_period_effect)
    table.to_csv(tmp_path / "demand.csv", index=False)
    assert len(read_table(tmp_path / "demand.csv")) == len(table)
    with pytest.raises(DemandDataError, match="expected a .parquet or .csv"):
        read_table(tmp_path / "demand.txt")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_save_writes_the_format_of_the_suffix(tmp_path, suffix):
    table, truth = simulate(3, 7, 4, 3)
    path = tmp_path / f"demand{suffix}"
    demand_data.save(path, table, truth)
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
    pd.testing.assert_frame_equal(read(path), table)
    loaded, loaded_truth = demand_data.load(path)
    pd.testing.assert_frame_equal(loaded, validate(table))
    np.testing.assert_array_equal(loaded_truth.product_elasticity, truth.product_elasticity)


def test_suffixes_are_read_in_any_case_and_a_missing_table_is_named(tmp_path, table):
    demand_data.save(tmp_path / "demand.CSV", table)
    pd.testing.assert_frame_equal(read_table(tmp_path / "demand.CSV"), validate(table))
    with pytest.raises(DemandDataError, match=r"^demand table .*nowhere\.csv does not exist$"):
        read_table(tmp_path / "nowhere.csv")


def test_save_refuses_another_suffix(tmp_path, table):
    with pytest.raises(DemandDataError, match=r"demand\.txt: expected a \.parquet or \.csv file"):
        demand_data.save(tmp_path / "demand.txt", table)
    assert list(tmp_path.iterdir()) == []


HEADER = "product,category,period,price,units\n"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            "a,x,1,2.0,3\n\na,x,2,1.0,many\na,x,3,1.0,4\na,x,4,1.0,few\n",
            r"^column 'units' must be numeric but holds text, e.g. 'many', in data rows 1, 3 "
            r"\(0-based; file lines 4, 6; 2 in all\)$",
        ),
        (
            "a,x,1,2.0,3\na,x,2,-1.0,4\n",
            r"^price must be positive and finite; it is not in data row 1 "
            r"\(0-based; file line 3; 1 in all\)$",
        ),
        # a label spanning lines: no line numbers
        ('"a\nb",x,1,-1.0,4\n', r"in data row 0 \(0-based; 1 in all\)$"),
    ],
)
def test_csv_errors_name_data_rows_and_file_lines(tmp_path, rows, message):
    """Data rows count from 0 after the header; file lines from 1, blank lines included."""
    path = tmp_path / "demand.csv"
    path.write_text(HEADER + rows)
    with pytest.raises(DemandDataError, match=message):
        read_table(path)


def test_text_in_a_numeric_column_names_its_rows(table):
    broken = table.astype({"price": object})
    broken.loc[[2, 5], "price"] = "n/a"
    with pytest.raises(
        DemandDataError,
        match=r"^column 'price' must be numeric but holds text, e.g. 'n/a', in data rows 2, 5 "
        r"\(0-based; 2 in all\)$",
    ):
        validate(broken)


def test_every_problem_of_a_table_is_named_at_once(tmp_path):
    """A NaN, text and a repeated row in one CSV: one error lists all three, so the first fix
    is not followed by a second refusal."""
    path = tmp_path / "demand.csv"
    path.write_text(HEADER + "a,x,1,2.0,3\na,x,2,,4\na,x,3,cheap,4\nb,y,1,1.0,5\nb,y,1,1.0,6\n")
    with pytest.raises(DemandDataError) as info:
        read_table(path)
    assert str(info.value).splitlines() == [
        "demand table has 3 problems:",
        "  - column 'price' is missing a value in data row 1 (0-based; file line 3; 1 in all)",
        "  - column 'price' must be numeric but holds text, e.g. 'cheap', in data row 2 "
        "(0-based; file line 4; 1 in all)",
        "  - each (product, period) must appear once; repeated in data rows 3, 4 "
        "(0-based; file lines 5, 6; 2 in all)",
    ]


def test_empty_damaged_boolean_and_huge_tables_are_named(tmp_path, table):
    path = tmp_path / "demand.csv"
    path.write_text("")
    with pytest.raises(DemandDataError, match="demand.csv is empty: not even a header"):
        read_table(path)
    parquet = tmp_path / "demand.parquet"
    parquet.write_bytes(b"not parquet")
    with pytest.raises(DemandDataError, match="demand.parquet cannot be read as Parquet"):
        read_table(parquet)
    with pytest.raises(DemandDataError, match="column 'units' holds true/false values"):
        validate(table.assign(units=table["units"] > 3))
    huge = table.astype({"units": np.float64})
    huge.loc[2, "units"] = 1e20  # cast to int64 it had become a negative count
    with pytest.raises(
        DemandDataError, match=r"units above 2\*\*53 cannot be counted exactly; in data row 2 "
    ):
        validate(huge)


def test_a_header_only_table_has_no_rows(tmp_path):
    path = tmp_path / "demand.csv"
    path.write_text(HEADER)
    with pytest.raises(
        DemandDataError, match=r"^demand table has no rows: it holds the column names only$"
    ):
        read_table(path)


def test_panel_places_every_observation():
    """Every observation lands in its product's slot and period; blocks hold one category."""
    table, _ = simulate(2, 40, 6, 3)
    table = table.drop(index=[0, 13]).sample(frac=1.0, random_state=0)
    obs = observations(validate(table))
    pan = panel(obs, block_products=4, num_shards=3)
    num_blocks, block_products, num_periods = pan.observed.shape
    assert block_products == 4 and num_periods == 6 and num_blocks % 3 == 0
    assert pan.observed.sum() == len(table)
    filled = pan.observed.any(-1)
    assert sorted(pan.product[filled]) == list(range(40))  # each product in exactly one slot
    np.testing.assert_array_equal(
        obs.product_category[pan.product[filled]],
        np.broadcast_to(pan.category[:, None], filled.shape)[filled],
    )
    block, slot = (np.zeros(40, int), np.zeros(40, int))
    block[pan.product[filled]], slot[pan.product[filled]] = np.nonzero(filled)
    cells = (block[obs.product], slot[obs.product], obs.period)
    assert pan.observed[cells].all()
    np.testing.assert_array_equal(pan.log_price[cells], obs.log_price)
    np.testing.assert_array_equal(pan.units[cells], obs.units)
    assert pan.units[~pan.observed].sum() == 0 and pan.log_price[~pan.observed].sum() == 0
    np.testing.assert_allclose(
        pan.log_units_factorial.sum(), gammaln(obs.units.astype(np.float64) + 1).sum(), rtol=1e-6
    )


def test_block_size_adapts_to_category_sizes():
    """Large blocks for large categories; small ones when large ones would sit mostly empty."""
    from samplepar.models.demand_data import _block_products

    assert _block_products(np.array([5000, 5000])) == 32
    assert _block_products(np.array([50, 50, 50, 50])) == 4  # 32 would leave 28% empty
    assert _block_products(np.array([1, 1, 1])) == 1
