"""Load and fault checks with real worker processes on a real database, bounded in time.

    python benchmarks/load.py --out load.json [--postgres postgresql://...]

Each scenario creates a study of the fast built-in objective (ZDT1), runs worker processes
(`autotune worker`) to its budget, optionally SIGKILLs workers mid-trial (and starts
replacements) or restarts PostgreSQL, then reads the study back and counts: trials
complete, lost (left RUNNING or WAITING), duplicated (complete beyond the budget), worker
errors (a non-zero exit or a traceback), killed trials failed and re-run. Prints a table
and writes JSON."""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import yaml

from autotune.storage import open_storage, read_record

HEARTBEAT_S, GRACE_S = 1, 3


def _spec(n_trials: int, delay_s: float) -> dict[str, Any]:
    return {
        "trial": {"kind": "zdt1", "delay_s": delay_s},
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": n_trials},
        "worker": {"heartbeat_interval_s": HEARTBEAT_S, "grace_period_s": GRACE_S},
    }


def _worker(name: str, url: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "autotune", "worker", name, "--storage", url]
    return subprocess.Popen(
        command, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ, COLUMNS="200")
    )


def _running_trials_of(study: optuna.Study, pid: int) -> list[int]:
    return [
        t.number
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if (read_record(t).worker or "").endswith(f":{pid}")
    ]


def run_load(
    url: str,
    n_workers: int,
    n_trials: int,
    *,
    delay_s: float = 0.0,
    kills: int = 0,
    restart_postgres: bool = False,
    time_limit_s: float = 600.0,
) -> dict[str, Any]:
    """Run one scenario; returns its row of counts."""
    name = f"load-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(yaml.safe_dump(_spec(n_trials, delay_s)))
        subprocess.run(
            [sys.executable, "-m", "autotune", "study", "create", name, "--config", str(spec), "--storage", url],
            check=True,
            capture_output=True,
        )
        study = optuna.load_study(study_name=name, storage=open_storage(url))  # pre-pinged: outlives a restart
        logs = Path(tmp)
        started = time.monotonic()
        workers = [_worker(name, url, logs / f"w{i}.log") for i in range(n_workers)]
        killed: list[tuple[int, float]] = []  # (trial number, time of the kill)
        rng = random.Random(0)
        restarted = False
        while any(w.poll() is None for w in workers) and time.monotonic() - started < time_limit_s:
            time.sleep(0.5)
            try:
                finished = sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished())
            except optuna.exceptions.StorageInternalError:  # the server is restarting
                continue
            if len(killed) < kills and finished >= (len(killed) + 1) * n_trials // (kills + 2):
                live = [w for w in workers if w.poll() is None]
                for victim in rng.sample(live, len(live)):
                    running = _running_trials_of(study, victim.pid)
                    if running:
                        victim.send_signal(signal.SIGKILL)
                        victim.wait()
                        # Read again: a trial told between the read and the kill was not killed.
                        killed += [(n, time.monotonic()) for n in _running_trials_of(study, victim.pid)]
                        workers.append(_worker(name, url, logs / f"w{len(workers)}.log"))
                        break
            if restart_postgres and not restarted and finished >= n_trials // 3:
                version = os.listdir("/etc/postgresql")[0]
                subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)
                restarted = True
        timed_out = any(w.poll() is None for w in workers)
        for w in workers:
            if w.poll() is None:
                w.kill()
        wall_s = time.monotonic() - started
        outputs = [p.read_text(errors="replace") for p in sorted(logs.glob("w*.log"))]
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    states = [t.state.name for t in trials]
    complete = sum(1 for t in trials if t.state.name == "COMPLETE")
    # A killed trial's config was re-run when a later trial's retry history names it.
    rerun = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    by_number = {t.number: t for t in trials}
    killed_failed = sum(1 for n, _ in killed if by_number[n].state.name == "FAIL")
    killed_rerun = sum(1 for n, _ in killed if n in rerun)
    # A config is re-run once (max_retry=1): a re-run killed again is not queued a third time.
    killed_twice = sum(1 for n, _ in killed if "failed_trial" in by_number[n].system_attrs and n not in rerun)
    exit_errors = sum(1 for w in workers if w.returncode not in (0, -signal.SIGKILL))
    return {
        "storage": url.split(":", 1)[0].split("+")[0],
        "workers": n_workers,
        "trials": n_trials,
        "complete": complete,
        "lost": states.count("RUNNING") + states.count("WAITING"),
        "duplicated": max(0, complete - n_trials),
        "errors": exit_errors + sum(out.count("Traceback") for out in outputs),
        "kills": len(killed),
        "killed_failed": killed_failed,
        "killed_rerun": killed_rerun,
        "killed_twice": killed_twice,
        "postgres_restarted": restarted,
        "timed_out": timed_out,
        "wall_s": round(wall_s, 1),
        "retry_notes": sum(out.count("retrying in") for out in outputs),
        "outputs": outputs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("AUTOTUNE_TEST_POSTGRES_URL"),
        help="a PostgreSQL URL (a database the run may fill)",
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{tmp}/load.db"
        rows.append(run_load(sqlite, 8, 400))
        rows.append(run_load(sqlite, 4, 40, delay_s=1.0, kills=5))
        if args.postgres:
            rows.append(run_load(args.postgres, 16, 400))
            rows.append(run_load(args.postgres, 4, 60, delay_s=0.5, restart_postgres=True))
    columns = [
        "storage",
        "workers",
        "trials",
        "complete",
        "lost",
        "duplicated",
        "errors",
        "kills",
        "killed_failed",
        "killed_rerun",
        "killed_twice",
        "postgres_restarted",
        "wall_s",
    ]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    args.out.write_text(json.dumps([{k: v for k, v in r.items() if k != "outputs"} for r in rows], indent=1))


if __name__ == "__main__":
    main()
