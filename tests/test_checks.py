"""Whole-number checks: numpy integers count, bools and floats do not."""

import numpy as np
import pytest

from samplepar.checks import check_count, is_whole_number


def test_whole_numbers():
    assert is_whole_number(3) and is_whole_number(np.int64(3)) and is_whole_number(-1)
    assert not any(is_whole_number(v) for v in (True, 3.0, "3", None))


def test_check_count_names_the_argument_and_the_minimum():
    check_count("steps", 0, minimum=0)
    for value in (0, 2.5, False):
        with pytest.raises(ValueError, match=f"steps must be an integer >= 1, got {value!r}"):
            check_count("steps", value)
