"""The main path, end to end with real parts: a spec, a study in SQLite or PostgreSQL,
workers running real 4-bit QLoRA trials of a tiny Llama in child processes."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import autotune
from autotune.cli import main

from conftest import small_spec, write_spec


def _create(tmp_path: Path, url: str, model: Path, data: Path, name: str = "s", **overrides: object) -> None:
    spec = write_spec(tmp_path / "study.yaml", small_spec(model, data, **overrides))
    assert main(["study", "create", name, "--config", str(spec), "--storage", url]) == 0


def _trials(url: str, name: str = "s") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def test_worker_runs_study_to_budget_with_real_qlora(tmp_path, tiny_model, dataset_file, sqlite_url, capsys):
    _create(tmp_path, sqlite_url, tiny_model, dataset_file, constraints=["peak_mem_gb <= 1000"])
    assert main(["worker", "s", "--storage", sqlite_url]) == 0

    trials = _trials(sqlite_url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for trial in trials:
        assert all(math.isfinite(v) for v in trial.values)
        assert set(trial.user_attrs["metrics"]) == set(autotune.objectives.METRICS)
        assert trial.user_attrs["quantization_config"]["bnb_4bit_quant_type"] == "nf4"
        assert trial.user_attrs["versions"]["bitsandbytes"]
        assert trial.user_attrs["config"]["hyperparameters"]["lora_r"] == trial.params["lora_r"]
        assert trial.user_attrs["data"]["n_eval"] == 4
        # Its slot's time: loading (the first), training and evaluation; on one device type,
        # the time is as measured.
        assert trial.user_attrs["device_time_s"] > trial.user_attrs["metrics"]["train_time_s"]
        assert trial.user_attrs["device_factor"] == 1.0
        assert trial.user_attrs["measured_train_time_s"] == trial.user_attrs["metrics"]["train_time_s"]
    summary = autotune.show_study("s", sqlite_url)
    assert summary.devices == {trials[0].user_attrs["device_type"]: (1.0, 4)}
    assert summary.states == {"COMPLETE": 4}
    assert 1 <= len(summary.pareto) <= 4 and all(row.feasible for row in summary.pareto)
    out = capsys.readouterr().out
    assert out.count("COMPLETE") == 4 and "budget reached" in out
    # The budget is spent: another worker does nothing.
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    assert len(_trials(sqlite_url)) == 4


@pytest.mark.slow
def test_two_worker_processes_share_the_budget(tmp_path, tiny_model, dataset_file, sqlite_url):
    _create(tmp_path, sqlite_url, tiny_model, dataset_file, budget={"n_trials": 5})
    command = [sys.executable, "-m", "autotune", "worker", "s", "--storage", sqlite_url]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs

    # Asks go one at a time through the study's lock: no trial is asked beyond the budget.
    assert [t.state for t in _trials(sqlite_url)] == [TrialState.COMPLETE] * 5
    assert all("COMPLETE" in out for out in outputs), "each worker ran trials"
    # Their device type is calibrated once: by the worker that claimed it first (the other waits).
    assert sum(out.count("calibrates cpu") for out in outputs) == 1, outputs


def test_worker_on_postgresql(tmp_path, tiny_model, dataset_file, postgres_url):
    _create(tmp_path, postgres_url, tiny_model, dataset_file, budget={"n_trials": 2})
    assert main(["worker", "s", "--storage", postgres_url]) == 0
    assert [t.state for t in _trials(postgres_url)] == [TrialState.COMPLETE] * 2


def test_an_exhausted_search_space_runs_the_copy(tmp_path, sqlite_url):
    """Two configs, a budget of four: after both ran, every proposal is a copy; five asks in a
    row are caught as duplicates and the fifth copy runs, so the budget is still used."""
    spec = {
        "trial": {"kind": "zdt1"},
        "search_space": {"lora_r": {"choices": [4, 8]}, "lora_alpha": 8, "learning_rate": 1.0e-4},
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 4},
    }
    assert (
        main(["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    assert main(["worker", "s", "--storage", sqlite_url]) == 0
    trials = _trials(sqlite_url)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert {t.params["lora_r"] for t in trials if t.state == TrialState.COMPLETE} == {4, 8}
    assert all(t.user_attrs["failure_kind"] == "duplicate" for t in trials if t.state == TrialState.FAIL)


def test_an_abandoned_ask_is_failed_and_not_counted(tmp_path, sqlite_url):
    """A worker that lost the storage between creating a trial (study.ask) and its first
    heartbeat leaves a RUNNING trial that Optuna never finds stale; the budget counted it and
    the other workers used to wait on it for ever."""
    spec = {
        "trial": {"kind": "zdt1"},
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 2},
        "worker": {"heartbeat_interval_s": 1, "grace_period_s": 2},
    }
    assert (
        main(["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    autotune.load_study("s", sqlite_url)[0].ask()  # created, never started: no heartbeat, no worker
    worker = subprocess.run(
        [sys.executable, "-m", "autotune", "worker", "s", "--storage", sqlite_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr
    abandoned, *rest = _trials(sqlite_url)
    assert abandoned.state == TrialState.FAIL and abandoned.user_attrs["failure_kind"] == "abandoned"
    assert [t.state for t in rest] == [TrialState.COMPLETE] * 2
