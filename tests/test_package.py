"""The package's top level: every exported name resolves, and importing loads only what is used."""

import json
import subprocess
import sys

import pytest

import samplepar


def test_every_exported_name_resolves_to_its_module_object():
    from samplepar import engine, mesh, objectives

    assert samplepar.make_mesh is mesh.make_mesh
    assert samplepar.build_step is engine.build_step
    assert samplepar.RenyiELBO is objectives.RenyiELBO
    assert all(getattr(samplepar, name) is not None for name in samplepar.__all__)
    assert set(samplepar.__all__) <= set(dir(samplepar))


def test_unknown_name_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no_such_name"):
        samplepar.no_such_name  # noqa: B018


def loaded_after_import(modules: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of ``candidates`` a fresh process has loaded after ``import <modules>``."""
    loaded = f"[m for m in {candidates!r} if m in sys.modules]"
    script = f"import json, sys, {modules}\nprint(json.dumps({loaded}))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_command_line_svi_and_demand_fit_do_not_import_flax_scipy_stats_or_arviz():
    modules = "samplepar.cli, samplepar.svi, samplepar.models, samplepar.demand"
    assert loaded_after_import(modules, ("flax", "scipy.stats", "arviz", "matplotlib")) == []


def test_training_imports_neither_plotting_nor_scikit_learn_until_used():
    heavy = ("sklearn", "scipy", "pandas", "matplotlib", "arviz")
    assert loaded_after_import("samplepar.train", heavy) == []
