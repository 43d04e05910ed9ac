"""What a trial trained is kept (spec `artifacts`): adapters in an Optuna artifact store,
the front's kept and the rest removed, exported as folders peft loads, and what the user
loads is what was measured."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from autotune.cli import main

from conftest import alpaca_rows, small_spec, write_jsonl, write_spec

# A fresh process loads the base as the runner does, puts the exported adapter on it with
# peft, and measures the held-out loss as the trial did.
EVALUATE = """
import json, sys, tempfile
from peft import PeftModel
from trl import SFTConfig, SFTTrainer
from autotune.objectives import TrialConfig, load_base, sft_kwargs
config = TrialConfig.model_validate_json(sys.argv[1])
base = load_base(config)
config = config.model_copy(update={"training": config.training.model_copy(update={"compute_dtype": base.compute_dtype})})
model = PeftModel.from_pretrained(base.model, sys.argv[2], autocast_adapter_dtype=False)
with tempfile.TemporaryDirectory() as out:
    args = SFTConfig(**sft_kwargs(config, out, use_cpu=True))
    data = base.data
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, processing_class=base.tokenizer)
    print(json.dumps(trainer.evaluate()["eval_loss"]))
"""


def _study(tmp_path: Path, url: str, model: Path, data: Path, keep: str = "front", n_trials: int = 3) -> None:
    spec = small_spec(model, data, budget={"n_trials": n_trials}, artifacts={"store": "artifacts", "keep": keep})
    # float32: in bfloat16 (this CPU has AVX512_BF16) a fresh process measured 5.5e-4 from the trial
    spec["training"]["compute_dtype"] = "float32"
    create = ["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", url]
    assert main(create) == 0


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[Path, str]:
    """A study that keeps every adapter (its folder, its storage URL), its trials run."""
    folder = tmp_path_factory.mktemp("kept")
    url = f"sqlite:///{folder / 'studies.db'}"
    _study(folder, url, tiny_model, write_jsonl(folder / "data.jsonl", alpaca_rows()), keep="all", n_trials=2)
    assert main(["worker", "s", "--storage", url]) == 0
    return folder, url


def test_the_exported_adapter_gives_the_held_out_loss_the_trial_measured(kept, tmp_path):
    _, sqlite_url = kept
    out, adapters = tmp_path / "best.yaml", tmp_path / "adapters"
    assert (
        main(["export", "s", "--pick", "knee", "--adapters", str(adapters), "--out", str(out), "--storage", sqlite_url])
        == 0
    )
    (entry,) = yaml.safe_load(out.read_text())
    folder = Path(entry["adapter"])
    assert folder == adapters / f"trial-{entry['trial']}"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in folder.iterdir()}
    assert "&id" not in out.read_text(), "plain YAML: no anchors where the model and data repeat"

    trial = optuna.load_study(study_name="s", storage=sqlite_url).trials[entry["trial"]]
    config = json.dumps(trial.user_attrs["config"])
    loaded = subprocess.run([sys.executable, "-c", EVALUATE, config, str(folder)], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    # Fresh processes agree to the last bit, with peft's loader as with the runner's own
    # trainer; the training process's evaluation was seen 1.2e-4 from them (float32, loss 5.9).
    assert abs(json.loads(loaded.stdout.strip().splitlines()[-1]) - trial.user_attrs["metrics"]["eval_loss"]) < 3e-4


@pytest.mark.slow
def test_keep_front_keeps_exactly_the_fronts_adapters(tmp_path, tiny_model, dataset_file, sqlite_url, capsys):
    """Two workers at once: at the end, the front's trials have their adapters in the store,
    the others none; study show says which and how much space."""
    _study(tmp_path, sqlite_url, tiny_model, dataset_file, n_trials=5)
    worker = [sys.executable, "-m", "autotune", "worker", "s", "--storage", sqlite_url]
    workers = [subprocess.Popen(worker, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=600) == 0, w.stdout.read().decode()[-3000:] if w.stdout else ""
    capsys.readouterr()
    assert main(["study", "show", "s", "--json", "--storage", sqlite_url]) == 0
    shown = json.loads(capsys.readouterr().out)
    front = {row["number"] for row in shown["pareto"]}
    trials = optuna.load_study(study_name="s", storage=sqlite_url).trials
    stored = {p.name for p in (tmp_path / "artifacts").iterdir()}
    with_file = {t.number for t in trials if t.user_attrs.get("adapter_artifact") in stored}
    assert with_file == front and set(map(int, shown["adapters"])) == front
    assert all(t.user_attrs.get("adapter_artifact") for t in trials if t.state.name == "COMPLETE"), "each was kept once"
    off = next(t.number for t in trials if t.state.name == "COMPLETE" and t.number not in front)
    capsys.readouterr()
    assert (
        main(["export", "s", "--pick", f"trial:{off}", "--adapters", str(tmp_path / "a"), "--storage", sqlite_url]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"trial {off} of 's' has no adapter kept (artifacts.keep: front)" in err[0]
    assert f"autotune verify s --pick trial:{off}" in err[0], "it says how to get it"


def test_a_store_that_cannot_be_written_is_refused_at_create(tmp_path, capsys, tiny_model, dataset_file, sqlite_url):
    spec = small_spec(tiny_model, dataset_file, artifacts={"store": str(tmp_path / "no" / "such" / "dir")})
    create = ["study", "create", "s", "--config", str(write_spec(tmp_path / "s.yaml", spec)), "--storage", sqlite_url]
    assert main(create) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write artifacts to" in err[0] and "no/such/dir" in err[0]
    assert main(["study", "list", "--storage", sqlite_url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [], "nothing half-written"


def test_a_store_that_fails_mid_study_loses_no_result(tmp_path, tiny_model, dataset_file, sqlite_url):
    """The store goes away while a trial trains: the trial is still told with its metrics,
    the failure is recorded on it, and the worker says so in one line and goes on."""
    _study(tmp_path, sqlite_url, tiny_model, dataset_file, keep="all", n_trials=1)
    worker = subprocess.Popen(
        [sys.executable, "-m", "autotune", "worker", "s", "--storage", sqlite_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    study = optuna.load_study(study_name="s", storage=sqlite_url)
    deadline = time.monotonic() + 120
    while not study.get_trials(states=(optuna.trial.TrialState.RUNNING,)) and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(tmp_path / "artifacts")  # while the runner loads the model and trains
    out = worker.communicate(timeout=300)[0]
    assert worker.returncode == 0, out
    (trial,) = study.get_trials()
    assert trial.state.name == "COMPLETE" and trial.user_attrs["metrics"]["eval_loss"] > 0
    assert trial.user_attrs["artifact_error"].startswith("adapter not kept: FileNotFoundError")
    assert "adapter_artifact" not in trial.user_attrs
    assert "trial 0: adapter not kept: FileNotFoundError" in out


def test_the_dashboard_lists_and_serves_each_trials_adapter(kept, tmp_path):
    """optuna-dashboard, started by `autotune dashboard`, has the study's artifact store: the
    trial's page in a real headless Chromium lists the adapter, and it downloads whole."""
    _, sqlite_url = kept
    trial = optuna.load_study(study_name="s", storage=sqlite_url).get_trials()[0]
    artifact = trial.user_attrs["adapter_artifact"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "autotune", "dashboard", "--storage", sqlite_url, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, detail = time.monotonic() + 60, None
        while detail is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/api/studies/1", timeout=5) as response:
                    detail = json.load(response)
            except OSError:
                time.sleep(0.5)
        assert detail is not None, "the dashboard did not answer"
        listed = detail["trials"][0]["artifacts"]
        assert [(a["artifact_id"], a["filename"]) for a in listed] == [(artifact, "adapter.tar")]
        with urllib.request.urlopen(f"{base}/artifacts/1/{trial._trial_id}/{artifact}", timeout=10) as response:
            assert len(response.read()) == trial.user_attrs["adapter_bytes"]
        if not Path("/usr/bin/chromium").exists():
            pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
        from autotune.dashboards import CHROMIUM_FLAGS

        page = f"{base}/dashboard/studies/1/trials"
        command = ["/usr/bin/chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
        shown = subprocess.run(
            [*command, "--virtual-time-budget=10000", "--dump-dom", page], capture_output=True, text=True, timeout=120
        )
        assert "adapter.tar" in shown.stdout, shown.stdout[-2000:]
        shot = tmp_path / "trial-page.png"  # kept in the test's folder, for a person to look at
        subprocess.run(
            [*command, "--window-size=1400,1000", "--virtual-time-budget=10000", f"--screenshot={shot}", page],
            timeout=120,
        )
        assert shot.stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(timeout=10)
