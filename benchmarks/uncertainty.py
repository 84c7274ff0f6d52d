"""SVI vs NUTS on simulated demand panels: wall time, agreement with NUTS, 90% coverage, k-hat.

    python benchmarks/uncertainty.py                      # 200 and 1,000 products x 52 periods
    python benchmarks/uncertainty.py --products 200       # one panel
    python benchmarks/uncertainty.py --quick              # 20 products x 10 periods

Per panel it prints a table (one row per method), writes the plot of estimated vs true
elasticities ``elasticities_<P>.png``, the NUTS run ``nuts_<P>.nc`` and ``compare_<P>.json``
under ``--out``; at the end
it writes ``uncertainty.json`` there and prints it as one JSON line. Runs on the CPU with
``--devices`` virtual devices (NUTS chains in parallel, SVI rows sharded) unless JAX finds an
accelerator.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--periods", type=int, default=52)
    parser.add_argument("--categories", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=None, help="SVI methods (default: all)")
    parser.add_argument("--svi-steps", type=int, default=3000)
    parser.add_argument("--draws", type=int, default=1000, help="guide draws (intervals, k-hat)")
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--nuts-samples", type=int, default=500)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", type=int, default=4, help="virtual CPU devices")
    parser.add_argument("--svi-layout", default=None, help='e.g. "sample=1,data=4" (default: all)')
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--quick", action="store_true", help="20 products x 10 periods, short")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    from samplepar.host import prepare_process

    prepare_process()  # as the command line does: see samplepar.host
    args = parse_args(argv)
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax

    from samplepar import compare, mcmc
    from samplepar.svi_methods import SVI_METHODS

    if args.quick:
        args.products, args.periods, args.categories = [20], 10, 2
        args.svi_steps, args.draws, args.nuts_warmup, args.nuts_samples = 400, 200, 150, 100
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
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
    (out / "uncertainty.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
