"""The study spec: one validated, declarative object that flows from the CLI to the study
(stored in its user attrs), to every worker and every trial."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from ._errors import SpecError
from ._search_space import SearchSpace
from .objectives import METRICS, TEST_FUNCTIONS, DatasetSpec, GenerationSpec, MetricSpec, ModelSpec, TrainingSpec

SamplerName = Literal["gp", "tpe", "nsga2", "random", "qmc"]
_CONSTRAINT = re.compile(r"^\s*([\w.]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Objective(_Strict):
    # A built-in metric (objectives.METRICS), or one of the spec's metrics: `name`, or
    # `name.key` where its function returns a dict.
    metric: str
    direction: Literal["minimize", "maximize"] | None = None  # None: the metric's natural one (StudySpec sets it)


class Constraint(_Strict):
    """`metric <= bound` or `metric >= bound`; written in YAML as that string."""

    metric: str
    op: Literal["<=", ">="]
    bound: float

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _CONSTRAINT.match(value)
        if match is None:
            raise ValueError(f"constraint {value!r} should read like 'peak_mem_gb <= 20'")
        return {"metric": match[1], "op": match[2], "bound": float(match[3])}

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's constraint value: feasible when <= 0."""
        value = metrics[self.metric]
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


class SamplerSpec(_Strict):
    # None: qmc (scrambled Sobol), with early stopping or without: the methods chosen over the
    # benchmark tables (README, Efficiency across landscapes).
    name: SamplerName | None = None
    seed: int | None = 0
    # NSGA-II only. None: a fifth of the budget, between 4 and 50, so that a small budget
    # still sees several generations (Optuna's default of 50 is random search at 50 trials).
    population_size: int | None = Field(None, ge=2)
    # gp and tpe: random trials before the model takes over (Optuna's default: 10).
    n_startup_trials: int | None = Field(None, ge=0)
    # Random configs queued at creation and shared with a baseline made with --like.
    n_pilot_trials: int = Field(0, ge=0)


class _TrialKindBase(_Strict):
    delay_s: float = Field(0.0, ge=0)  # kinds other than qlora: how long a trial takes
    timeout_s: float | None = Field(None, gt=0)  # a trial over this is ended and recorded as timed out


class QLoRATrial(_TrialKindBase):
    """Fine-tune the spec's model on its data with QLoRA."""

    kind: Literal["qlora"] = "qlora"


class TestFunctionTrial(_TrialKindBase):
    """A standard multi-objective test function of the hyperparameters (scaled to the unit
    cube), run by the worker's runner like a training run: for load tests and benchmarks."""

    kind: Literal["zdt1", "dtlz2"]
    # The standard deviation of a seed's effect on the quality metrics (eval_loss ...): a
    # training run's seed noise, drawn from the trial's seed and config.
    noise: float = Field(0.0, ge=0)


class TabularTrial(_TrialKindBase):
    """Replay a table of real runs (benchmarks/tabular_grid.py) at the grid point nearest
    the config, run by the worker's runner like a training run."""

    kind: Literal["tabular"]
    table: str = Field(min_length=1)


