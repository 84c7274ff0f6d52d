"""The package's top level: every exported name resolves, and importing loads only what is used."""

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


def test_command_line_svi_and_demand_fit_do_not_import_flax_scipy_stats_or_arviz():
    script = (
        "import sys, samplepar.cli, samplepar.svi, samplepar.models, samplepar.demand\n"
        "heavy = [m for m in ('flax', 'scipy.stats', 'arviz', 'matplotlib') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


def test_training_imports_neither_plotting_nor_scikit_learn_until_used():
    script = (
        "import sys, samplepar.train\n"
        "heavy = ('sklearn', 'scipy', 'pandas', 'matplotlib', 'arviz')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
