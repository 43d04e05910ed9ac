"""Run one trial from a config file and print its metrics as JSON on the last stdout line.

Training output goes to stderr, so stdout carries only the result. The process exits when
its parent (the worker) dies, so a killed worker never leaves a trial training on."""

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
    parser.add_argument("config", type=Path, help="a trial config (JSON)")
    args = parser.parse_args()
    _exit_with_parent()
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
