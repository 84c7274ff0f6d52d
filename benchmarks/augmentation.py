"""digits-convergence: epochs to a target accuracy with shared vs per-sample augmentation.

The claim under test (Sampling Parallelism for Fast and Efficient Bayesian Learning): when each of
the S weight samples sees its own random augmentation of the mini-batch (``per-sample``), a BNN
needs fewer epochs to reach a given accuracy than when all S samples see the same augmented batch
(``shared``). Everything else is identical: model, data order, weight-sample keys, optimizer.
Each (mode, seed) pair is one ``samplepar.train.train`` run on scikit-learn's digits (8x8,
shifts of up to 1 pixel); the accuracy is that of the Bayesian model average on the held-out 25%
split after each epoch (the split the training loop evaluates; there is no separate validation
split). Epochs to target = the first epoch whose accuracy reaches ``--target`` (missing if none).

    python benchmarks/augmentation.py            # LeNet-5, S=16, 3 seeds x 20 epochs
    python benchmarks/augmentation.py --quick    # MLP, S=4, 2 seeds x 3 epochs: a smoke test

Prints a table, writes ``benchmarks/results/augmentation.json`` (``augmentation-quick.json``
with ``--quick``) and a PNG of the accuracy curves beside it, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from samplepar import train
from samplepar.host import prepare_process
from samplepar.report import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, check_writable, fill_unset, positive_int  # noqa: E402

MODES = ("shared", "per-sample")
FULL = dict(model="lenet", samples=16, epochs=20, seeds=3, target=0.95, batch_size=128)
QUICK = dict(model="mlp", samples=4, epochs=3, seeds=2, target=0.85, batch_size=64)


def run_one(base: dict, mode: str, seed: int, workroot: Path) -> dict:
    """One training run; its per-epoch accuracies and the epoch reaching the target."""
    config = train.TrainConfig(
        model=base["model"],
        dataset="digits",
        samples=base["samples"],
        eval_samples=base["samples"],
        batch_size=base["batch_size"],
        epochs=base["epochs"],
        learning_rate=base["learning_rate"],
        layout=base["layout"],
        augment=mode,
        seed=seed,
        progress=False,
    )
    workdir = workroot / f"{mode}-{seed}"
    started = time.perf_counter()
    train.train(config, workdir)
    accuracy = [r["test_accuracy"] for r in read_metrics(workdir)]
    reached = [e for e, a in enumerate(accuracy, 1) if a >= base["target"]]
    return {
        "mode": mode,
        "seed": seed,
        "accuracy": accuracy,
        "epochs_to_target": reached[0] if reached else None,
        "seconds": time.perf_counter() - started,
    }


def summarise(runs: list[dict], base: dict) -> dict:
    """Per mode: epochs to target (mean over seeds that reached it, and how many did)."""
    summary = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        reached = [r["epochs_to_target"] for r in mine if r["epochs_to_target"] is not None]
        final = [r["accuracy"][-1] for r in mine]
        summary[mode] = {
            "epochs_to_target": [r["epochs_to_target"] for r in mine],
            "mean_epochs_to_target": float(np.mean(reached)) if reached else None,
            "reached": f"{len(reached)}/{len(mine)}",
            "final_accuracy_mean": float(np.mean(final)),
            "final_accuracy_std": float(np.std(final)),
        }

    # Censored runs (target never reached) count as epochs + 1 in the paired comparison.
    def censored(r):
        return r["epochs_to_target"] or base["epochs"] + 1

    by_seed = {(r["mode"], r["seed"]): censored(r) for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    diffs = [by_seed[("shared", s)] - by_seed[("per-sample", s)] for s in seeds]
    summary["paired_epochs_saved"] = diffs
    summary["claim_holds"] = bool(np.mean(diffs) > 0 and min(diffs) >= 0)
    return summary


def plot(runs: list[dict], base: dict, path: Path) -> None:
    figure = Figure(figsize=(6, 4))
    axis = figure.add_subplot()
    for colour, mode in zip(("tab:blue", "tab:orange"), MODES, strict=True):
        curves = np.asarray([r["accuracy"] for r in runs if r["mode"] == mode])
        epochs = np.arange(1, curves.shape[1] + 1)
        for curve in curves:
            axis.plot(epochs, curve, color=colour, alpha=0.25)
        axis.plot(epochs, curves.mean(axis=0), color=colour, lw=2, label=f"{mode} (mean)")
    axis.axhline(base["target"], color="k", ls="--", lw=1, label=f"target {base['target']}")
    axis.set(xlabel="epoch", ylabel="test accuracy (model average)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_title(f"digits, {base['model']} BNN, S={base['samples']}: augmentation per sample")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.savefig(path, dpi=100, bbox_inches="tight")


def main(argv=None) -> dict:
    prepare_process()  # as the command line does: see samplepar.host
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    for arg, kind in (("model", str), ("target", float)):
        parser.add_argument(
            f"--{arg}", type=kind, help=f"default {FULL[arg]}; --quick {QUICK[arg]}"
        )
    for arg in ("samples", "epochs", "seeds", "batch_size"):
        flag = "--" + arg.replace("_", "-")
        parser.add_argument(
            flag, type=positive_int, help=f"default {FULL[arg]}; --quick {QUICK[arg]}"
        )
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--layout", default="none", help="mesh layout, e.g. sample=4")
    args = parser.parse_args(argv)
    fill_unset(args, QUICK if args.quick else FULL)
    name = "augmentation-quick" if args.quick else "augmentation"
    check_writable(parser, RESULTS)
    base = {key: getattr(args, key) for key in FULL}
    base.update(learning_rate=args.learning_rate, layout=args.layout)
    runs = []
    print(f"{'mode':>10} {'seed':>4} {'epochs to target':>16} {'final acc':>9} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as workroot:
        for seed in range(base["seeds"]):
            for mode in MODES:
                result = run_one(base, mode, seed, Path(workroot))
                runs.append(result)
                print(
                    f"{mode:>10} {seed:>4} {str(result['epochs_to_target']):>16} "
                    f"{result['accuracy'][-1]:>9.4f} {result['seconds']:>8.1f}",
                    flush=True,
                )
    summary = summarise(runs, base)
    plot(runs, base, RESULTS / f"{name}.png")
    record = {
        "benchmark": "digits-convergence",
        "settings": base,
        "runs": runs,
        "summary": summary,
        "machine": f"{platform.machine()} {platform.system()}, python {sys.version.split()[0]}",
    }
    for mode in MODES:
        s = summary[mode]
        print(
            f"{mode:>10}: epochs to {base['target']} {s['epochs_to_target']} "
            f"(mean {s['mean_epochs_to_target']}, reached {s['reached']}), final accuracy "
            f"{s['final_accuracy_mean']:.4f} +- {s['final_accuracy_std']:.4f}"
        )
    print(
        f"claim holds here: {summary['claim_holds']} (paired epochs saved by per-sample: "
        f"{summary['paired_epochs_saved']})"
    )
    line = json.dumps(record)
    (RESULTS / f"{name}.json").write_text(line + "\n")
    print(line)
    return record


if __name__ == "__main__":
    main()
