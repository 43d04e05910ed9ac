"""What one trial computes: resolve the model and dataset, fine-tune with QLoRA, evaluate,
return metrics. Knows nothing of Optuna or the database; runs standalone:

    python -m autotune.objectives trial.json   # prints {"metrics": ..., "info": ...}
"""

from ._config import (
    METRICS,
    DatasetSpec,
    Hyperparameters,
    ModelSpec,
    TrainingSpec,
    TrialConfig,
)
from ._data import DEMO_CORPUS, build_splits, load_examples
from ._errors import TrialInputError
from ._model import DEMO_MODEL, check_model_reference, convert_gguf, resolve_model
from ._synthetic import TEST_FUNCTIONS, synthetic_metrics
from ._tabular import TABULAR_PREFIX, Table, load_table
from ._train import run_trial
from ._translate import bnb_kwargs, lora_kwargs, sft_kwargs

__all__ = [
    "DEMO_CORPUS",
    "DEMO_MODEL",
    "METRICS",
    "DatasetSpec",
    "Hyperparameters",
    "ModelSpec",
    "TABULAR_PREFIX",
    "TEST_FUNCTIONS",
    "Table",
    "TrainingSpec",
    "TrialConfig",
    "TrialInputError",
    "bnb_kwargs",
    "build_splits",
    "check_model_reference",
    "convert_gguf",
    "load_examples",
    "load_table",
    "lora_kwargs",
    "resolve_model",
    "run_trial",
    "sft_kwargs",
    "synthetic_metrics",
]
