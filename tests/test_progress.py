"""progress: a bar written to a file or pipe redraws rarely; a terminal's bar is unchanged."""

import io
import re
import time

import pytest

from samplepar import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_in_a_log_writes_few_lines(monkeypatch):
    """1000 steps of 0.2 s (tqdm's clock set per step) into a non-terminal stream:
    200 s redraw at 0, 30, .., 180 s and at the end, 8 lines (a terminal's 0.5 s wrote 335)."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    bar = progress.bar(1000, description="train")
    now = time.time()
    for step in range(1000):
        bar._time = lambda step=step: now + 0.2 * (step + 1)
        bar.update(1)
    bar.close()
    lines = [line for line in re.split(r"[\r\n]+", stream.getvalue()) if line.strip()]
    assert len(lines) == 8
    assert lines[0].startswith("train:   0%") and "0/1000" in lines[0]
    assert lines[1].startswith("train:  15%") and "150/1000 [00:30" in lines[1]
    assert lines[-1].startswith("train: 100%") and "1000/1000" in lines[-1]


@pytest.mark.parametrize(
    "stream, mininterval, maxinterval", [(Terminal(), 0.5, 10.0), (io.StringIO(), 30.0, 30.0)]
)
def test_bar_redraw_interval(monkeypatch, stream, mininterval, maxinterval):
    monkeypatch.setattr("sys.stderr", stream)
    bar = progress.bar(10)
    assert (bar.mininterval, bar.maxinterval) == (mininterval, maxinterval)
    bar.close()


def test_disabled_bar_prints_nothing(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    bar = progress.bar(10, enabled=False)
    bar.update(10)
    bar.close()
    assert stream.getvalue() == ""