def _read_trial(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    kind = value.get("kind", "qlora")
    if kind not in ("qlora", "tabular", *TEST_FUNCTIONS):
        raise ValueError(
            f"unknown trial kind {kind!r}; choose qlora, {', '.join(TEST_FUNCTIONS)} or tabular (with table: FILE)"
        )
    return value


def _trial_tag(value: Any) -> str:
    kind = value.get("kind", "qlora") if isinstance(value, dict) else value.kind
    return "test_function" if kind in TEST_FUNCTIONS else kind


# What a trial evaluates, tagged by `kind`.
TrialSpec = Annotated[
    Annotated[
        Annotated[QLoRATrial, Tag("qlora")]
        | Annotated[TestFunctionTrial, Tag("test_function")]
        | Annotated[TabularTrial, Tag("tabular")],
        Discriminator(_trial_tag),
    ],
    BeforeValidator(_read_trial),
]


class WorkerSpec(_Strict):
    # A worker beats every heartbeat_interval_s; a RUNNING trial silent for grace_period_s is
    # failed by the next worker that asks for a trial, and its config queued again once.
    heartbeat_interval_s: int = Field(20, ge=1)
    grace_period_s: int = Field(60, ge=1)
    # A slot's runner process keeps the loaded model between trials and is started afresh
    # after this many (1: a fresh process per trial, the cold path), and whenever the model,
    # data or quantization change, or a trial fails. A process that is reused grows a little
    # (about 50 MB a trial was seen), which a host-memory objective on a CPU would count.
    trials_per_runner: int = Field(10, ge=1)


class ArtifactsSpec(_Strict):
    """Where the trained LoRA adapters are kept (Optuna's artifact store), and which."""

    store: str = Field(min_length=1)  # a folder every worker's machine sees, or s3://BUCKET
    # front: the Pareto front's adapters (and those of their verification re-runs), each
    # removed once it falls off the front; all: every trial that trained to the end; none.
    keep: Literal["front", "all", "none"] = "front"


class Budget(_Strict):
    """What the study may spend, counted across all its workers: the first limit reached ends it."""

    n_trials: int | None = Field(None, ge=1)  # trials of the search tried
    # Hours of device time (a GPU's; on a CPU, the CPU's) the trials of the search took:
    # each trial's whole time on its slot (storage.device_time_s), a stopped trial's to where
    # it stopped; verification re-runs are not counted.
    gpu_hours: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if self.n_trials is None and self.gpu_hours is None:
            raise ValueError("give n_trials, gpu_hours or both (the first reached ends the study)")
        return self

    def __str__(self) -> str:
        limits = [f"{self.n_trials} trials"] if self.n_trials is not None else []
        limits += [f"{self.gpu_hours:g} GPU-hours"] if self.gpu_hours is not None else []
        return " or ".join(limits)


def _default_objectives() -> list[Objective]:
    return [Objective(metric="eval_loss"), Objective(metric="train_time_s")]


class EarlyStopping(_Strict):
    """Stop trials that are already beaten (autotune._early_stopping)."""

    min_steps: int = Field(ge=1)  # the first rung
    reduction_factor: int = Field(3, ge=2)  # at each rung, keep at least the best 1/reduction_factor

    @classmethod
    def default_for(cls, max_steps: int) -> EarlyStopping | None:
        """What a spec with `training.max_steps` and no `early_stopping` key gets: rungs at a
        ninth and a third of the steps, rounded up (None where there is no step below the
        budget)."""
        min_steps = math.ceil(max_steps / 9)
        return cls(min_steps=min_steps, reduction_factor=3) if min_steps < max_steps else None


class StudySpec(_Strict):
    model: ModelSpec | None = None  # required by trial kind qlora
    dataset: DatasetSpec | None = None  # required by trial kind qlora
    search_space: SearchSpace = SearchSpace()
    objectives: list[Objective] = Field(default_factory=_default_objectives, min_length=1)
    constraints: list[Constraint] = []
    sampler: SamplerSpec = SamplerSpec()
    budget: Budget
    training: TrainingSpec = TrainingSpec()
    trial: TrialSpec = QLoRATrial()
    worker: WorkerSpec = WorkerSpec()
    # Unset: on for kind qlora where training.max_steps is set (EarlyStopping.default_for);
    # null: off.
    early_stopping: EarlyStopping | None = None
    # Metrics of completions generated for held-out prompts, measured at every evaluation.
    metrics: list[MetricSpec] = []
    generation: GenerationSpec = GenerationSpec()
    artifacts: ArtifactsSpec | None = None  # None: no adapter is kept
    # Configs to try first, e.g. a known-good {lora_r: 8, lora_alpha: 32}.
    enqueue_trials: list[dict[str, Any]] = []

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        self._resolve_defaults()
        if isinstance(self.trial, QLoRATrial) and (self.model is None or self.dataset is None):
            raise ValueError("missing required key 'model' or 'dataset' (trial kind qlora trains a model on data)")
        if self.artifacts is not None and not isinstance(self.trial, QLoRATrial):
            raise ValueError(
                f"artifacts: trial kind {self.trial.kind} trains no adapter; keep artifacts with kind qlora"
            )
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives name a metric twice: {', '.join(metrics)}")
        self._check_metrics()
        for point in self.enqueue_trials:
            self.search_space.encode_point(point)
        if self.early_stopping is not None:
            max_steps = self.training.max_steps
            if max_steps is None:
                raise ValueError("early_stopping needs training.max_steps: its rungs are steps")
            if self.early_stopping.min_steps >= max_steps:
                raise ValueError(
                    f"early_stopping.min_steps ({self.early_stopping.min_steps}) must be below "
                    f"training.max_steps ({max_steps}), or there is no rung to stop at"
                )
        if self.sampler.name == "nsga2" and self.sampler.population_size is None and self.budget.n_trials is None:
            raise ValueError(
                "sampler nsga2 sizes its population from budget.n_trials: set sampler.population_size "
                "when the budget is gpu_hours alone"
            )
        if self.budget.n_trials is not None and self.sampler.n_pilot_trials > self.budget.n_trials:
            raise ValueError(
                f"sampler.n_pilot_trials ({self.sampler.n_pilot_trials}) exceeds budget.n_trials ({self.budget.n_trials})"
            )
        return self

    def _resolve_defaults(self) -> None:
        """Early stopping and the sampler where the spec leaves them out: the method the
        benchmarks chose: quasi-random proposals (scrambled Sobol), with early stopping where
        a QLoRA trial has a step budget. The simulated kinds (test functions, a table's replay, for load tests and
        benchmarks) stop early only where asked."""
        max_steps = self.training.max_steps
        unset = "early_stopping" not in self.model_fields_set
        if unset and max_steps is not None and isinstance(self.trial, QLoRATrial):
            object.__setattr__(self, "early_stopping", EarlyStopping.default_for(max_steps))
        if self.sampler.name is None:
            for option, samplers in (("n_startup_trials", "tpe or gp"), ("population_size", "nsga2")):
                if getattr(self.sampler, option) is not None:
                    raise ValueError(f"sampler.{option} is an option of {samplers}: name the sampler (sampler.name)")
            object.__setattr__(self, "sampler", self.sampler.model_copy(update={"name": "qmc"}))

    @property
    def method(self) -> str:
        """How the study searches, as the benchmarks name it: the sampler, +es with early stopping."""
        return f"{self.sampler.name}+es" if self.early_stopping is not None else str(self.sampler.name)

    def _check_metrics(self) -> None:
        """The spec's own metrics, and the objectives and constraints that name a metric, with
        the objectives' directions set."""
        names = self.own_metric_names
        if len(set(names)) != len(names):
            raise ValueError(f"metrics name a metric twice: {', '.join(names)}")
        if self.metrics and not isinstance(self.trial, QLoRATrial):
            raise ValueError(
                f"metrics: trial kind {self.trial.kind} generates no text; generation metrics need kind qlora"
            )
        directions = {**METRICS, **{m.name: m.direction for m in self.metrics}}

        def direction_of(metric: str, where: str) -> str:
            if metric in directions:
                return str(directions[metric])
            name, dot, _ = metric.partition(".")
            function = next((m for m in self.metrics if m.name == name and m.function is not None), None)
            if dot and function is not None:
                return str(function.direction)  # a key of the dict its function returns
            choices = ", ".join([*METRICS, *names])
            raise ValueError(
                f"{where}: unknown metric {metric!r}; choose from {choices}, or add it to metrics "
                "(a built-in generation metric, or your function)"
            )

        objectives = []
        for i, objective in enumerate(self.objectives):
            direction = direction_of(objective.metric, f"objectives.{i}.metric")
            objectives.append(objective.model_copy(update={"direction": objective.direction or direction}))
        object.__setattr__(self, "objectives", objectives)
        for i, constraint in enumerate(self.constraints):
            direction_of(constraint.metric, f"constraints.{i}")

    @property
    def metric_names(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [str(o.direction) for o in self.objectives]

    @property
    def own_metric_names(self) -> list[str]:
        """The names in `metrics:` (generation metrics and the user's functions)."""
        return [m.name for m in self.metrics]

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _location(error: dict[str, Any]) -> str:
    tags = {"range", "choice", "fixed", "function-after[_check(), SearchSpace]", "qlora", "test_function", "tabular"}
    return ".".join(str(p) for p in error["loc"] if p not in tags)


def _describe(error: dict[str, Any]) -> str:
    where = _location(error)
    if error["type"] == "extra_forbidden":
        parent, _, key = where.rpartition(".")
        return f"unknown key {key!r}" + (f" in {parent}" if parent else "") + "; check its spelling"
    if error["type"] == "missing":
        return f"missing required key {where!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def spec_error(exc: ValidationError, source: str) -> SpecError:
    """One line for all the validation errors of a spec."""
    return SpecError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors()))


