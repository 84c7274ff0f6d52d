"""BNN training throughput: vectorised sample evaluation against a per-sample Python loop.

A *sample evaluation* is the forward and backward pass of the loss for one weight sample.
Compared on one device, for the same mean-field model, batch and ELBO:

- vectorised: the engine's loss (``vmap`` over the S samples), differentiated and jitted whole;
- loop: one separately jitted loss + gradient call per sample, gradients summed by a jitted add
  and averaged, the way per-sample PyTorch BNN code (e.g. bayesian-torch) computes them;
- mapped: the engine's loss with ``samples_per_pass=1``, a ``lax.map`` over samples inside one
  jitted call (one sample's weights and activations at a time stay in cache);
- loop over XLA's convolution (convolutional models): the loop above with the model's
  ``convolution="xla"``: XLA's own convolution and separate ReLU and pooling layers, as per-sample
  code that keeps its framework's layers runs. Our models convolve by matmuls instead (LeNet-5:
  one per block with each pooling window's input as a column, ``samplepar.bnn.lenet``; the
  ResNet: ``patch_conv``), because under ``vmap`` XLA's convolution with per-sample kernels
  becomes a grouped convolution, which XLA's CPU backend runs slowly; the plain loop above runs
  them too, and is the faster of the two loops.

Every form is compiled with the XLA options training uses (``weight_sample_compiler_options``),
and all give the same gradient (checked). Workloads: ``bnn-mlp`` (MLP 784-512-512-10, batch 256)
and ``bnn-lenet`` (LeNet-5 on 28x28x1, batch 128), at S = 1, 4, 16, on random inputs. The MLP's
achieved FLOP rate (matmul FLOPs of forward and backward) is compared with a plain jitted matmul
of the first layer's size stacked over the largest S, timed alternating with the model at every
S (the JSON's headline figures are at the largest S). Timings are medians
over repeats after warm-up (at least 3, at most ``--repeats``, within a time budget), the methods
alternating so that load on a shared machine hits them alike.

    python benchmarks/throughput.py            # full sizes; minutes on a CPU, mostly compiling
    python benchmarks/throughput.py --quick    # small sizes, S = 1, 4: a smoke test

Prints a table, writes ``benchmarks/results/throughput.json`` (``throughput-quick.json`` with
``--quick``) and a PNG plot beside it, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from samplepar.bnn import bayesianize, get_model
from samplepar.engine import bayesian_particle, make_loss, weight_sample_compiler_options
from samplepar.host import prepare_process
from samplepar.mesh import make_mesh
from samplepar.objectives import ELBO
from samplepar.random import sample_keys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, check_writable, fill_unset, int_at_least, positive_ints  # noqa: E402

DATASET_SIZE = 60_000


def workloads(quick: bool) -> list[dict]:
    if quick:
        return [
            dict(
                name="bnn-mlp",
                model="mlp",
                shape=(784,),
                batch=32,
                options={"hidden": (64, 64)},
                conv=False,
            ),
            dict(
                name="bnn-lenet", model="lenet5", shape=(8, 8, 1), batch=16, options={}, conv=True
            ),
        ]
    return [
        dict(name="bnn-mlp", model="mlp", shape=(784,), batch=256, options={}, conv=False),
        dict(name="bnn-lenet", model="lenet5", shape=(28, 28, 1), batch=128, options={}, conv=True),
    ]


def mlp_flops(batch: int, sizes: list[int]) -> int:
    """Matmul FLOPs of one sample evaluation: forward, weight gradients of every layer and
    input gradients of every layer but the first (the data is not differentiated)."""
    products = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return 2 * batch * (3 * sum(products) - products[0])


def timed(fn, repeats: int) -> list[float]:
    """``repeats`` wall-clock durations of ``fn()`` (blocked until ready)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def compare(fns: dict, repeats: int, budget_s: float = 8.0) -> dict[str, float]:
    """Median seconds of each (already compiled) function, alternating between them after one
    warm-up call each; stops after 3 rounds once ``budget_s`` is spent, else after ``repeats``."""
    for fn in fns.values():
        timed(fn, 1)
    times = {name: [] for name in fns}
    start = time.perf_counter()
    for round_ in range(repeats):
        for name, fn in fns.items():
            times[name] += timed(fn, 1)
        if round_ >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: float(np.median(t)) for name, t in times.items()}


