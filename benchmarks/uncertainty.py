"""SVI vs NUTS on simulated demand panels: wall time, agreement with NUTS, 90% coverage, k-hat.

    python benchmarks/uncertainty.py                      # 200 and 1,000 products x 52 periods
    python benchmarks/uncertainty.py --products 200       # one panel
    python benchmarks/uncertainty.py --quick              # 20 products x 10 periods

Per panel it prints a table (one row per method), writes the plot of estimated vs true
elasticities ``uncertainty_<P>.png`` and the NUTS run ``nuts_<P>.nc`` under ``--out``; at the end
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
    args = parse_args(argv)
    flag = f"--xla_force_host_platform_device_count={args.devices}"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    import jax

    from samplepar import compare, mcmc

    if args.quick:
        args.products, args.periods, args.categories = [20], 10, 2
        args.svi_steps, args.draws, args.nuts_warmup, args.nuts_samples = 400, 200, 150, 100
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = tuple(args.methods) if args.methods else tuple(compare.SVI_METHODS)
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
        results, idata = compare.run_study(jax.random.key(args.seed), config)
        truth = compare.simulate_panel(config).truth.product_elasticity
        compare.plot(results, truth, str(out / f"uncertainty_{num_products}.png"))
        mcmc.save(idata, str(out / f"nuts_{num_products}.nc"))
        summary = mcmc.summarize(idata)
        table = compare.table(results)
        print(f"\n{num_products} products x {args.periods} periods, {args.categories} categories")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
        for r in results:
            print(f"  {r.method}: {r.notes}")
        panels.append(
            {
                "num_products": num_products,
                "num_periods": args.periods,
                "num_categories": args.categories,
                "nuts": {
                    "num_warmup": args.nuts_warmup,
                    "num_samples": args.nuts_samples,
                    "num_chains": args.chains,
                    "max_rhat": summary.max_rhat,
                    "min_ess_bulk": summary.min_ess_bulk,
                    "num_divergences": summary.num_divergences,
                    "num_transitions": summary.num_transitions,
                    "chain_method": summary.chain_method,
                },
                "svi_steps": args.svi_steps,
                "methods": {
                    m: {k: None if v != v else float(v) for k, v in row.items()}  # NaN: None
                    for m, row in table.iterrows()
                },
            }
        )
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
