"""`autotune`: a thin layer over the library functions of the same names. Usage errors
become one line on stderr and exit code 2; tracebacks only with --debug."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from ._demo import run_demo
from ._early_stopping import rung_steps
from ._errors import AutotuneError, Stopped
from ._export import PICK_HELP, export, format_entries
from ._progress import format_params
from ._report import report, run_dashboard
from ._spec import QLoRATrial, SamplerName, StudySpec, load_spec
from ._study import StudySummary, create_study, list_studies, load_study, show_study
from ._verify import verify
from ._worker import run_worker
from .dashboards import devices_line, format_value, verification_lines
from .objectives import TrialInputError
from .storage import StorageError, mask_url, resolve_storage_url, serve_grpc_proxy

_USAGE_ERRORS = (AutotuneError, TrialInputError, StorageError)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _states(summary: StudySummary) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.states.items())) or "no trials"


def cmd_study_create(args: argparse.Namespace) -> None:
    if (args.config is None) == (args.like is None):
        raise AutotuneError("give the spec with --config SPEC, or copy another study's with --like NAME (one of them)")
    spec = load_spec(args.config) if args.config else load_study(args.like, args.storage)[1]
    if args.sampler:
        spec = spec.model_copy(update={"sampler": spec.sampler.model_copy(update={"name": args.sampler})})
    if args.no_early_stopping:
        spec = spec.model_copy(update={"early_stopping": None})
    study = create_study(args.name, spec, args.storage, skip_if_exists=args.skip_if_exists, like=args.like)
    objectives = ", ".join(f"{m} ({d})" for m, d in zip(spec.metric_names, spec.directions, strict=True))
    print(f"study {study.study_name!r}: {_searches(spec)}, budget {spec.budget}, objectives {objectives}")


def _searches(spec: StudySpec) -> str:
    if spec.early_stopping is None:
        return f"{spec.sampler.name} sampler"
    assert spec.training.max_steps is not None  # early stopping needs it
    rungs = ", ".join(map(str, rung_steps(spec.early_stopping, spec.training.max_steps)))
    return f"{spec.sampler.name} sampler with early stopping at steps {rungs} of {spec.training.max_steps}"


def cmd_study_list(args: argparse.Namespace) -> None:
    summaries = list_studies(args.storage)
    if args.json:
        _print_json([s.to_dict() for s in summaries])
        return
    table = Table("study", "method", "budget", "objectives", "trials")
    for s in summaries:
        table.add_row(s.name, s.sampler, str(s.budget), ", ".join(s.objectives), _states(s))
    Console().print(table)


def _print_summary(summary: StudySummary) -> None:
    console = Console()
    console.print(f"study {summary.name!r} ({summary.sampler}, budget {summary.budget}): {_states(summary)}")
    hours = summary.budget.gpu_hours
    left = f" of {hours:g}, {max(0.0, hours - summary.device_hours):.4g} left" if hours is not None else ""
    console.print(f"device time: {summary.device_hours:.4g} GPU-hours spent{left}", highlight=False)
    devices = devices_line(summary.devices)
    if devices:
        console.print(devices, highlight=False, soft_wrap=True)
    if summary.stopped_early:
        saved = summary.train_time_saved_s / (summary.train_time_s + summary.train_time_saved_s)
        console.print(
            f"early stopping: {summary.stopped_early} trials stopped (pruned), "
            f"saving {summary.train_time_saved_s:.4g} s, {saved:.0%} of the training time"
        )
    if summary.artifact_store is not None:
        kept = ", ".join(map(str, sorted(summary.adapters))) or "none yet"
        size = sum(summary.adapters.values()) / 2**20
        console.print(f"adapters kept in {summary.artifact_store}: trials {kept} ({size:.1f} MiB)", highlight=False)
    for line in verification_lines(summary.verification):
        console.print(line, highlight=False, soft_wrap=True)
    shown = [*summary.objectives, *summary.measured]
    table = Table("trial", "params", *shown, title="Pareto set")
    for row in summary.pareto:
        table.add_row(
            str(row.number),
            format_params(row.params),
            *(
                format_value(row.metrics.get(m, float("nan")), m, summary.verification.verified.get(row.number))
                for m in shown
            ),
        )
    console.print(table)


def cmd_study_show(args: argparse.Namespace) -> None:
    summary = show_study(args.name, args.storage)
    if args.json:
        _print_json(summary.to_dict())
    else:
        _print_summary(summary)


def cmd_demo(args: argparse.Namespace) -> None:
    _print_summary(run_demo(args.storage, n_workers=args.workers))


def cmd_report(args: argparse.Namespace) -> None:
    written = report(
        args.name, args.storage, baseline=args.baseline, out=args.out, reference_point=args.reference_point
    )
    for kind, path in written.items():
        print(f"{kind}: {path}")


def cmd_verify(args: argparse.Namespace) -> None:
    plan = verify(args.name, args.storage, pick=args.pick, seeds=args.seeds)
    configs, seeds = ", ".join(map(str, plan.configs)), ", ".join(map(str, plan.seeds))
    before = f" ({plan.queued_before} queued or run before)" if plan.queued_before else ""
    cost = f", about {plan.device_hours:.3g} GPU-hours beyond the study's budget" if plan.queued else ""
    print(f"queued {plan.queued} re-runs of trial {configs} with seeds {seeds}{before}{cost}")
    if plan.queued:
        print(f"run them with: autotune worker {args.name}; then: autotune study show {args.name}")


def cmd_export(args: argparse.Namespace) -> None:
    entries = export(
        args.name,
        args.storage,
        pick=args.pick,
        verified=args.verified,
        out=args.out,
        fmt=args.format,
        adapters=args.adapters,
    )
    if args.out is None:
        print(format_entries(entries, args.format), end="")
    else:
        print(f"{len(entries)} trial(s) of {args.name!r} written to {args.out}", file=sys.stderr)


def cmd_dashboard(args: argparse.Namespace) -> None:
    run_dashboard(args.storage, host=args.host, port=args.port)


def cmd_grpc_proxy(args: argparse.Namespace) -> None:
    url = resolve_storage_url(args.storage)
    print(f"gRPC storage proxy on {args.host}:{args.port} for {mask_url(url)}", flush=True)
    serve_grpc_proxy(url, args.host, args.port)


def visible_gpus() -> list[str]:
    """The GPUs this process sees, named as a runner is pinned to them: with
    CUDA_VISIBLE_DEVICES set (as Slurm, a container runtime or the user sets it), its first
    torch.cuda.device_count() entries; else 0 .. device_count - 1."""
    import torch

    count = torch.cuda.device_count()
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return [str(i) for i in range(count)]
    return [entry.strip() for entry in mask.split(",")][:count]


def resolve_gpus(text: str | None, *, check: bool = True) -> list[str] | None:
    """The worker's slots from --gpus: None without it (one slot, on the device the process
    sees); `all`: every GPU it sees, or None with a note on stderr where it sees none (one
    slot, on the CPU); else the ids given, each one it sees unless `check` is off."""
    if text is None:
        return None
    names = [g.strip() for g in text.split(",") if g.strip()]
    if not names or ("all" in names and names != ["all"]):
        raise AutotuneError(f"--gpus {text!r}: give GPU ids (--gpus 0,1) or all (every GPU this process sees)")
    if names == ["all"] or check:
        visible = visible_gpus()
        mask = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={mask})" if mask is not None else ""
        seen = f"this process sees GPUs {','.join(visible)}{where}" if visible else f"this process sees no GPU{where}"
        if names == ["all"]:
            if not visible:
                print(f"autotune: --gpus all: {seen}; one slot, on the CPU", file=sys.stderr)
            return visible or None
        missing = [g for g in names if g not in visible]
        if missing:
            raise AutotuneError(f"--gpus {','.join(missing)}: no such GPU here; {seen} (--gpus all takes them all)")
    return names


def cmd_worker(args: argparse.Namespace) -> None:
    # Ids are checked where a trial trains (kind qlora); a simulated trial's slots are labels.
    named = args.gpus is not None and args.gpus.strip() != "all"
    check = named and isinstance(load_study(args.name, args.storage)[1].trial, QLoRATrial)
    gpus = resolve_gpus(args.gpus, check=check)
    result = run_worker(args.name, args.storage, n_trials=args.n_trials, timeout=args.timeout, gpus=gpus)
    why = "interrupted" if result.interrupted else "budget reached" if result.budget_reached else "worker limit reached"
    print(f"worker done ({why}): {result.completed} complete, {result.stopped} stopped early, {result.failed} failed")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autotune", description="Bayesian hyperparameter tuning of QLoRA fine-tunes.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    storage_help = "SQLAlchemy URL (default: $AUTOTUNE_STORAGE or sqlite:///autotune.db)"

    study = commands.add_parser("study", help="create, list and show studies").add_subparsers(
        dest="study_command", required=True
    )
    create = study.add_parser("create", help="validate a spec and create a study from it")
    create.add_argument("name")
    create.add_argument("--config", help="the study spec (YAML)")
    create.add_argument("--like", metavar="STUDY", help="a baseline of STUDY: its spec and its pilot trials")
    create.add_argument("--storage", help=storage_help)
    create.add_argument("--sampler", choices=SamplerName.__args__, help="override the spec's sampler")
    create.add_argument(
        "--no-early-stopping",
        action="store_true",
        help="train every trial to the end (with --sampler random: a random-search baseline)",
    )
    create.add_argument("--skip-if-exists", action="store_true", help="keep an existing study with the same spec")
    create.set_defaults(func=cmd_study_create)
    listing = study.add_parser("list", help="studies in the storage")
    listing.add_argument("--storage", help=storage_help)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_study_list)
    show = study.add_parser("show", help="trials by state and the Pareto set")
    show.add_argument("name")
    show.add_argument("--storage", help=storage_help)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_study_show)

    worker = commands.add_parser("worker", help="run trials of a study until its budget is used")
    worker.add_argument("name")
    worker.add_argument("--storage", help=storage_help)
    worker.add_argument("--n-trials", type=_positive_int, help="stop after this many trials of this worker")
    worker.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    worker.add_argument(
        "--gpus", help="comma-separated GPU ids, or all (every GPU this process sees): one trial per GPU at a time"
    )
    worker.set_defaults(func=cmd_worker)

    rep = commands.add_parser("report", help="HTML report: Pareto fronts against a baseline, hypervolume, importances")
    rep.add_argument("name")
    rep.add_argument(
        "--baseline", metavar="STUDY", help="a study with the same spec but another sampler or no early stopping"
    )
    rep.add_argument("--out", help="output folder (default: autotune-report/NAME)")
    rep.add_argument(
        "--reference-point",
        type=float,
        default=1.1,
        help="hypervolume reference point in normalised objectives (default 1.1)",
    )
    rep.add_argument("--storage", help=storage_help)
    rep.set_defaults(func=cmd_report)

    exp = commands.add_parser("export", help="the best configs, ready to train with (peft, trl, bitsandbytes kwargs)")
    exp.add_argument("name")
    exp.add_argument("--pick", default="pareto", help=f"which trials: {PICK_HELP} (default pareto)")
    exp.add_argument("--verified", action="store_true", help="only configs that autotune verify re-ran")
    exp.add_argument("--out", help="file to write (default: stdout)")
    exp.add_argument("--format", choices=("yaml", "json"), default="yaml")
    exp.add_argument(
        "--adapters", metavar="DIR", help="also write each trial's kept adapter to DIR/trial-N (peft loads it)"
    )
    exp.add_argument("--storage", help=storage_help)
    exp.set_defaults(func=cmd_export)

    ver = commands.add_parser(
        "verify", help="queue re-runs of the best configs with new seeds, to tell their advantage from noise"
    )
    ver.add_argument("name")
    ver.add_argument("--pick", default="pareto", help=f"which configs: {PICK_HELP} (default pareto)")
    ver.add_argument("--seeds", type=int, default=3, help="new training seeds per config, at least 2 (default 3)")
    ver.add_argument("--storage", help=storage_help)
    ver.set_defaults(func=cmd_verify)

    dash = commands.add_parser("dashboard", help="optuna-dashboard on the storage, with the report's figures")
    dash.add_argument("--storage", help=storage_help)
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=8080)
    dash.set_defaults(func=cmd_dashboard)

    proxy = commands.add_parser("grpc-proxy", help="serve a database to many workers (storage grpc://HOST:PORT)")
    proxy.add_argument("--storage", help=storage_help)
    proxy.add_argument("--host", default="0.0.0.0")
    proxy.add_argument("--port", type=int, default=13000)
    proxy.set_defaults(func=cmd_grpc_proxy)

    demo = commands.add_parser("demo", help="a small study of the bundled SmolLM2-135M on Python's docs, offline")
    demo.add_argument("--storage", help=storage_help)
    demo.add_argument("--workers", type=_positive_int, default=2, help="worker processes (default 2)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except _USAGE_ERRORS as exc:
        if args.debug:
            raise
        print(f"autotune: error: {exc}", file=sys.stderr)
        return 2
    except Stopped as exc:
        print(f"autotune: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:  # Ctrl-C before a command's own handler is in place
        print("autotune: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
