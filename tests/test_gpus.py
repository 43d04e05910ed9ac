"""`autotune worker --gpus`: `all` takes every GPU the process sees (honouring
CUDA_VISIBLE_DEVICES), or one CPU slot with a note where it sees none; an id that is not
there is one line and exit 2. No GPU here: the counts are torch's, patched where a test
needs GPUs, and real (none) in the CLI tests."""

from __future__ import annotations

import optuna
import pytest
import torch

from autotune import AutotuneError
from autotune.cli import main, resolve_gpus

from conftest import small_spec, write_spec


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_all_is_every_gpu_the_process_sees_named_as_cuda_visible_devices_names_them(two_gpus, monkeypatch):
    assert resolve_gpus("all") == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # as Slurm sets it without device cgroups
    assert resolve_gpus("all") == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a1, GPU-b2,GPU-c3")  # CUDA stops at the first it cannot open
    assert resolve_gpus(" all ") == ["GPU-a1", "GPU-b2"]


def test_ids_are_the_ones_the_process_sees(two_gpus, monkeypatch):
    assert resolve_gpus("1,0") == ["1", "0"]
    assert resolve_gpus(None) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert resolve_gpus("3") == ["3"]
    with pytest.raises(AutotuneError, match=r"^--gpus 0: no such GPU here; this process sees GPUs 2,3 \(CUDA_VISIBLE"):
        resolve_gpus("0,3")
    assert resolve_gpus("0,7", check=False) == ["0", "7"]  # a simulated trial's slots are labels


@pytest.mark.parametrize("text", ["", ",", "all,0"])
def test_gpus_that_name_nothing_or_mix_all_with_ids(text):
    with pytest.raises(AutotuneError, match="give GPU ids"):
        resolve_gpus(text)


def test_all_without_a_gpu_is_one_cpu_slot_with_a_note(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_gpus("all") is None
    err = capsys.readouterr().err
    assert err == "autotune: --gpus all: this process sees no GPU (CUDA_VISIBLE_DEVICES=); one slot, on the CPU\n"


def _no_gpu_here(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if torch.cuda.device_count():
        pytest.skip("this machine has a GPU: the test is for one without")


def test_worker_gpus_all_without_a_gpu_runs_its_trials_on_one_cpu_slot(tmp_path, sqlite_url, capsys, monkeypatch):
    _no_gpu_here(monkeypatch)
    spec = {"trial": {"kind": "zdt1"}, "sampler": {"name": "random"}, "budget": {"n_trials": 2}}
    assert (
        main(["study", "create", "z", "--config", str(write_spec(tmp_path / "z.yaml", spec)), "--storage", sqlite_url])
        == 0
    )
    assert main(["worker", "z", "--storage", sqlite_url, "--gpus", "all"]) == 0
    assert "--gpus all: this process sees no GPU; one slot, on the CPU" in capsys.readouterr().err
    trials = optuna.load_study(study_name="z", storage=sqlite_url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]


def test_worker_on_a_gpu_that_is_not_there_is_one_line_and_exit_2(
    tmp_path, sqlite_url, tiny_model, dataset_file, capsys, monkeypatch
):
    """A QLoRA study: a GPU id this machine lacks would train on the CPU unseen; refused."""
    _no_gpu_here(monkeypatch)
    spec = write_spec(tmp_path / "q.yaml", small_spec(tiny_model, dataset_file))
    assert main(["study", "create", "q", "--config", str(spec), "--storage", sqlite_url]) == 0
    capsys.readouterr()
    assert main(["worker", "q", "--storage", sqlite_url, "--gpus", "0"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("autotune: error: --gpus 0: no such GPU here; this process sees no GPU") and err.count("\n") == 1
    )
    assert optuna.load_study(study_name="q", storage=sqlite_url).get_trials() == []
