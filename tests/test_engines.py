"""The real SmolLM2 through transformers: loading from the registry package, scoring, generation."""

from __future__ import annotations

import pytest
import torch
from langchain_core.messages import HumanMessage, SystemMessage

from agent.config import Settings
from agent.engines import TransformersEngine
from agent.models import resolve_llm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    settings = Settings.from_env()
    return TransformersEngine(resolve_llm(settings.model, settings.cache_dir), model_name=settings.model)


MESSAGES = [
    SystemMessage("You recommend movies."),
    HumanMessage("I loved The Matrix. Pick one: 11, 22 or 33."),
]


def test_the_packaged_model_is_a_135m_llama(engine):
    assert engine.model.config.model_type == "llama"
    assert 130e6 < sum(p.numel() for p in engine.model.parameters()) < 140e6


def test_scores_equal_the_log_probability_of_a_full_forward_pass(engine):
    prefix, choices = '{"ranking": ["', ['11"', '22"', '333"']
    scores = engine.score_choices(MESSAGES, prefix, choices)
    context = (
        engine._encode_prompt(MESSAGES) + engine.tokenizer(prefix, add_special_tokens=False)["input_ids"]
    )
    for choice, score in zip(choices, scores, strict=True):
        ids = engine.tokenizer(choice, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logits = engine.model(torch.tensor([context + ids])).logits[0]
        logprobs = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)
        expected = sum(logprobs[k, t].item() for k, t in enumerate(ids))
        assert score == pytest.approx(expected, abs=1e-3)


def test_generation_is_greedy_and_repeatable(engine):
    first = engine.generate([MESSAGES, MESSAGES[:1] + [HumanMessage("Say hello.")]], max_new_tokens=12)
    second = engine.generate([MESSAGES, MESSAGES[:1] + [HumanMessage("Say hello.")]], max_new_tokens=12)
    assert first == second and all(isinstance(t, str) and t for t in first)
