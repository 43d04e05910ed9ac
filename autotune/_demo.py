"""`autotune demo`: the main job on a fresh machine, offline: a small study of the bundled
SmolLM2-135M on the Python reference topics, two workers, then the Pareto set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ._errors import Stopped
from ._spec import load_spec
from ._study import StudySummary, create_study, summarize
from .storage import budget_used, resolve_storage_url

DEMO_SPEC = Path(__file__).with_name("demo.yaml")
DEMO_STUDY = "demo"


def _relay(stream: object, prefix: str, console: Console) -> None:
    for line in stream:  # type: ignore[attr-defined]
        console.print(Text.assemble((prefix, "dim"), " ", line.rstrip()), highlight=False, soft_wrap=True)


@contextmanager
def _pass_signals_to(workers: list[subprocess.Popen[str]]) -> Iterator[list[int]]:
    """SIGINT and SIGTERM to the demo go on to its workers (in their own sessions, so that
    a terminal's Ctrl-C reaches them once, through here), as SIGTERM: a worker treats both
    alike, and one still starting up ends quietly on it; the signals received are listed."""
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_demo(storage: str | None = None, *, n_workers: int = 2, console: Console | None = None) -> StudySummary:
    """Create (or resume) the demo study, run `n_workers` worker processes to its budget,
    and return its summary. A SIGINT or SIGTERM stops the workers, which fail their running
    trials cleanly, and raises Stopped.

    Example:
        >>> autotune.run_demo()  # doctest: +SKIP
    """
    console = console or Console()
    url = resolve_storage_url(storage)
    spec = load_spec(DEMO_SPEC)
    study = create_study(DEMO_STUDY, spec, url, skip_if_exists=True)
    n_trials = spec.budget.n_trials
    assert n_trials is not None  # the demo's budget is a number of trials
    console.print(f"demo study {DEMO_STUDY!r} in {url}: {n_trials} trials, {n_workers} workers, spec {DEMO_SPEC}")
    # Share the cores: trials running side by side on a CPU would fight over them.
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "autotune", "worker", DEMO_STUDY, "--storage", url]
    workers: list[subprocess.Popen[str]] = []
    with _pass_signals_to(workers) as received:
        for _ in range(n_workers):
            workers.append(
                subprocess.Popen(
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                    start_new_session=True,
                )
            )
        relays = [
            threading.Thread(target=_relay, args=(w.stdout, f"[worker {i}]", console), daemon=True)
            for i, w in enumerate(workers)
        ]
        for relay in relays:
            relay.start()
        columns = (TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("demo", total=n_trials)
            while any(w.poll() is None for w in workers):
                finished = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
                progress.update(task, completed=min(finished, n_trials))
                time.sleep(1.0)
        for relay in relays:
            relay.join()
    if received:
        raise Stopped(
            received[0],
            f"demo stopped: {budget_used(study.get_trials(deepcopy=False))} of {n_trials} trials used; run it again to go on",
        )
    console.print(f"demo: {budget_used(study.get_trials(deepcopy=False))} of {n_trials} trials used")
    return summarize(study, spec)
