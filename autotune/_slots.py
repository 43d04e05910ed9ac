"""Running trials on slots (a GPU each, or the CPU): one thread asks for a trial whenever a
slot is free and hands it over; the slot's thread runs it in the slot's warm runner, beating
its heartbeat and taking it through its rungs, and tells the study how it ended."""

from __future__ import annotations

import functools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._adapters import Adapters
from ._ask import Asker
from ._devices import device_factor, device_type, read_calibration, scaled
from ._early_stopping import at_rung, reach_rung, rung_steps
from ._errors import AutotuneError
from ._runner import Runner, TrialFailed
from ._spec import StudySpec
from ._tell import Teller
from ._trial_config import trial_config
from .objectives import AnyConfig, Hyperparameters, TrialConfig, TrialInputError
from .storage import heartbeat, write_record

if TYPE_CHECKING:
    import optuna


@dataclass
class Slot:
    gpu: str | None
    runner: Runner
    factor: float | None = None  # its device's time factor in the study, once calibrated

    @functools.cached_property
    def device(self) -> str:
        """Its device type (autotune._devices.device_type), asked for by QLoRA trials only:
        on a CPU it imports torch, which a worker of simulated trials does without."""
        return device_type(self.gpu)


@dataclass
class SlotLoop:
    """What the asking thread and the slot threads share."""

    asker: Asker
    teller: Teller
    adapters: Adapters | None  # where trained adapters are kept; None: not kept
    cache_dir: str
    stop: threading.Event
    errors: list[BaseException] = field(default_factory=list)
    failing_metric: str | None = None  # the metric whose function failed the last trial that ended

    @property
    def spec(self) -> StudySpec:
        return self.asker.spec


def ask_and_hand_out(loop: SlotLoop, slots: list[Slot], n_trials: int | None, timeout: float | None) -> None:
    """Ask for a trial whenever a slot is free and start it there; then wait for the slots."""
    free: queue.Queue[Slot] = queue.Queue()
    for slot in slots:
        free.put(slot)
    started_at, started, running = time.monotonic(), 0, []
    try:
        while not loop.stop.is_set():
            if n_trials is not None and started >= n_trials:
                break
            if timeout is not None and time.monotonic() - started_at >= timeout:
                break
            try:
                slot = free.get(timeout=0.2)
            except queue.Empty:
                continue
            if loop.stop.is_set():  # set while this thread waited for the slot
                break
            asked = loop.asker.ask()
            if asked is None:
                free.put(slot)
                if loop.asker.wait_for_work(loop.stop):
                    continue
                break
            started += 1
            thread = threading.Thread(target=_run_on_slot, args=(loop, slot, *asked, free), daemon=True)
            thread.start()
            running.append(thread)
    except BaseException as exc:
        loop.errors.append(exc)
        loop.stop.set()
    for thread in running:
        thread.join()


def _run_on_slot(
    loop: SlotLoop, slot: Slot, trial: optuna.Trial, hyperparameters: Hyperparameters, free: queue.Queue[Slot]
) -> None:
    """Run the trial in the slot's runner and tell the study how it ended."""
    started = time.monotonic()
    try:
        try:
            with heartbeat(trial, loop.teller.retry):
                config = _config(loop, slot, trial, hyperparameters)
                started = time.monotonic()  # the trial's own device time, after any calibration
                result = _run(loop, slot, trial, config)
                _require_objectives(loop.spec, result["metrics"])
        except TrialFailed as exc:
            loop.teller.failed(trial, exc, device_time_s=time.monotonic() - started)
            if exc.kind == "input":
                raise TrialInputError(exc.reason) from None
            _count_metric_failures(loop, exc.metric if exc.kind == "metric" else None, exc.reason)
        else:
            _count_metric_failures(loop, None, "")
            # The slot's time, unless a simulated trial says what its pretend device took.
            result["info"].setdefault("device_time_s", time.monotonic() - started)
            loop.teller.result(trial, result)
            if loop.adapters is not None:
                loop.teller.retry(lambda: loop.adapters.prune(loop.teller.study))
    except BaseException as exc:
        loop.errors.append(exc)
        loop.stop.set()
    finally:
        free.put(slot)


def _count_metric_failures(loop: SlotLoop, metric: str | None, reason: str) -> None:
    """Stop the worker where the same metric function failed two trials in a row: the function
    is broken, not the configs (a failed metric spends no budget, so trials would go on failing)."""
    previous, loop.failing_metric = loop.failing_metric, metric
    if metric is not None and metric == previous:
        raise AutotuneError(f"{reason} (twice in a row; the worker stops): mend it, then start the worker again")


