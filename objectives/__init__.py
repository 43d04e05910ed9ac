"""What one trial computes: resolve the model and dataset, fine-tune with QLoRA, evaluate,
return metrics. Knows nothing of Optuna or the database; runs standalone:

    python -m autotune.objectives trial.json   # prints {"metrics": ..., "info": ...}
"""

from ._config import (
    GENERATION_METRICS,
    METRICS,
    DatasetSpec,
    GenerationSpec,
    Hyperparameters,
    MetricSpec,
    ModelSpec,
    TrainingSpec,
    TrialConfig,
    perplexity,
)
from ._data import DEMO_CORPUS, held_out_size, load_examples
from ._errors import MetricError, TrialInputError
from ._generation import generate, held_out_prompts
from ._metrics import BUILT_IN, load_function
from ._model import DEMO_MODEL, check_model_reference, convert_gguf, resolve_cache_dir, resolve_model
from ._runner import AnyConfig, runner_goes_on, warm_key
from ._simulated import SimulatedConfig
from ._synthetic import TEST_FUNCTIONS, synthetic_metrics
from ._tabular import Table, load_table
from ._train import load_base, run_trial
from ._translate import bnb_kwargs, lora_kwargs, sft_kwargs

__all__ = [
    "AnyConfig",
    "BUILT_IN",
    "GENERATION_METRICS",
    "GenerationSpec",
    "MetricError",
    "MetricSpec",
    "generate",
    "held_out_prompts",
    "held_out_size",
    "load_function",
    "DEMO_CORPUS",
    "DEMO_MODEL",
    "METRICS",
    "DatasetSpec",
    "Hyperparameters",
    "ModelSpec",
    "TEST_FUNCTIONS",
    "Table",
    "TrainingSpec",
    "TrialConfig",
    "TrialInputError",
    "bnb_kwargs",
    "check_model_reference",
    "convert_gguf",
    "load_examples",
    "load_table",
    "lora_kwargs",
    "resolve_cache_dir",
    "perplexity",
    "resolve_model",
    "load_base",
    "run_trial",
    "sft_kwargs",
    "SimulatedConfig",
    "synthetic_metrics",
    "runner_goes_on",
    "warm_key",
]
