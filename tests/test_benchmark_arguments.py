"""The benchmarks' argument checks (benchmarks/_common.py): bad counts and output folders are
refused at parsing, before minutes of work."""

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from _common import check_writable, fill_unset, fractions, int_at_least, positive_ints  # noqa: E402


def test_counts_and_lists_are_parsed_or_refused():
    assert positive_ints("1,4,16") == [1, 4, 16]
    assert fractions("0.25,1") == [0.25, 1.0]
    assert int_at_least(3)("3") == 3
    for parse, text, message in [
        (positive_ints, "1,,4", "'' is not an integer"),
        (positive_ints, "0", "0 is below 1"),
        (positive_ints, "-1", "-1 is below 1"),
        (int_at_least(3), "2", "2 is below 3"),
        (fractions, "0.5,1.5", r"1\.5 is not in \(0, 1\]"),
        (fractions, "0", r"0\.0 is not in \(0, 1\]"),
        (fractions, "x", "'x' is not a number"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)


def test_quick_settings_fill_only_what_was_not_given():
    args = argparse.Namespace(steps=7, size=None)
    fill_unset(args, {"steps": 100, "size": "small"})
    assert (args.steps, args.size) == (7, "small")


def test_an_unwritable_output_folder_stops_the_parser(tmp_path, capsys):
    check_writable(argparse.ArgumentParser(), tmp_path / "new" / "results")
    assert (tmp_path / "new" / "results").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as info:
        check_writable(argparse.ArgumentParser(prog="bench"), blocker / "results")
    assert info.value.code == 2
    assert f"cannot write to output directory {blocker / 'results'}" in capsys.readouterr().err


def test_the_reference_fit_times_alone_and_refuses_bad_sizes(capsys):
    import reference_demand

    rate = reference_demand.main(
        ["--products", "8", "--periods", "6", "--categories", "2"]
        + ["--steps", "3", "--rounds", "2"]
    )
    assert rate > 0
    assert "published model, 48 observations:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        reference_demand.main(["--products", "2", "--categories", "5"])
    assert info.value.code == 2
    assert "--categories 5 is more than --products 2" in capsys.readouterr().err