def build(workload: dict, rng_key):
    """``(params, batch, vectorised(S), loop(S))`` for a workload."""
    model = get_model(workload["model"], workload["shape"], 10, **workload["options"])
    bm = bayesianize(model, init_scale=1e-2)
    x_key, y_key, init_key = jax.random.split(rng_key, 3)
    batch_size = workload["batch"]
    batch = {
        "x": jax.random.normal(x_key, (batch_size, *workload["shape"])),
        "y": jax.random.randint(y_key, (batch_size,), 0, 10),
    }
    params = bm.init_params(init_key, batch["x"][:1])
    particle = bayesian_particle(bm.family, bm.log_lik_fn)
    scale = DATASET_SIZE / batch_size
    mesh = make_mesh("none")
    options = weight_sample_compiler_options(mesh)  # training's XLA options, for every form

    def vectorised(num_samples, samples_per_pass=None):
        loss = make_loss(
            particle,
            ELBO(),
            mesh,
            num_samples,
            DATASET_SIZE,
            kl_fn=bm.family.kl,
            samples_per_pass=samples_per_pass,
        )
        grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True), compiler_options=options)
        return lambda key: grad_fn(params, key, batch)

    def sample_loss(params, key, batch):
        log_lik, _ = particle(params, key, batch)
        return -scale * jnp.sum(log_lik) + bm.family.kl(params)

    single = jax.jit(jax.value_and_grad(sample_loss), compiler_options=options)
    add = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
    average = jax.jit(lambda tree, n: jax.tree.map(lambda g: g / n, tree))

    def loop(num_samples):
        def step(key):
            keys = list(sample_keys(key, jnp.arange(num_samples)))
            loss, grads = single(params, keys[0], batch)
            for k in keys[1:]:
                loss_s, grads_s = single(params, k, batch)
                loss, grads = loss + loss_s, add(grads, grads_s)
            return loss / num_samples, average(grads, num_samples)

        return step

    return params, vectorised, loop


def max_relative_difference(a, b) -> float:
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-30)) for x, y in leaves)


def matmul_references(num_samples: int, batch: int, d_in: int, d_out: int):
    """``(functions, flops)``: a plain jitted matmul ``[S*B, d_in] @ [d_in, d_out]`` and the
    per-sample batched one ``[S, B, d_in] @ [S, d_in, d_out]`` (what a BNN layer computes), as
    argument-free calls to time beside the model, and the FLOPs of either."""
    keys = jax.random.split(jax.random.key(1), 4)
    a = jax.random.normal(keys[0], (num_samples * batch, d_in))
    b = jax.random.normal(keys[1], (d_in, d_out))
    sa = jax.random.normal(keys[2], (num_samples, batch, d_in))
    sb = jax.random.normal(keys[3], (num_samples, d_in, d_out))
    plain = jax.jit(jnp.matmul)
    batched = jax.jit(lambda x, w: jnp.einsum("sbi,sio->sbo", x, w))
    functions = {"matmul": lambda: plain(a, b), "batched_matmul": lambda: batched(sa, sb)}
    return functions, 2 * num_samples * batch * d_in * d_out


