"""The search space: sampled values are what peft and trl are given."""

from __future__ import annotations

import optuna
import pytest

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


def test_the_space_has_a_field_per_hyperparameter():
    assert list(SearchSpace.model_fields) == list(Hyperparameters.model_fields)
    assert SearchSpace().searched() == ["lora_r", "lora_alpha", "learning_rate"]
