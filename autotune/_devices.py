"""Times comparable across device types. A study's workers may run on an A100 and an RTX 4090
at once; train_time_s (an objective, early stopping's extrapolated times, what the sampler
models) would then compare seconds of different devices. So each device type that runs QLoRA
trials of a study first trains one fixed calibration config (as long as a trial, timed as a
trial is), and the study keeps its seconds (`device_calibration`, a study user attr). The
first device type to do so
is the study's reference; a trial's train_time_s is its measured time times its device's
factor (the reference's calibration seconds over its own): seconds of the reference device.
The measured time stays in the trial's record (measured_train_time_s). A study run on one
device type has factor 1 everywhere: its times are as measured.

The factor assumes that the ratio of two devices' speeds is about the same for every config
of the study (the same model and data; the configs differ in rank, batch size and the like).

One slot per device type calibrates: it claims the calibration (`device_calibration_under_way`,
device type -> the number of the trial it calibrates for), and the other slots of that type,
on any machine, wait for its seconds; a claim whose trial no longer runs (it failed, or its
worker died and missed its heartbeats) is taken over."""

from __future__ import annotations

import functools
import platform
import subprocess
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ._runner import TrialFailed
from .objectives import TrialConfig
from .storage import AskLock, Retry, fail_stale_trials

if TYPE_CHECKING:
    import optuna

CALIBRATION_ATTR = "device_calibration"
UNDER_WAY_ATTR = "device_calibration_under_way"
POLL_S = 2.0  # how often a slot waiting for another's calibration looks for its seconds
# A calibration trains as many steps as a trial (training.max_steps), timed as a trial is
# (its first steps' warm-up included, evaluation not): a trial-length run per device type.
# Where trials train whole epochs instead, this many steps.
CALIBRATION_STEPS = 20


class DeviceCalibration(BaseModel):
    hyperparameters: dict[str, Any]  # the config every device type trains to calibrate
    reference: str  # the device type the study's times are in
    seconds: dict[str, float]  # device type -> its calibration's training seconds

    def factor(self, device: str) -> float:
        """What a time measured on `device` is multiplied by: seconds of the reference device."""
        return self.seconds[self.reference] / self.seconds[device]


def device_type(gpu: str | None) -> str:
    """What a slot computes on, as calibrations key it: the GPU's name (nvidia-smi's, as
    torch reports it), or on a CPU its architecture and the threads torch uses there."""
    if gpu is None:
        import torch

        return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    try:
        query = ["nvidia-smi", "-i", gpu, "--query-gpu=name", "--format=csv,noheader"]
        name = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or f"GPU {gpu}"


def read_calibration(study: optuna.Study) -> DeviceCalibration | None:
    stored = study.user_attrs.get(CALIBRATION_ATTR)
    return None if stored is None else DeviceCalibration.model_validate(stored)


def device_factor(
    trial: optuna.Trial,
    device: str,
    config: TrialConfig,
    train: Callable[[TrialConfig], dict[str, Any]],
    lock: AskLock,
    retry: Retry,
    stop: threading.Event,
    note: Callable[[str], None],
) -> float:
    """`device`'s factor in the trial's study, calibrating it first (with `train`, the slot's
    runner) where the study has none for it, or waiting while another slot of that type does.
    `config` is `trial`'s: the first device type calibrates with its hyperparameters, and
    every later one with the same."""
    study, waiting = trial.study, False
    while True:
        stored = retry(functools.partial(read_calibration, study))
        if stored is not None and device in stored.seconds:
            return stored.factor(device)
        if not retry(functools.partial(_claim, study, lock, device, trial.number)):
            if not waiting:
                note(f"trial {trial.number} waits for another worker's calibration of {device}")
                waiting = True
            if stop.wait(POLL_S):
                raise TrialFailed("interrupted: the worker was asked to stop", "interrupted")
            continue
        note(f"trial {trial.number} calibrates {device} first: one trial-length run, timed (autotune._devices)")
        hyperparameters = config.hyperparameters.model_dump(mode="json") if stored is None else stored.hyperparameters
        seconds = _calibrate(config, hyperparameters, train)
        calibration = retry(functools.partial(_store, study, lock, device, hyperparameters, seconds))
        if calibration is not None:
            return calibration.factor(device)
        # Another device type was calibrated first, with other hyperparameters: again with theirs.


def _claim(study: optuna.Study, lock: AskLock, device: str, number: int) -> bool:
    """Whether trial `number`'s slot is to calibrate `device`: it has no seconds yet, and no
    other trial that still runs claimed it. The RUNNING trials of dead workers are failed
    first, so that their claims lapse."""
    from optuna.trial import TrialState

    with lock:
        stored = read_calibration(study)
        if stored is not None and device in stored.seconds:
            return False  # stored since the caller looked: it reads them next
        fail_stale_trials(study)
        claims: dict[str, int] = study.user_attrs.get(UNDER_WAY_ATTR, {})
        holder = claims.get(device)
        if holder is not None and holder != number:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if any(t.number == holder for t in running):
                return False
        study.set_user_attr(UNDER_WAY_ATTR, claims | {device: number})
        return True


def _calibrate(config: TrialConfig, hyperparameters: dict[str, Any], train: Callable[..., dict[str, Any]]) -> float:
    steps = config.training.max_steps or CALIBRATION_STEPS
    calibration = config.model_copy(
        update={
            "hyperparameters": config.hyperparameters.model_validate(hyperparameters),
            "training": config.training.model_copy(update={"max_steps": steps}),
            "rungs": [],
            "adapter_dir": None,
            "metrics": [],  # its time is the training's: nothing generated
        }
    )
    return float(train(calibration)["metrics"]["train_time_s"])


def _store(
    study: optuna.Study, lock: AskLock, device: str, hyperparameters: dict[str, Any], seconds: float
) -> DeviceCalibration | None:
    """The study's calibration with `device`'s seconds added, under the ask lock; None where
    the study calibrates with other hyperparameters than these."""
    with lock:
        stored = read_calibration(study)
        if stored is None:
            stored = DeviceCalibration(hyperparameters=hyperparameters, reference=device, seconds={})
        elif stored.hyperparameters != hyperparameters:
            return None
        calibration = stored.model_copy(update={"seconds": {**stored.seconds, device: seconds}})
        study.set_user_attr(CALIBRATION_ATTR, calibration.model_dump())
        return calibration


def scaled(metrics: dict[str, float], factor: float) -> dict[str, float]:
    """The metrics with their times in the reference device's seconds."""
    if factor == 1.0:
        return metrics
    return metrics | {
        "train_time_s": metrics["train_time_s"] * factor,
        "tokens_per_s": metrics["tokens_per_s"] / factor,
    }
