"""The search space: sampled values are what peft and trl are given."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from autotune import SearchSpace, SpecError, parse_spec
from autotune.objectives import Hyperparameters, lora_kwargs


def _sample(space: SearchSpace) -> Hyperparameters:
    return space.suggest(optuna.create_study().ask())


def test_a_one_module_list_choice_reaches_peft_as_a_list(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    hp = _sample(SearchSpace(target_modules={"choices": [["q_proj"]]}))
    assert hp.target_modules == ["q_proj"]
    # A string would be read by peft as a full-match regex, matching no module.
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(**lora_kwargs(hp)))
    assert {name.split(".")[-4] for name, _ in model.named_parameters() if "lora_A" in name} == {"q_proj"}


def test_list_choices_decode_to_the_lists_given():
    choices = [["q_proj", "v_proj"], ["o_proj"], "all-linear"]
    seen = {repr(_sample(SearchSpace(target_modules={"choices": choices})).target_modules) for _ in range(30)}
    assert seen == {repr(c) for c in choices}


def test_choices_that_store_the_same_are_refused():
    with pytest.raises(SpecError, match="two choices are the same once stored"):
        parse_spec(
            {
                "search_space": {"target_modules": {"choices": [["q_proj"], "q_proj"]}},
                "budget": {"n_trials": 1},
                "trial": {"kind": "zdt1"},
            }
        )


def test_a_spec_without_a_search_space_tunes_rank_alpha_and_learning_rate():
    """The README's defaults: three log ranges tuned, the rest fixed at common QLoRA values."""
    space = parse_spec({"budget": {"n_trials": 1}, "trial": {"kind": "zdt1"}}).search_space
    trial = optuna.create_study().ask()
    hp = space.suggest(trial)
    assert trial.distributions == {
        "lora_r": IntDistribution(4, 64, log=True),
        "lora_alpha": IntDistribution(8, 128, log=True),
        "learning_rate": FloatDistribution(1e-5, 1e-3, log=True),
    }
    fixed = (hp.lora_dropout, hp.target_modules, hp.optim, hp.per_device_train_batch_size)
    assert fixed == (0.05, "all-linear", "paged_adamw_8bit", 4)


def test_a_fixed_value_is_not_tuned():
    """Fixing lora_r in the spec leaves it out of the trial's params (and the sampler's space)."""
    spec = {"search_space": {"lora_r": 16}, "budget": {"n_trials": 1}, "trial": {"kind": "zdt1"}}
    space = parse_spec(spec).search_space
    trial = optuna.create_study().ask()
    assert space.suggest(trial).lora_r == 16
    assert set(trial.params) == {"lora_alpha", "learning_rate"}