def run(args) -> dict:
    samples = args.samples
    rows = []
    for workload in workloads(args.quick):
        _, vectorised, loop = build(workload, jax.random.key(0))
        key = jax.random.key(7)
        if workload["model"] == "mlp":
            hidden = list(workload["options"].get("hidden", (512, 512)))
            matmuls, matmul_flops = matmul_references(
                max(samples), workload["batch"], 784, hidden[0]
            )
        if workload["conv"]:
            xla_options = {**workload["options"], "convolution": "xla"}
            _, _, xla_loop = build({**workload, "options": xla_options}, jax.random.key(0))
        for num_samples in samples:
            fns = {
                "vec": vectorised(num_samples),
                "mapped": vectorised(num_samples, samples_per_pass=1),
                "loop": loop(num_samples),
            }
            if workload["conv"]:
                fns["loop_xla"] = xla_loop(num_samples)
            grads = {name: fn(key)[1] for name, fn in fns.items()}
            timed_fns = {name: lambda f=fn, k=key: f(k) for name, fn in fns.items()}
            if workload["model"] == "mlp":  # timed alternating with the model, same load
                timed_fns.update(matmuls)
            seconds = compare(timed_fns, args.repeats)
            row = {
                "workload": workload["name"],
                "samples": num_samples,
                "batch": workload["batch"],
                "vectorised_s": seconds["vec"],
                "loop_s": seconds["loop"],
                "vectorised_samples_per_s": num_samples / seconds["vec"],
                "loop_samples_per_s": num_samples / seconds["loop"],
                "speedup": seconds["loop"] / seconds["vec"],
                "grad_max_rel_diff": max_relative_difference(grads["vec"], grads["loop"]),
            }
            row["mapped_s"] = seconds["mapped"]
            row["mapped_samples_per_s"] = num_samples / seconds["mapped"]
            row["mapped_speedup"] = seconds["loop"] / seconds["mapped"]
            row["mapped_grad_max_rel_diff"] = max_relative_difference(
                grads["mapped"], grads["loop"]
            )
            if "loop_xla" in fns:
                row["loop_xla_s"] = seconds["loop_xla"]
                row["loop_xla_samples_per_s"] = num_samples / seconds["loop_xla"]
                row["speedup_vs_loop_xla"] = seconds["loop_xla"] / seconds["vec"]
                row["mapped_speedup_vs_loop_xla"] = seconds["loop_xla"] / seconds["mapped"]
                row["loop_xla_grad_max_rel_diff"] = max_relative_difference(
                    grads["loop_xla"], grads["loop"]
                )
            if workload["model"] == "mlp":
                flops = mlp_flops(workload["batch"], [784, *hidden, 10]) * num_samples
                row["matmul_shape"] = [max(samples) * workload["batch"], 784, hidden[0]]
                for form in ("vectorised", "mapped", "loop"):
                    row[f"{form}_flop_per_s"] = flops / row[f"{form}_s"]
                for form in ("matmul", "batched_matmul"):
                    row[f"{form}_flop_per_s"] = matmul_flops / seconds[form]
                for form in ("vectorised", "mapped"):
                    row[f"{form}_fraction_of_matmul"] = (
                        row[f"{form}_flop_per_s"] / row["matmul_flop_per_s"]
                    )
            rows.append(row)
            print_row(row)
    largest = [r for r in rows if r["workload"] == "bnn-mlp" and r["samples"] == max(samples)][0]
    lenet = [r for r in rows if r["workload"] == "bnn-lenet" and r["samples"] == max(samples)][0]
    return {
        "workload": "bnn-throughput",
        "quick": args.quick,
        "device": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "repeats": args.repeats,
        "rows": rows,
        "matmul_reference": {
            "shape": largest["matmul_shape"],
            "plain_flop_per_s": largest["matmul_flop_per_s"],
            "batched_flop_per_s": largest["batched_matmul_flop_per_s"],
        },
        "mlp_flop_fraction_of_matmul": largest["vectorised_fraction_of_matmul"],
        "mlp_mapped_flop_fraction_of_matmul": largest["mapped_fraction_of_matmul"],
        "lenet_speedup_at_max_samples": lenet["speedup"],
        "lenet_speedup_vs_loop_xla_at_max_samples": lenet["speedup_vs_loop_xla"],
        "lenet_mapped_speedup_at_max_samples": lenet["mapped_speedup"],
        "lenet_mapped_speedup_vs_loop_xla_at_max_samples": lenet["mapped_speedup_vs_loop_xla"],
    }