def _require_objectives(spec: StudySpec, metrics: dict[str, float]) -> None:
    """TrialFailed (metric) where the objectives or constraints name a metric the trial did not
    measure: a function that returned a dict where the spec names its plain value, or another key."""
    for name in [*spec.metric_names, *(c.metric for c in spec.constraints)]:
        if name not in metrics:
            metric = name.partition(".")[0]
            returned = ", ".join(m for m in metrics if m == metric or m.startswith(metric + ".")) or "nothing"
            raise TrialFailed(
                f"metric {metric} returned {returned}, not {name}: name what it returns in objectives",
                "metric",
                metric=metric,
            )


def _config(loop: SlotLoop, slot: Slot, trial: optuna.Trial, hyperparameters: Hyperparameters) -> AnyConfig:
    """What the slot's runner runs for the trial; a QLoRA trial's slot is calibrated first."""
    loop.teller.progress.started(trial.number, trial.params, slot.gpu)
    config = trial_config(loop.spec, trial, hyperparameters, loop.cache_dir)
    if isinstance(config, TrialConfig) and slot.factor is None:
        train = functools.partial(slot.runner.run, stop=loop.stop, time_limit_s=loop.spec.trial.timeout_s)
        try:
            slot.factor = device_factor(
                trial,
                slot.device,
                config,
                train,
                loop.asker.lock,
                loop.teller.retry,
                loop.stop,
                loop.teller.progress.note,
            )
        except TrialFailed as exc:
            if exc.kind != "config":  # interrupted, or the model or data cannot be used: as in a trial
                raise
            # With the trial's own hyperparameters (the study's first calibration) the config
            # failed; with the study's, this device cannot run what the others ran: stop here.
            stored = loop.teller.retry(lambda: read_calibration(loop.teller.study))
            own = stored is None or stored.hyperparameters == config.hyperparameters.model_dump(mode="json")
            reason = f"calibrating {slot.device} failed: {exc.reason}"
            raise TrialFailed(reason, "config" if own else "input", exc.log_tail) from None
    return config


def _run(loop: SlotLoop, slot: Slot, trial: optuna.Trial, config: AnyConfig) -> dict[str, Any]:
    """The runner's answer for the trial (a QLoRA trial's times in the reference device's
    seconds); TrialFailed where it has none."""
    if not isinstance(config, TrialConfig):
        return _answer(loop, slot, trial, config)
    loop.teller.retry(lambda: write_record(trial, config=config.model_dump(mode="json")))
    if loop.adapters is None:
        result = _answer(loop, slot, trial, config)
    else:
        with loop.adapters.folder() as folder:
            result = _answer(loop, slot, trial, config.model_copy(update={"adapter_dir": folder}))
            loop.adapters.keep(trial, folder, loop.teller.retry)  # before the tell: a front trial has its adapter
    assert slot.factor is not None
    measured = result["metrics"]["train_time_s"]
    result["metrics"] = scaled(result["metrics"], slot.factor)
    result["info"] |= {"device_type": slot.device, "device_factor": slot.factor, "measured_train_time_s": measured}
    return result


def _answer(loop: SlotLoop, slot: Slot, trial: optuna.Trial, config: AnyConfig) -> dict[str, Any]:
    on_rung = functools.partial(_at_rung, loop, trial, slot.factor or 1.0)
    return slot.runner.run(config, stop=loop.stop, time_limit_s=loop.spec.trial.timeout_s, on_rung=on_rung)


def _at_rung(loop: SlotLoop, trial: optuna.Trial, time_factor: float, step: int, measured: dict[str, float]) -> bool:
    """Whether the trial goes on from rung `step`, its values there recorded in the study."""
    spec = loop.spec
    assert spec.early_stopping is not None and spec.training.max_steps is not None
    if any(m not in measured for m in spec.metric_names):
        return False  # stopped here: the result is failed for the metric it lacks (_require_objectives)
    metrics = at_rung(scaled(measured, time_factor), step, spec.training.max_steps)
    values = [float(metrics[m]) for m in spec.metric_names]
    factor = spec.early_stopping.reduction_factor
    rungs = rung_steps(spec.early_stopping, spec.training.max_steps)
    last = step == rungs[-1]
    study = loop.teller.study
    return loop.teller.retry(lambda: reach_rung(study, trial, step, values, spec.directions, factor, len(rungs), last))
