"""A forecasting task from a CSV file: windows of ``history`` values predict the next ``horizon``.

The split is chronological (the last ``test_fraction`` of the time line is the test period; a test
window's targets lie wholly in it, its history may reach back into the training period) and the
series is standardised with the mean and standard deviation of the training period only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from samplepar.data.base import DataError, Dataset, MissingDataError

if TYPE_CHECKING:  # pandas is imported where a CSV is read: it costs every process 0.5 s
    import pandas as pd

CSV_HEADER_LINES = 1


def _column(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    if column not in frame.columns:
        raise DataError(f"{path}: no column {column!r}; columns are {list(frame.columns)}")
    return frame[column]


def _numeric(values: pd.Series, column: str, path: Path) -> np.ndarray:
    """float64 values; raises naming the first row (CSV line) that is not a finite number."""
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{path}: column {column!r} row {row} (line {row + 1 + CSV_HEADER_LINES}) holds "
            f"{values.iloc[row]!r}, not a finite number ({bad.size} such rows)"
        )
    return numbers


def _order(frame: pd.DataFrame, time_column: str, path: Path) -> np.ndarray:
    """Row order by time (numbers, else dates); raises on bad or repeated times, naming the row."""
    import pandas as pd

    raw = _column(frame, time_column, path)
    times = pd.to_numeric(raw, errors="coerce")
    if times.isna().any():
        times = pd.to_datetime(raw, errors="coerce", format="mixed")
    if times.isna().any():
        row = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise DataError(
            f"{path}: column {time_column!r} row {row} (line {row + 1 + CSV_HEADER_LINES}) "
            f"holds {raw.iloc[row]!r}, neither a number nor a date"
        )
    duplicated = np.flatnonzero(times.duplicated().to_numpy())
    if duplicated.size:
        row = int(duplicated[0])
        raise DataError(
            f"{path}: column {time_column!r} row {row} (line {row + 1 + CSV_HEADER_LINES}) "
            f"repeats the time {raw.iloc[row]!r}"
        )
    return np.argsort(times.to_numpy(), kind="stable")


def windows(series: np.ndarray, history: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """All windows of a 1-D series: ``x [N, history, 1]``, ``y [N, horizon]``, N = T-h-H+1."""
    count = series.shape[0] - history - horizon + 1
    starts = np.arange(count)[:, None]
    x = series[starts + np.arange(history)[None, :]]
    y = series[starts + history + np.arange(horizon)[None, :]]
    return x[..., None].astype(np.float32), y.astype(np.float32)


def csv_series(
    path: str | Path,
    value_column: str = "value",
    time_column: str | None = None,
    history: int = 24,
    horizon: int = 1,
    test_fraction: float = 0.2,
) -> Dataset:
    """Forecasting windows from the CSV ``path``, standardised by the training period.

    ``meta`` holds ``mean`` and ``std`` (to map forecasts back: ``y * std + mean``), ``history``
    and ``horizon``. Rows are ordered by ``time_column`` when given, else kept in file order.
    """
    path = Path(path)
    if history < 1 or horizon < 1:
        raise ValueError(f"series: history and horizon must be >= 1, got {history}, {horizon}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"series: test_fraction must lie in (0, 1), got {test_fraction}")
    if not path.is_file():
        raise MissingDataError(f"series: CSV file {str(path)!r} does not exist")
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    values = _numeric(_column(frame, value_column, path), value_column, path)
    if time_column is not None:
        values = values[_order(frame, time_column, path)]
    total = values.shape[0]
    split = total - int(round(test_fraction * total))
    window = history + horizon
    if split < window or total - split < horizon:
        raise DataError(
            f"{path}: {total} rows are too few for windows of {history} + {horizon} with "
            f"test_fraction={test_fraction}: the training period ({split} rows) needs at least "
            f"{window} and the test period ({total - split} rows) at least {horizon}"
        )
    mean, std = values[:split].mean(), values[:split].std()
    if std == 0.0:
        raise DataError(f"{path}: column {value_column!r} is constant over the training period")
    scaled = (values - mean) / std
    x_train, y_train = windows(scaled[:split], history, horizon)
    x_test, y_test = windows(scaled[split - history :], history, horizon)
    meta = {"mean": float(mean), "std": float(std), "history": history, "horizon": horizon}
    return Dataset(x_train, y_train, x_test, y_test, 0, f"series:{path.stem}", meta)
