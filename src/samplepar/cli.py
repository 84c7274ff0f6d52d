"""``samplepar``: the command line. It parses arguments; the library does the work.

JAX is configured here (virtual CPU devices, multi-host start-up) before it is first imported,
never on ``import samplepar``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class CliError(Exception):
    """A bad argument or input, reported as one line and exit code 2."""


HOST_DEVICE_FLAG = "xla_force_host_platform_device_count"
DEFAULT_HOST_DEVICES = 8
COMPILE_CACHE_MAX_BYTES = 2 * 2**30  # least recently used programs are evicted beyond this


def default_compile_cache() -> str:
    """``$SAMPLEPAR_COMPILE_CACHE``, else ``$XDG_CACHE_HOME/samplepar/compile`` (~/.cache)."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return os.environ.get(
        "SAMPLEPAR_COMPILE_CACHE", str(Path(cache_home) / "samplepar" / "compile")
    )


def compile_cache_settings(directory: str, configured: str | None) -> dict:
    """JAX config updates for a persistent cache of every compiled program in ``directory``.

    A later run loads its programs (a NumPyro model's set-up alone compiles hundreds of small
    ones) instead of compiling them again. A cache already ``configured`` (by
    ``JAX_COMPILATION_CACHE_DIR`` or the caller) wins: nothing is changed; ``none`` turns it off.
    """
    if directory.strip().lower() in ("", "none") or configured:
        return {}
    return {
        "jax_compilation_cache_dir": directory,
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
        "jax_compilation_cache_max_size": COMPILE_CACHE_MAX_BYTES,
    }


def _configure_jax(args: argparse.Namespace) -> None:
    """Host memory policy and Threefry lowering, virtual CPU devices, the compile cache and
    multi-host start-up; before JAX starts."""
    from samplepar.host import prepare_process

    prepare_process()
    import jax  # importing starts no backend; XLA_FLAGS below is read when one starts

    settings = compile_cache_settings(args.compile_cache, jax.config.jax_compilation_cache_dir)
    for name, value in settings.items():
        jax.config.update(name, value)
    flags = os.environ.get("XLA_FLAGS", "")
    host_devices = args.host_devices
    if host_devices is None:  # the user's own XLA_FLAGS device count wins over the default
        host_devices = 0 if HOST_DEVICE_FLAG in flags else DEFAULT_HOST_DEVICES
    if host_devices:
        os.environ["XLA_FLAGS"] = f"{flags} --{HOST_DEVICE_FLAG}={host_devices}".strip()
    from samplepar import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _train_config(args: argparse.Namespace):
    from samplepar.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {}
    if args.config:
        settings.update(_read_config_file(Path(args.config), fields))
    for name in fields - {"data_options"}:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    if args.data_options:  # flags add to (and override) the config file's options
        options = settings.get("data_options", {})
        if not isinstance(options, dict):
            raise CliError(f"setting data_options must be a table of dataset options: {options!r}")
        settings["data_options"] = {**options, **dict(args.data_options)}
    try:
        return TrainConfig(**settings)
    except (TypeError, ValueError) as error:
        raise CliError(str(error)) from error


def _read_config_file(path: Path, fields: set[str]) -> dict:
    if not path.is_file():
        raise CliError(f"config file {path} does not exist")
    if path.suffix not in (".json", ".toml"):
        raise CliError(f"config file {path} must be JSON or TOML, named *.json or *.toml")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            settings = tomllib.loads(text)
        else:
            settings = json.loads(text)
    except ValueError as error:
        raise CliError(f"config file {path} cannot be parsed: {error}") from error
    if not isinstance(settings, dict):
        raise CliError(f"config file {path} must hold a table of settings")
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise CliError(
            f"config file {path}: unknown setting(s) {unknown}; settings are {sorted(fields)}"
        )
    return settings


def _print_metrics(title: str, metrics: dict) -> None:
    print(title)
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"  {key:<28} {value:.4f}")


def cmd_train(args: argparse.Namespace) -> int:
    from samplepar import train

    config = _train_config(args)
    result = train.train(config, args.workdir)
    _print_metrics(f"final test metrics ({args.workdir}/metrics.jsonl):", result.metrics)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A short sampling-parallel fit: Bayesian LeNet-5 on scikit-learn's digits."""
    import jax

    from samplepar import train

    layout = "sample=4,data=2" if jax.device_count() >= 8 else "sample"
    config = train.demo_config(layout, args.epochs)
    print(
        f"demo: Bayesian LeNet-5 on digits, {config.samples} weight samples per step over "
        f"{jax.device_count()} devices (layout {layout}), {config.epochs} epochs"
    )
    result = train.train(config, args.workdir)
    _print_metrics(f"final test metrics ({args.workdir}):", result.metrics)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from samplepar.predict import predict_main

    print(json.dumps(predict_main(args), default=str))
    return 0


