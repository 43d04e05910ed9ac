"""The benchmark scripts run (on a tiny budget) and write what they say they write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_sample_efficiency_tiny(tmp_path):
    out = tmp_path / "se.json"
    done = _run(str(BENCHMARKS / "sample_efficiency.py"), "--out", str(out), "--seeds", "2", "--budget", "10")
    assert "| random |" in done.stdout
    result = json.loads(out.read_text())
    assert set(result["problems"]) == {"zdt1", "dtlz2"}
    for problem in result["problems"].values():
        assert problem["true_hypervolume"] > 0
        assert set(problem["samplers"]) == {"gp", "tpe", "nsga2", "random", "qmc"}
        assert all(0 <= row["median"]["10"] <= 1 + 1e-9 for row in problem["samplers"].values())


def test_overhead_tiny(tmp_path):
    out = tmp_path / "oh.json"
    done = _run(str(BENCHMARKS / "overhead.py"), "--out", str(out), "--sizes", "5", "--samples", "2", "--skip-model")
    assert "| sqlite | 16 |" in done.stdout
    result = json.loads(out.read_text())
    assert set(result["samplers"]) == {f"{s}@5" for s in ("gp", "tpe", "nsga2", "random", "qmc")}
    assert result["idle"]["process_start_and_imports_s"] > 0


@pytest.mark.parametrize("script", ["gpu_qlora.py", "tabular_grid.py", "load.py"])
def test_scripts_document_themselves(script):
    assert "--out" in _run(str(BENCHMARKS / script), "--help").stdout
