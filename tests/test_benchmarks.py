"""The benchmark scripts run (on a tiny budget) and write what they say they write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.objectives import load_table

from conftest import write_table

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_sample_efficiency_tiny(tmp_path):
    out = tmp_path / "se.json"
    table = write_table(tmp_path / "table.json")
    done = _run(
        str(BENCHMARKS / "sample_efficiency.py"),
        "--out",
        str(out),
        "--seeds",
        "2",
        "--budget",
        "10",
        "--table",
        str(table),
    )
    assert "| random |" in done.stdout
    result = json.loads(out.read_text())
    assert set(result["problems"]) == {"zdt1", "dtlz2", "tabular:table.json"}
    # Sobol's first 8 points fall one in each octant of the (log) space, so qmc sees every
    # point of the 2x2x2 table: the whole front.
    assert result["problems"]["tabular:table.json"]["samplers"]["qmc"]["median"]["10"] == pytest.approx(1.0)
    for problem in result["problems"].values():
        assert problem["true_hypervolume"] > 0
        assert set(problem["samplers"]) == {"gp", "tpe", "nsga2", "random", "qmc"}
        assert all(0 <= row["median"]["10"] <= 1 + 1e-9 for row in problem["samplers"].values())


def test_overhead_tiny(tmp_path, tiny_model):
    out = tmp_path / "oh.json"
    args = ["--out", str(out), "--sizes", "5", "--samples", "2", "--model", str(tiny_model), "--trials", "2"]
    done = _run(str(BENCHMARKS / "overhead.py"), *args, "--max-steps", "1", "--max-length", "128")
    assert "| sqlite | 16 |" in done.stdout and "| warm | 1 |" in done.stdout
    result = json.loads(out.read_text())
    assert set(result["samplers"]) == {f"{s}@5" for s in ("gp", "tpe", "nsga2", "random", "qmc")}
    cold, warm = result["per_trial"]["rows"]["cold"], result["per_trial"]["rows"]["warm"]
    assert all(row["load_base_s"] > 0 for row in cold), "a fresh process loads the model every trial"
    assert warm[0]["load_base_s"] > 0 and warm[1]["load_base_s"] == 0, "a warm runner loads it once"
    assert [r["eval_loss"] for r in warm] == pytest.approx([r["eval_loss"] for r in cold], abs=1e-5)


@pytest.mark.parametrize("script", ["gpu_qlora.py", "load.py"])
def test_scripts_document_themselves(script):
    assert "--out" in _run(str(BENCHMARKS / script), "--help").stdout


def test_tabular_grid_tiny(tmp_path, tiny_model, dataset_file):
    out = tmp_path / "grid.json"
    args = ["--out", str(out), "--model", str(tiny_model), "--dataset", str(dataset_file), "--max-steps", "2"]
    grid = ["--lora-r", "4", "--lora-alpha", "4,16", "--learning-rate", "1e-3", "--processes", "1"]
    _run(str(BENCHMARKS / "tabular_grid.py"), *args, *grid)
    table = load_table(str(out))
    assert table.grid == {"lora_r": [4], "lora_alpha": [4, 16], "learning_rate": [1e-3]}
    assert all(row["eval_loss"] > 0 and row["train_time_s"] > 0 for row in table.rows.values())
    made = json.loads(out.read_text())
    assert made["config"]["training"]["max_steps"] == 2 and "torch" in made["versions"]
    # A rerun resumes from the rows already measured.
    assert "2 configs done, 0 to go" in _run(str(BENCHMARKS / "tabular_grid.py"), *args, *grid).stdout
