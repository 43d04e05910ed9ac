"""Mixed device types in one study (autotune._devices), with real QLoRA on two "devices" of
this CPU: workers with 1 and with 2 threads (device types `cpu (..., 1 threads)` and `cpu
(..., 2 threads)`). What is checked here is what the worker records and shows; how close the
scaled times of the same configs come is measured by benchmarks/mixed_devices.py (timings on
a shared 2-core machine vary by ~10% a run: figures for a quiet machine, not a test's bar)."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

import optuna
import pytest

from autotune._devices import UNDER_WAY_ATTR, _claim
from autotune.cli import main
from autotune.storage import AskLock

from conftest import alpaca_rows, write_jsonl

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _benchmark() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # its own imports (machine)
    spec = importlib.util.spec_from_file_location("mixed_devices", BENCHMARKS / "mixed_devices.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_device_types_calibrate_once_and_times_are_scaled_to_the_first(tmp_path, tiny_model, capsys):
    """benchmarks/mixed_devices.py's run on the tiny model: a config on 1 thread, trained
    again twice on 2 threads."""
    data = write_jsonl(tmp_path / "data.jsonl", alpaca_rows(40))
    benchmark = _benchmark()
    result = benchmark.run(str(tiny_model), {"path": str(data), "max_length": 64}, benchmark.CONFIGS[:1], 2, tmp_path)

    url = f"sqlite:///{tmp_path / 'study.db'}"
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    calibration = result["calibration"]
    one, two = calibration["reference"], trials[-1].user_attrs["device_type"]
    assert one.endswith("1 threads)") and two.endswith("2 threads)")
    assert set(calibration["seconds"]) == {one, two}
    # The study's first trial's hyperparameters, trained as long as a trial on each.
    assert {k: calibration["hyperparameters"][k] for k in benchmark.CONFIGS[0]} == benchmark.CONFIGS[0]
    factor = calibration["seconds"][one] / calibration["seconds"][two]
    for t in trials:
        record = t.user_attrs
        on_reference = "verifies" not in record
        assert record["device_type"] == (one if on_reference else two)
        assert record["device_factor"] == (1.0 if on_reference else pytest.approx(factor))
        # The objective in the reference's seconds, the time measured kept beside it.
        assert record["metrics"]["train_time_s"] == pytest.approx(
            record["measured_train_time_s"] * record["device_factor"]
        )
        assert t.values[1] == record["metrics"]["train_time_s"]
    capsys.readouterr()
    assert main(["study", "show", "s", "--storage", url]) == 0
    line = f"devices: {one} x1 (1 trial), {two} x{factor:.3g} (2 trials); train_time_s in seconds of {one}"
    assert line in capsys.readouterr().out


@pytest.mark.slow
def test_one_slot_per_device_type_calibrates_and_a_lapsed_claim_is_taken_over(tmp_path):
    """The first trial to claim a device type's calibration runs it; another trial's slot
    waits while that trial runs, and takes the claim over once it has failed."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    lock = AskLock(url, "s")
    first, second = study.ask(), study.ask()
    assert _claim(study, lock, "A100", first.number)
    assert _claim(study, lock, "A100", first.number)  # its own claim, asked again
    assert not _claim(study, lock, "A100", second.number)
    assert _claim(study, lock, "RTX 4090", second.number)  # another device type: its own calibration
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    assert _claim(study, lock, "A100", second.number)
    assert study.user_attrs[UNDER_WAY_ATTR] == {"A100": second.number, "RTX 4090": second.number}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_ask_lock_keeps_out_the_other_threads_of_one_worker(tmp_path, kind, request):
    """A worker's asking thread and its slot threads (claiming a calibration) share one ask
    lock: while one thread holds it, another thread's acquire waits."""
    url = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else request.getfixturevalue("postgres_url")
    lock = AskLock(url, f"threads-{kind}")
    lock.acquire()
    second = threading.Thread(target=lambda: (lock.acquire(), lock.release()))
    second.start()
    second.join(0.5)
    assert second.is_alive(), "the second thread got the lock the first holds"
    lock.release()
    second.join(10)
    assert not second.is_alive()
    lock.close()
