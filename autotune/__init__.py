"""autotune: Bayesian hyperparameter tuning of QLoRA fine-tunes.

One study spec describes what to tune; workers on any number of GPUs pull trials from the
same Optuna study in a shared database; each trial fine-tunes with QLoRA in a warm runner
process (one per GPU) and reports its objectives.
"""

from ._demo import run_demo
from ._errors import AutotuneError, SpecError, Stopped
from ._export import export
from ._report import build_report, report, run_dashboard
from ._search_space import Choice, Range, SearchSpace
from ._spec import Budget, Constraint, EarlyStopping, Objective, SamplerSpec, StudySpec, load_spec, parse_spec
from ._study import StudySummary, TrialRow, create_study, list_studies, load_study, show_study
from ._verify import VerifyPlan, verify
from ._worker import WorkerResult, run_worker

__all__ = [
    "AutotuneError",
    "Budget",
    "Choice",
    "Constraint",
    "EarlyStopping",
    "Objective",
    "Range",
    "SamplerSpec",
    "SearchSpace",
    "SpecError",
    "Stopped",
    "StudySpec",
    "StudySummary",
    "TrialRow",
    "VerifyPlan",
    "WorkerResult",
    "build_report",
    "create_study",
    "export",
    "list_studies",
    "load_spec",
    "load_study",
    "parse_spec",
    "report",
    "run_dashboard",
    "run_demo",
    "run_worker",
    "show_study",
    "verify",
]
