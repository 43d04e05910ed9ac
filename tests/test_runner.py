"""Warm trial runners: the same results as a fresh process, no state carried from one trial
to the next, and isolation: a killed runner fails its own trial only."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
import threading
import time

import optuna
import psutil
import pytest
from rich.console import Console

import autotune
from autotune._progress import WorkerProgress
from autotune._runner import Runner, TrialFailed
from autotune._tell import Teller
from autotune.cli import main
from autotune.objectives import DatasetSpec, TrialConfig, synthetic_metrics
from autotune.storage import Retry, budget_used, is_transient

from conftest import small_spec, trial_config, write_jsonl, write_spec


def _config(model, data, r: int = 4, lr: float = 1e-2, seed: int = 42) -> TrialConfig:
    return trial_config(model, data, {"max_steps": 3, "seed": seed}, lora_r=r, learning_rate=lr, lora_dropout=0.1)


def _measured(result: dict) -> tuple[float, float]:
    return result["metrics"]["eval_loss"], result["metrics"]["train_loss"]


@pytest.mark.slow
def test_warm_runner_gives_what_fresh_processes_give(tiny_model, dataset_file):
    """Each trial reseeds everything and trains a fresh adapter with a fresh optimizer on the
    same base, so a warm runner's results equal a fresh process's. CPU kernels are
    deterministic at a fixed thread count; the tolerance only absorbs float32 summation order."""
    first, second = _config(tiny_model, dataset_file), _config(tiny_model, dataset_file, r=8, lr=3e-3, seed=7)
    stop = threading.Event()
    cold = Runner(None, trials_per_runner=1)
    alone = [_measured(cold.run(c, stop=stop)) for c in (first, second)]
    cold.close()
    warm = Runner(None, trials_per_runner=10)
    in_a_row = [_measured(warm.run(c, stop=stop)) for c in (first, second, first)]
    warm.close()
    assert in_a_row[0] == pytest.approx(alone[0], abs=1e-5)
    assert in_a_row[1] == pytest.approx(alone[1], abs=1e-5), "the first trial left state behind"
    assert in_a_row[2] == pytest.approx(alone[0], abs=1e-5)
    assert alone[0] != pytest.approx(alone[1], abs=1e-3), "the two configs must differ for this to test anything"


@pytest.mark.slow
def test_warm_runner_is_one_process_and_is_recycled(tiny_model, dataset_file):
    stop = threading.Event()
    runner = Runner(None, trials_per_runner=2)
    pids, loaded = [], []
    for _ in range(3):
        result = runner.run(_config(tiny_model, dataset_file), stop=stop)
        pids.append(runner._process.pid)
        loaded.append("load_base_s" in result["info"]["timings"])
    other_data = write_jsonl(dataset_file.parent / "other.jsonl", [{"text": f"{i} plus {i}"} for i in range(30)])
    runner.run(_config(tiny_model, other_data), stop=stop)  # another base: a fresh runner
    pids.append(runner._process.pid)
    runner.close()
    assert pids[0] == pids[1] != pids[2] != pids[3]
    assert loaded == [True, False, True], "the model is loaded once per runner"


def test_runner_answers_an_input_error_in_its_structured_form(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "long.jsonl", [{"text": "very long " * 80}] * 6)
    config = _config(tiny_model, data).model_copy(
        update={"dataset": DatasetSpec(path=str(data), max_length=16, too_long="drop")}
    )
    runner = Runner(None, trials_per_runner=5)
    with pytest.raises(TrialFailed) as failed:
        runner.run(config, stop=threading.Event())
    runner.close()
    assert failed.value.kind == "input" and "raise dataset.max_length" in failed.value.reason


def test_input_error_in_a_trial_stops_the_worker_without_spending_budget(tmp_path, tiny_model, sqlite_url, capsys):
    data = write_jsonl(tmp_path / "long.jsonl", [{"text": "very long " * 80}] * 6)
    spec = small_spec(tiny_model, data)
    spec["dataset"].update(max_length=16, too_long="drop")  # found out only once trl has tokenized it
    assert (
        main(["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    capsys.readouterr()
    assert main(["worker", "s", "--storage", sqlite_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "raise dataset.max_length or set dataset.too_long: truncate" in err[0]
    (trial,) = optuna.load_study(study_name="s", storage=sqlite_url).get_trials()
    assert trial.state.name == "FAIL" and trial.user_attrs["failure_kind"] == "input"
    assert budget_used(optuna.load_study(study_name="s", storage=sqlite_url).get_trials()) == 0


def test_worker_checks_the_dataset_before_its_first_trial(tmp_path, tiny_model, dataset_file, sqlite_url, capsys):
    spec = write_spec(tmp_path / "s.yaml", small_spec(tiny_model, dataset_file))
    assert main(["study", "create", "s", "--config", str(spec), "--storage", sqlite_url]) == 0
    dataset_file.unlink()  # a worker's machine that lacks the data
    capsys.readouterr()
    assert main(["worker", "s", "--storage", sqlite_url]) == 2
    assert "does not exist; fix dataset.path" in capsys.readouterr().err
    assert optuna.load_study(study_name="s", storage=sqlite_url).trials == []


def _runner_child() -> psutil.Process | None:
    for child in psutil.Process().children(recursive=True):
        if "--serve" in child.cmdline():
            return child
    return None


def test_killed_runner_fails_its_trial_only_and_a_fresh_one_runs_the_next(
    tmp_path, tiny_model, dataset_file, sqlite_url
):
    spec = write_spec(tmp_path / "s.yaml", small_spec(tiny_model, dataset_file, budget={"n_trials": 2}))
    assert main(["study", "create", "s", "--config", str(spec), "--storage", sqlite_url]) == 0
    results: list[autotune.WorkerResult] = []
    worker = threading.Thread(target=lambda: results.append(autotune.run_worker("s", sqlite_url)))
    worker.start()
    deadline = time.monotonic() + 60
    while (child := _runner_child()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert child is not None, "no runner started"
    time.sleep(2)
    child.kill()
    worker.join(timeout=180)

    first, second = optuna.load_study(study_name="s", storage=sqlite_url).get_trials()
    assert first.state.name == "FAIL" and "killed by SIGKILL" in first.user_attrs["failure_reason"]
    assert second.state.name == "COMPLETE"
    assert results[0].completed == 1 and results[0].failed == 1


def _gp_zdt1_study(tmp_path, url: str, delay_s: float, n_startup_trials: int, n_trials: int) -> None:
    spec = {
        "trial": {"kind": "zdt1", "delay_s": delay_s},
        "sampler": {"name": "gp", "n_startup_trials": n_startup_trials},
        "budget": {"n_trials": n_trials},
    }
    assert main(["study", "create", "z", "--config", str(write_spec(tmp_path / "z.yaml", spec)), "--storage", url]) == 0


@pytest.mark.slow
def test_four_worker_processes_never_run_one_config_twice(tmp_path, sqlite_url):
    """Asks are serialised through the storage: each sees the others' trials in flight."""
    _gp_zdt1_study(tmp_path, sqlite_url, delay_s=0.3, n_startup_trials=4, n_trials=16)
    command = [sys.executable, "-m", "autotune", "worker", "z", "--storage", sqlite_url]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, outputs
    trials = optuna.load_study(study_name="z", storage=sqlite_url).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 16 and len({tuple(sorted(t.params.items())) for t in complete}) == 16
    # gp may propose a point already run (ZDT1's front lies on the bounds): such an ask is
    # caught, recorded as a duplicate that never trained, and asked again.
    assert all(t.user_attrs["failure_kind"] == "duplicate" for t in trials if t.state.name != "COMPLETE")
    assert all("COMPLETE" in out for out in outputs), "each worker ran trials"


