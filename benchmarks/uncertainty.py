"""SVI vs NUTS on simulated demand panels: wall time, agreement with NUTS, 90% coverage, k-hat.

    python benchmarks/uncertainty.py                      # 200 and 1,000 products x 52 periods
    python benchmarks/uncertainty.py --products 200       # one panel
    python benchmarks/uncertainty.py --quick              # 20 products x 10 periods

Per panel it prints a table (one row per method; its columns are described in
``samplepar.compare.table``: ``sd_ratio_vs_ref`` below 1 means intervals narrower than NUTS's),
writes the plot of estimated vs true
elasticities ``elasticities_<P>.png``, the NUTS run ``nuts_<P>.nc`` and ``compare_<P>.json``
under ``--out``; at the end it writes ``uncertainty.json`` (``uncertainty-quick.json`` with
``--quick``) there and prints it as one JSON line. Flags given beside ``--quick`` win over its
settings. Runs on the CPU with ``--devices`` virtual devices (NUTS chains in parallel, SVI rows
sharded) unless JAX finds an accelerator.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import check_writable, fill_unset, positive_int  # noqa: E402

FULL = dict(
    products=[200, 1000],
    periods=52,
    categories=10,
    svi_steps=3000,
    draws=1000,
    nuts_warmup=500,
    nuts_samples=500,
)
QUICK = dict(
    products=[20],
    periods=10,
    categories=2,
    svi_steps=400,
    draws=200,
    nuts_warmup=150,
    nuts_samples=100,
)
HELP = {"draws": "guide draws (intervals, k-hat)"}


def parse_args(argv=None):
    """The command line; ``--quick`` fills only the settings not given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in FULL.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=positive_int,
            nargs="+" if name == "products" else None,
            help=f"{HELP.get(name, '')} (default {default}; --quick {QUICK[name]})".strip(),
        )
    parser.add_argument("--methods", nargs="+", default=None, help="SVI methods (default: all)")
    parser.add_argument("--chains", type=positive_int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", type=positive_int, default=4, help="virtual CPU devices")
    parser.add_argument("--svi-layout", default=None, help='e.g. "sample=1,data=4" (default: all)')
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="20 products x 10 periods, short")
    args = parser.parse_args(argv)
    fill_unset(args, QUICK if args.quick else FULL)
    check_writable(parser, Path(args.out))
    return args


def main(argv=None) -> dict:
    from samplepar.host import prepare_process

    prepare_process()  # as the command line does: see samplepar.host
    args = parse_args(argv)
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax

    from samplepar import compare, mcmc
    from samplepar.svi_methods import SVI_METHODS

    out = Path(args.out)
    methods = tuple(args.methods) if args.methods else tuple(SVI_METHODS)
    panels = []
    for num_products in args.products:
        config = compare.StudyConfig(
            num_products=num_products,
            num_periods=args.periods,
            num_categories=args.categories,
            data_seed=args.seed,
            methods=methods,
            svi_steps=args.svi_steps,
            num_draws=args.draws,
            svi_layout=args.svi_layout,
            nuts=mcmc.NUTSConfig(
                num_warmup=args.nuts_warmup,
                num_samples=args.nuts_samples,
                num_chains=args.chains,
            ),
        )
        panel = compare.write_study(jax.random.key(args.seed), config, out)
        print("\n" + compare.format_report(panel))
        panels.append(panel)
    report = {
        "benchmark": "uncertainty",
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "quick": args.quick,
        "panels": panels,
    }
    name = "uncertainty-quick.json" if args.quick else "uncertainty.json"
    (out / name).write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
