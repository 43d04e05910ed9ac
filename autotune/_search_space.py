"""The search space: each hyperparameter is a range, a list of choices, or a fixed value.
Sampling a space with an Optuna trial gives one trial's Hyperparameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)

from .objectives import Hyperparameters

if TYPE_CHECKING:
    import optuna

_LIST_SEPARATOR = ","  # Optuna choices are scalars: a list of modules is stored joined


def _encode(value: Any) -> Any:
    return _LIST_SEPARATOR.join(value) if isinstance(value, list) else value


def _is_int(name: str) -> bool:
    return Hyperparameters.model_fields[name].annotation is int


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float
    high: float
    log: bool = False
    step: float | None = None


class Choice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    choices: list[Any] = Field(min_length=1)


Fixed = int | float | str | list[str]


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "choice" if "choices" in value else "range"
    return {Range: "range", Choice: "choice"}.get(type(value), "fixed")


Param = Annotated[
    Annotated[Range, Tag("range")] | Annotated[Choice, Tag("choice")] | Annotated[Fixed, Tag("fixed")],
    Discriminator(_kind),
]


def _check_value(name: str, value: Any) -> Any:
    """`value` checked and converted by the rules of the Hyperparameters field `name`."""
    field = Hyperparameters.model_fields[name]
    try:
        kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise ValueError(f"{value!r} is not a valid {name}: {exc.errors()[0]['msg']}") from None


def _encoded_choices(name: str, param: Choice) -> dict[Any, Any]:
    """Each choice in Optuna's form -> the choice, for suggesting and decoding."""
    encoded = {_encode(c): c for c in param.choices}
    if len(encoded) < len(param.choices):
        raise ValueError(f"{name}: two choices are the same once stored ({param.choices!r}); drop one of them")
    return encoded


class _SearchSpaceBase(BaseModel):
    """A range, a list of choices or a fixed value for each of a trial's Hyperparameters
    (the fields are made from them below); a spec overrides only what it tunes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _check(self) -> _SearchSpaceBase:
        for name in type(self).model_fields:
            param = getattr(self, name)
            if isinstance(param, Range):
                if Hyperparameters.model_fields[name].annotation not in (int, float):
                    raise ValueError(f"{name} takes choices or a fixed value, not a range")
                if param.low > param.high:
                    raise ValueError(f"{name}: low ({param.low:g}) is above high ({param.high:g}); swap them")
                if param.log and param.step is not None:
                    raise ValueError(f"{name}: a log range cannot have a step; drop one of them")
                if param.log and param.low <= 0:
                    raise ValueError(f"{name}: a log range needs low > 0, got {param.low:g}")
                for end in (param.low, param.high):
                    if _is_int(name) and end != int(end):
                        raise ValueError(f"{name}: range ends must be integers, got {end:g}")
                    _check_value(name, int(end) if _is_int(name) else end)
            elif isinstance(param, Choice):
                for choice in param.choices:
                    _check_value(name, choice)
                _encoded_choices(name, param)
            else:
                object.__setattr__(self, name, _check_value(name, param))
        return self

    def searched(self) -> list[str]:
        """The names of the hyperparameters that are tuned (not fixed)."""
        return [n for n in type(self).model_fields if isinstance(getattr(self, n), (Range, Choice))]

    def encode_point(self, point: dict[str, Any]) -> dict[str, Any]:
        """A config to enqueue, checked (known names, valid values) and in Optuna's form."""
        encoded = {}
        for name, value in point.items():
            if name not in type(self).model_fields:
                raise ValueError(f"unknown hyperparameter {name!r}; known: {', '.join(type(self).model_fields)}")
            _check_value(name, value)
            encoded[name] = _encode(value)
        return encoded

    def unit_point(self, params: dict[str, Any]) -> list[float]:
        """The searched hyperparameters of `params` scaled to [0, 1] (log ranges on a log
        scale, choices by position), in field order."""
        import math

        point = []
        for name in self.searched():
            param, value = getattr(self, name), params[name]
            if isinstance(param, Range):
                scale = math.log if param.log else float
                span = scale(param.high) - scale(param.low)
                point.append((scale(value) - scale(param.low)) / span if span else 0.0)
            else:
                encoded = list(_encoded_choices(name, param))
                point.append(encoded.index(value) / max(1, len(encoded) - 1))
        return point

    def suggest(self, trial: optuna.Trial) -> Hyperparameters:
        values: dict[str, Any] = {}
        for name in type(self).model_fields:
            param = getattr(self, name)
            if isinstance(param, Range) and _is_int(name):
                step = int(param.step or 1)
                values[name] = trial.suggest_int(name, int(param.low), int(param.high), step=step, log=param.log)
            elif isinstance(param, Range):
                values[name] = trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
            elif isinstance(param, Choice):
                encoded = _encoded_choices(name, param)
                values[name] = encoded[trial.suggest_categorical(name, list(encoded))]
            else:
                values[name] = param
        return Hyperparameters(**values)


# Common QLoRA practice, one per Hyperparameters field.
DEFAULTS: dict[str, Any] = {
    "lora_r": Range(low=4, high=64, log=True),
    "lora_alpha": Range(low=8, high=128, log=True),
    "learning_rate": Range(low=1e-5, high=1e-3, log=True),
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "optim": "paged_adamw_8bit",
    "per_device_train_batch_size": 4,
}

SearchSpace = create_model(
    "SearchSpace",
    __base__=_SearchSpaceBase,
    __module__=__name__,
    **{name: (Param, DEFAULTS[name]) for name in Hyperparameters.model_fields},
)
