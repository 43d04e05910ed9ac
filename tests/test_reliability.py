"""Many workers, dead workers, signals, time limits, failing configs, other storages:
real worker processes on real databases, bounded in time (benchmarks/load.py)."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

import autotune
from autotune.cli import main

from conftest import small_spec, write_spec

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from load import run_load  # noqa: E402


def _check(row: dict, n_trials: int) -> None:
    outputs = "\n".join(row.pop("outputs"))
    assert not row["timed_out"], outputs[-3000:]
    assert (row["complete"], row["lost"], row["duplicated"], row["errors"]) == (n_trials, 0, 0, 0), (
        row,
        outputs[-3000:],
    )


# 15 trials a worker and more, all asking through one lock (benchmarks/load.py runs 400).
@pytest.mark.slow
def test_8_workers_on_one_sqlite_study(tmp_path):
    _check(run_load(f"sqlite:///{tmp_path}/load.db", 8, 240), 240)


@pytest.mark.slow
def test_16_workers_on_one_postgresql_study(postgres_url):
    _check(run_load(postgres_url, 16, 240), 240)


def test_sigkilled_workers_trials_fail_and_rerun(tmp_path):
    row = run_load(f"sqlite:///{tmp_path}/load.db", 4, 40, delay_s=1.0, kills=5)
    assert row["kills"] == 5 and row["killed_failed"] == 5
    assert row["killed_rerun"] + row["killed_twice"] == 5
    _check(row, 40)


@pytest.mark.serial
def test_workers_outlive_a_postgresql_restart(postgres_url):
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0 or not Path("/etc/postgresql").is_dir():
        pytest.skip("restarting PostgreSQL needs pg_ctlcluster and root")
    row = run_load(postgres_url, 4, 60, delay_s=0.5, restart_postgres=True)
    assert row["postgres_restarted"]
    _check(row, 60)


def _synthetic(tmp_path: Path, url: str, name: str = "z", **trial: object) -> None:
    spec = {"trial": {"kind": "zdt1", **trial}, "sampler": {"name": "random"}, "budget": {"n_trials": 3}}
    assert (
        main(["study", "create", name, "--config", str(write_spec(tmp_path / "z.yaml", spec)), "--storage", url]) == 0
    )


def _wait_running(url: str, name: str = "z") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if optuna.load_study(study_name=name, storage=url).get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            return
        time.sleep(0.2)
    raise AssertionError("no trial started")


def _worker_process(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "autotune", "worker", "z", "--storage", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigterm_fails_the_running_trial_and_exits_0(tmp_path, sqlite_url):
    _synthetic(tmp_path, sqlite_url, delay_s=60)
    worker = _worker_process(sqlite_url)
    _wait_running(sqlite_url)
    worker.send_signal(signal.SIGTERM)
    out = worker.communicate(timeout=30)[0]
    assert worker.returncode == 0, out
    assert "SIGTERM: stopping" in out and "interrupted" in out
    (trial,) = optuna.load_study(study_name="z", storage=sqlite_url).get_trials()
    assert trial.state.name == "FAIL" and trial.user_attrs["failure_kind"] == "interrupted"


def test_second_signal_exits_at_once(tmp_path, sqlite_url):
    """The README's promise: a second signal exits at once, with 128 + its number, even while
    the first one's clean stop waits on the database."""
    _synthetic(tmp_path, sqlite_url, delay_s=60)
    worker = _worker_process(sqlite_url)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in worker.stdout], daemon=True).start()
    _wait_running(sqlite_url)
    # Hold the database: telling the interrupted trial, the first signal's clean stop, waits on it.
    holder = sqlite3.connect(
        sqlite_url.removeprefix("sqlite:///"), timeout=30, isolation_level=None
    )  # after its writes
    holder.execute("BEGIN EXCLUSIVE")
    worker.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 30
    while "SIGINT: stopping" not in (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))):
        pass
    assert "again to exit now" in line
    time.sleep(1.0)
    assert worker.poll() is None, "the first signal's stop waits on the held database"
    sent = time.monotonic()
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=10) == 128 + signal.SIGINT
    assert time.monotonic() - sent < 5
    holder.execute("ROLLBACK")
    holder.close()


def test_trial_time_limit(tmp_path, sqlite_url):
    _synthetic(tmp_path, sqlite_url, delay_s=5, timeout_s=0.5)
    assert main(["worker", "z", "--storage", sqlite_url, "--n-trials", "1"]) == 0
    (trial,) = optuna.load_study(study_name="z", storage=sqlite_url).get_trials()
    assert (
        trial.state.name == "FAIL"
        and trial.user_attrs["failure_reason"] == "timed out: over the trial time limit of 0.5 s"
    )
    assert trial.user_attrs["failure_kind"] == "config"


def test_failing_config_is_told_as_infeasible_and_counted_once(tmp_path, tiny_model, dataset_file, sqlite_url):
    spec = small_spec(tiny_model, dataset_file, budget={"n_trials": 2})
    spec["search_space"]["target_modules"] = {"choices": ["all-linear", ["no_such_module"]]}
    spec["enqueue_trials"] = [{"target_modules": "all-linear"}, {"target_modules": ["no_such_module"]}]
    assert (
        main(["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    ok, bad = optuna.load_study(study_name="s", storage=sqlite_url).get_trials()
    assert ok.state.name == "COMPLETE" and ok.constraints == {"config_failed": 0.0}
    assert bad.state.name == "COMPLETE" and bad.constraints == {"config_failed": 1.0}
    assert "no_such_module" in bad.user_attrs["failure_reason"] and bad.user_attrs["failure_kind"] == "config"
    assert bad.values == ok.values  # the worst values seen: the sampler learns to keep away
    summary = autotune.show_study("s", sqlite_url)
    assert [row.number for row in summary.pareto] == [0]
    info, _ = autotune.build_report("s", sqlite_url)
    assert [p.number for p in info.study.trials] == [0] and sum(info.study.failures.values()) == 1


def test_journal_file_storage(tmp_path):
    url = f"journal://{tmp_path}/studies.log"
    _synthetic(tmp_path, url)
    assert main(["worker", "z", "--storage", url]) == 0
    assert autotune.show_study("z", url).states == {"COMPLETE": 3}


def test_credentials_never_appear(tmp_path, postgres_url):
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url).set(password="hunter2-secret").render_as_string(hide_password=False)
    _synthetic(tmp_path, url)
    done = subprocess.run(
        [sys.executable, "-m", "autotune", "worker", "z", "--storage", url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "hunter2" not in done.stdout + done.stderr
    dashboard = subprocess.Popen(
        [sys.executable, "-m", "autotune", "dashboard", "--storage", url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = dashboard.stdout.readline()
    dashboard.terminate()
    dashboard.wait(timeout=10)
    assert "optuna-dashboard on" in first and "***" in first and "hunter2" not in first
    bad = url.replace("127.0.0.1", "127.0.0.1:1") if ":5432" not in url else url.replace(":5432", ":1")
    failed = subprocess.run(
        [sys.executable, "-m", "autotune", "study", "list", "--storage", bad], capture_output=True, text=True
    )
    assert failed.returncode == 2 and "hunter2" not in failed.stderr and "***" in failed.stderr