def test_one_worker_runs_a_trial_per_gpu_slot(tmp_path, sqlite_url):
    _gp_zdt1_study(tmp_path, sqlite_url, delay_s=1.0, n_startup_trials=2, n_trials=6)
    assert main(["worker", "z", "--storage", sqlite_url, "--gpus", "0,1"]) == 0
    every = optuna.load_study(study_name="z", storage=sqlite_url).get_trials()
    trials = [t for t in every if t.state.name == "COMPLETE"]
    assert len(trials) == 6 and len({tuple(sorted(t.params.items())) for t in trials}) == 6
    # As above: a gp proposal of a point already run is caught, recorded and asked again.
    assert all(t.user_attrs["failure_kind"] == "duplicate" for t in every if t.state.name != "COMPLETE")
    overlaps = sum(1 for a, b in zip(trials, trials[1:], strict=False) if b.datetime_start < a.datetime_complete)
    assert overlaps >= 2, "two slots run side by side"
    seeds = {t.user_attrs["sampler_seed"] for t in trials}
    assert len(seeds) == 1 and None not in seeds, "the seed of the sampler that proposed them all"


def _locked_sqlite(path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_only_transient_storage_errors_count_as_transient(tmp_path):
    import sqlalchemy

    locked = tmp_path / "locked.db"
    sqlite3.connect(locked).execute("CREATE TABLE t (x)")
    holder = _locked_sqlite(locked)
    engine = sqlalchemy.create_engine(f"sqlite:///{locked}", connect_args={"timeout": 0})
    with pytest.raises(sqlalchemy.exc.OperationalError) as busy, engine.begin() as connection:
        connection.execute(sqlalchemy.text("INSERT INTO t VALUES (1)"))
    holder.close()
    missing = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with pytest.raises(sqlalchemy.exc.OperationalError) as unopenable, missing.connect():
        pass
    assert is_transient(busy.value), "a locked file frees up: wait and retry"
    assert not is_transient(unopenable.value), "a file that cannot be opened stays so: say so"


def test_a_tell_is_retried_until_it_lands(tmp_path):
    path = tmp_path / "studies.db"
    url = f"sqlite:///{path}"
    spec = autotune.parse_spec({"trial": {"kind": "zdt1"}, "budget": {"n_trials": 2}})
    autotune.create_study("z", spec, url)
    # Worker storage that fails at once on a busy file, instead of waiting inside SQLite.
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 0}})
    study = optuna.load_study(study_name="z", storage=storage)
    out = io.StringIO()
    progress = WorkerProgress(Console(file=out), spec.metric_names)
    teller = Teller(study, spec, Retry(url, progress.note), progress)
    trial = study.ask()
    hyperparameters = spec.search_space.suggest(trial)
    result = {"metrics": synthetic_metrics("zdt1", spec.search_space.unit_point(trial.params)), "info": {}}
    holder = _locked_sqlite(path)  # the database is busy as the trial finishes
    threading.Timer(2.5, holder.close).start()
    teller.result(trial, result)

    (told,) = optuna.load_study(study_name="z", storage=url).get_trials()
    assert told.state.name == "COMPLETE" and told.user_attrs["metrics"] == result["metrics"]
    assert told.params == trial.params and hyperparameters.lora_r == told.params["lora_r"]
    assert "database is locked; retrying in 1 s (1)" in out.getvalue()