def print_row(row: dict) -> None:
    flops = row.get("vectorised_flop_per_s")
    flop_text = f"{flops / 1e9:9.1f}" if flops else f"{'':>9}"
    mapped_text = f"{row['mapped_samples_per_s']:>10.1f} {row['mapped_speedup']:>7.2f}x"
    xla_text = (
        f"{row['loop_xla_samples_per_s']:>10.1f} {row['speedup_vs_loop_xla']:>7.2f}x "
        f"{row['mapped_speedup_vs_loop_xla']:>7.2f}x"
        if "loop_xla_s" in row
        else f"{'':>28}"
    )
    print(
        f"{row['workload']:<10} {row['samples']:>3} {row['vectorised_samples_per_s']:>10.1f} "
        f"{row['loop_samples_per_s']:>10.1f} {row['speedup']:>7.2f}x {mapped_text} {xla_text} "
        f"{flop_text} {row['grad_max_rel_diff']:>9.1e}",
        flush=True,
    )


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_speed) = plt.subplots(1, 2, figsize=(10, 4))
    names = sorted({r["workload"] for r in result["rows"]})
    for colour, name in zip(("tab:blue", "tab:orange"), names, strict=False):
        rows = [r for r in result["rows"] if r["workload"] == name]
        s = [r["samples"] for r in rows]
        forms = (("vectorised", "speedup", "o-"), ("mapped", "mapped_speedup", "^:"))
        for form, speedup, style in forms:
            label = f"{name} {'vmap' if form == 'vectorised' else 'lax.map'}"
            rates = [r[f"{form}_samples_per_s"] for r in rows]
            ax_rate.plot(s, rates, style, color=colour, label=label)
            ax_speed.plot(s, [r[speedup] for r in rows], style, color=colour, label=label)
        loops = [r["loop_samples_per_s"] for r in rows]
        ax_rate.plot(s, loops, "s--", color=colour, label=f"{name} loop")
    for ax in (ax_rate, ax_speed):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("weight samples S")
        ax.legend(fontsize=8)
    ax_rate.set_yscale("log")
    ax_rate.set_ylabel("sample evaluations / s")
    ax_speed.axhline(1.0, color="grey", lw=0.8)
    ax_speed.set_ylabel("vectorised / loop")
    fraction = result["mlp_flop_fraction_of_matmul"]
    fig.suptitle(
        f"BNN throughput on {result['device']} ({result['platform']}); "
        f"MLP at S={max(r['samples'] for r in result['rows'])}: {fraction:.0%} of matmul FLOP/s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    prepare_process()  # as the command line does: see samplepar.host
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a seconds-long run")
    parser.add_argument(
        "--samples", type=positive_ints, help="comma-separated S (default 1,4,16; --quick 1,4)"
    )
    parser.add_argument(
        "--repeats",
        type=int_at_least(3),
        help="timed repeats per figure, >= 3 (default 7; --quick 3)",
    )
    parser.add_argument("--out", type=Path, help="JSON path (PNG beside it)")
    args = parser.parse_args()
    quick = args.quick
    fill_unset(args, {"samples": [1, 4] if quick else [1, 4, 16], "repeats": 3 if quick else 7})
    out = args.out or RESULTS / ("throughput-quick.json" if args.quick else "throughput.json")
    check_writable(parser, out.parent)

    print(
        f"{'workload':<10} {'S':>3} {'vec eval/s':>10} {'loop eval/s':>10} {'speedup':>8} "
        f"{'map eval/s':>10} {'speedup':>8} {'xla loop':>10} {'vec/xla':>8} {'map/xla':>8} "
        f"{'GFLOP/s':>9} "
        f"{'grad diff':>9}"
    )
    result = run(args)
    ref = result["matmul_reference"]
    print(
        f"matmul {ref['shape']}: plain {ref['plain_flop_per_s'] / 1e9:.1f} GFLOP/s, "
        f"per-sample batched {ref['batched_flop_per_s'] / 1e9:.1f} GFLOP/s; "
        f"MLP vectorised reaches {result['mlp_flop_fraction_of_matmul']:.0%} of plain, "
        f"mapped {result['mlp_mapped_flop_fraction_of_matmul']:.0%}"
    )
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
