"""Run trials outside the worker.

    python -m autotune.objectives trial.json   # one trial; its result as JSON on the last stdout line
    python -m autotune.objectives --serve      # a warm runner: configs on stdin, results on stdout

Training output goes to stderr, so stdout carries only results. The process exits when its
parent (the worker) dies, so a killed worker never leaves a trial training on."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

from ._config import TrialConfig
from ._errors import TrialInputError
from ._runner import serve
from ._train import run_trial


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m autotune.objectives", description=__doc__)
    parser.add_argument("config", type=Path, nargs="?", help="a trial config (JSON)")
    parser.add_argument("--serve", action="store_true", help="run trials from stdin until it closes")
    args = parser.parse_args()
    if args.serve == (args.config is not None):
        parser.error("give a trial config, or --serve")
    _exit_with_parent()
    if args.serve:
        # Answers keep the real stdout; anything else written there (C libraries too) goes to stderr.
        answers = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        serve(sys.stdin, answers)
        return 0
    config = TrialConfig.model_validate_json(args.config.read_text())
    try:
        with redirect_stdout(sys.stderr):
            result = run_trial(config)
    except TrialInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