def _resolve_local(path: str, base: Path) -> str:
    candidate = base / Path(path).expanduser()
    return str(candidate.resolve()) if not Path(path).is_absolute() and candidate.exists() else path


def _resolve_function(function: str | None, base: Path) -> str | None:
    if function is None:
        return None
    where, _, name = function.rpartition(":")
    return f"{_resolve_local(where, base)}:{name}" if where.endswith(".py") else function


def _with_paths_from(spec: StudySpec, base: Path) -> StudySpec:
    """`spec` with its relative local paths (model, dataset, table) read from `base`."""
    update: dict[str, Any] = {}
    if spec.model is not None:
        update["model"] = spec.model.model_copy(update={"name_or_path": _resolve_local(spec.model.name_or_path, base)})
    if spec.dataset is not None:
        update["dataset"] = spec.dataset.model_copy(update={"path": _resolve_local(spec.dataset.path, base)})
    if isinstance(spec.trial, TabularTrial):
        update["trial"] = spec.trial.model_copy(update={"table": _resolve_local(spec.trial.table, base)})
    if spec.metrics:  # a function's file beside the spec
        update["metrics"] = [
            m.model_copy(update={"function": _resolve_function(m.function, base)}) for m in spec.metrics
        ]
    if spec.artifacts is not None and "://" not in spec.artifacts.store:  # a folder, made at study create
        folder = str((base / Path(spec.artifacts.store).expanduser()).resolve())
        update["artifacts"] = spec.artifacts.model_copy(update={"store": folder})
    return spec.model_copy(update=update)


def parse_stored_spec(data: dict[str, Any], source: str) -> StudySpec:
    """The spec a study was created with. A key missing there (stored by an autotune that had
    no such key) keeps the meaning it had then: early stopping off."""
    return parse_spec({"early_stopping": None, **data}, source)


def parse_spec(data: Any, source: str = "spec", base: Path | None = None) -> StudySpec:
    """A StudySpec from a mapping; relative local paths are taken from `base`."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: expected a mapping of keys (model, dataset, ...), got {type(data).__name__}")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, source) from None
    return spec if base is None else _with_paths_from(spec, base)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a YAML study spec."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse_spec(data, str(path), base=path.parent)