def cmd_demand_simulate(args: argparse.Namespace) -> int:
    from samplepar.demand import simulate_to_file

    print(
        json.dumps(
            simulate_to_file(args.output, args.products, args.periods, args.categories, args.seed)
        )
    )
    return 0


def cmd_demand_fit(args: argparse.Namespace) -> int:
    from samplepar.demand import fit_file

    summary = fit_file(
        args.data,
        args.workdir,
        layout=args.layout,
        particles=args.particles,
        steps=args.steps,
        alpha=args.alpha,
        batch_size=args.batch_size,
        seed=args.seed,
        guide=args.guide,
        progress=not args.no_progress,
    )
    print(json.dumps(summary, indent=2))
    return 0


def cmd_demand_compare(args: argparse.Namespace) -> int:
    import jax

    from samplepar import compare, mcmc

    config = compare.StudyConfig(
        num_products=args.products,
        num_periods=args.periods,
        num_categories=args.categories,
        data_seed=args.seed,
        methods=tuple(args.methods),
        svi_steps=args.svi_steps,
        num_draws=args.draws,
        interval=args.interval,
        svi_layout=args.svi_layout,
        nuts=mcmc.NUTSConfig(
            num_warmup=args.warmup, num_samples=args.nuts_samples, num_chains=args.chains
        ),
    )
    report = compare.write_study(
        jax.random.key(args.seed), config, args.out, progress=not args.no_progress
    )
    print(compare.format_report(report))
    print(f"written: {args.out}/compare_{args.products}.json, elasticities_{args.products}.png")
    return 0


def _add_demand_commands(commands) -> None:
    from samplepar.svi_methods import RECOMMENDED, SVI_METHODS

    methods = ", ".join(SVI_METHODS)
    demand = commands.add_parser("demand", help="the price-elasticity demand model").add_subparsers(
        dest="demand_command", required=True
    )
    simulate = demand.add_parser("simulate", help="simulate a demand panel with known truth")
    simulate.add_argument("--products", type=int, default=10000)
    simulate.add_argument("--periods", type=int, default=156)
    simulate.add_argument("--categories", type=int, default=10)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "-o", "--output", required=True, help="file to write: .parquet or .csv (by its suffix)"
    )
    simulate.set_defaults(handler=cmd_demand_simulate)
    fit = demand.add_parser("fit", help="fit the demand model by sharded SVI")
    fit.add_argument("data", help="Parquet or CSV: product, category, period, price, units")
    fit.add_argument("--workdir", default="runs/demand")
    fit.add_argument("--layout", default="data", help="mesh layout, e.g. data=8 or sample=4,data=2")
    fit.add_argument("--particles", type=int, default=4)
    fit.add_argument("--steps", type=int, default=2000)
    fit.add_argument("--alpha", type=float, default=0.0, help="Renyi alpha (0: IW-ELBO)")
    fit.add_argument(
        "--batch-size",
        type=int,
        help="panel blocks (of up to 32 products) per step: mini-batch SVI, with each "
        "product's latents local to its block (mean-field guides only)",
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument(
        "--guide",
        default=RECOMMENDED,
        help=f"one of {methods}; default {RECOMMENDED} (recommended; normal is the published one)",
    )
    fit.add_argument("--no-progress", action="store_true")
    fit.set_defaults(handler=cmd_demand_fit)
    comp = demand.add_parser(
        "compare", help="SVI guides against a NUTS reference on a simulated panel with known truth"
    )
    comp.add_argument("--products", type=int, default=200)
    comp.add_argument("--periods", type=int, default=52)
    comp.add_argument("--categories", type=int, default=10)
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument(
        "--methods",
        nargs="+",
        default=[RECOMMENDED, "normal"],
        help=f"SVI methods, any of {methods}; default {RECOMMENDED} (recommended) and normal",
    )
    comp.add_argument("--svi-steps", type=int, default=3000)
    comp.add_argument("--svi-layout", help="mesh layout of the SVI fits (default: all on data)")
    comp.add_argument("--draws", type=int, default=1000, help="guide draws (intervals, k-hat)")
    comp.add_argument("--interval", type=float, default=0.9, help="central interval probability")
    comp.add_argument("--warmup", type=int, default=500, help="NUTS warm-up steps per chain")
    comp.add_argument("--nuts-samples", type=int, default=500, help="NUTS draws per chain")
    comp.add_argument("--chains", type=int, default=4)
    comp.add_argument("--out", default="runs/compare", help="directory for the results")
    comp.add_argument("--no-progress", action="store_true")
    comp.set_defaults(handler=cmd_demand_compare)


def _data_option(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of ``--data-option``; the dataset's loader gives the value its type."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    from samplepar.bnn.registry import MODELS
    from samplepar.data.augment import MODES
    from samplepar.data.registry import LOADERS
    from samplepar.objectives import OBJECTIVE_NAMES
    from samplepar.train import TrainConfig

    choices = {
        "model": ", ".join(MODELS) + " (lenet = lenet5)",
        "dataset": ", ".join(LOADERS),
        "objective": ", ".join(OBJECTIVE_NAMES),
        "augment": ", ".join(("none", *MODES)),
    }
    defaults = TrainConfig()
    parser.add_argument("--config", help="JSON or TOML file of settings (flags override it)")
    parser.add_argument("--workdir", default="runs/train", help="checkpoints, metrics, report")
    for field in dataclasses.fields(TrainConfig):
        if field.name in ("progress", "report", "data_options"):
            continue
        kind = type(getattr(defaults, field.name))
        kind = int if field.name == "samples_per_pass" else kind
        kind = str if field.name == "data_dir" else kind
        default = getattr(defaults, field.name)
        described = f"one of {choices[field.name]}; " if field.name in choices else ""
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=kind,
            default=None,
            help=f"{described}default {default!r}",
        )
    parser.add_argument(
        "--data-option",
        dest="data_options",
        type=_data_option,
        action="append",
        metavar="NAME=VALUE",
        help="a dataset option, repeatable: e.g. for --dataset series, path=sales.csv, "
        "value_column=units, history=24, horizon=4",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    parser.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        default=None,
        help="skip the report (OOD evaluation, plots, report.json)",
    )


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _global_parser() -> argparse.ArgumentParser:
    """Options read before jax is imported (they configure it)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(
        "--host-devices",
        type=_non_negative_int,
        default=os.environ.get("SAMPLEPAR_HOST_DEVICES"),
        help=f"virtual CPU devices when running on the CPU (default $SAMPLEPAR_HOST_DEVICES, "
        f"else the count in $XLA_FLAGS, else {DEFAULT_HOST_DEVICES}; 0 leaves XLA's default)",
    )
    parser.add_argument(
        "--compile-cache",
        default=default_compile_cache(),
        help="directory of compiled programs reused by later runs ('none': off); "
        "default $SAMPLEPAR_COMPILE_CACHE or ~/.cache/samplepar/compile",
    )
    parser.add_argument("--coordinator", help="host:port of process 0 for a multi-host run")
    parser.add_argument("--num-processes", type=int, help="processes in a multi-host run")
    parser.add_argument("--process-id", type=int, help="this process's index, from 0")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="samplepar",
        description="Parallel sampling-based Bayesian learning on JAX: samples x data on a mesh.",
        parents=[_global_parser()],
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="a short sampling-parallel BNN fit on digits")
    demo.add_argument("--workdir", default="runs/demo")
    demo.add_argument("--epochs", type=int, default=30)
    demo.set_defaults(handler=cmd_demo)

    train = commands.add_parser("train", help="train a Bayesian neural network")
    _add_train_options(train)
    train.set_defaults(handler=cmd_train)

    predict = commands.add_parser(
        "predict", help="posterior predictive of a trained run for new inputs"
    )
    predict.add_argument("--workdir", required=True, help="the training run's workdir")
    predict.add_argument("--inputs", required=True, help=".npy, .npz, .csv or .parquet")
    predict.add_argument("--output", required=True, help=".csv or .parquet to write")
    predict.add_argument("--layout", help="mesh layout (default: samples over the devices)")
    predict.add_argument("--samples", type=int, help="posterior samples (default: the run's)")
    predict.set_defaults(handler=cmd_predict)
    _add_demand_commands(commands)
    _refuse_abbreviations(parser)
    return parser


def _refuse_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Turns off argparse's prefix matching in ``parser`` and its sub-commands: ``--lr`` would
    otherwise silently mean ``--lr-decay``."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _refuse_abbreviations(subparser)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    early, _ = _global_parser().parse_known_args(argv)
    try:
        _configure_jax(early)
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except KeyboardInterrupt:
        print("samplepar: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    except Exception as error:
        _exit_if_peer_lost(error)
        code = _exit_code(error)
        if code is None:
            raise
        print(f"samplepar: error: {error}", file=sys.stderr)
        return code


def _exit_if_peer_lost(error: Exception) -> None:
    """Exits with code 1 at once when another process of a multi-process run has stopped.

    A normal exit would wait in JAX's shutdown barrier for the dead process and then abort.
    """
    from samplepar import distributed

    if not distributed.lost_peer(error):
        return
    print(
        f"samplepar: error: another process of this multi-process run stopped ({error}); "
        "the last checkpoint is kept: start every process again with the same command to resume",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_FAILED)


def _exit_code(error: Exception) -> int | None:
    """2 for bad input (settings, data, layout, checkpoint), 1 for a failed run, None: a bug."""
    from samplepar.checkpoint import CheckpointError
    from samplepar.launch import LaunchError
    from samplepar.train import TrainingDiverged

    if isinstance(error, TrainingDiverged | LaunchError):
        return EXIT_FAILED
    if isinstance(error, CliError | CheckpointError | ValueError | OSError):
        return EXIT_BAD_INPUT
    return None


if __name__ == "__main__":
    sys.exit(main())
