"""The real SmolLM2 through transformers: loading from the registry package, scoring, generation."""

from __future__ import annotations

import pytest
import torch
from langchain_core.messages import HumanMessage, SystemMessage

from agent.config import Settings
from agent.engines import TransformersEngine, pick_dtype
from agent.models import resolve_llm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine():
    settings = Settings.from_env()
    return TransformersEngine(resolve_llm(settings.model, settings.cache_dir), model_name=settings.model,
                              dtype="float32")


@pytest.fixture(scope="module")
def auto_engine():
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


def test_auto_dtype_is_bfloat16_where_the_cpu_has_it_and_scores_stay_close(engine, auto_engine):
    native = torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert auto_engine.dtype == ("bfloat16" if native else "float32")
    prefix, choices = '{"ranking": ["', ['11"', '22"', '33"']
    exact = engine.score_choices(MESSAGES, prefix, choices)
    for fast, slow in zip(auto_engine.score_choices(MESSAGES, prefix, choices), exact, strict=True):
        assert fast == pytest.approx(slow, abs=0.5)


def test_generation_ends_at_the_first_stop_string(auto_engine):
    question = [HumanMessage("Write three sentences about cats.")]
    (free,) = auto_engine.generate([question], max_new_tokens=40)
    (stopped,) = auto_engine.generate([question], max_new_tokens=40, stop=(".",))
    assert stopped.endswith(".") and stopped.count(".") == 1
    assert free.startswith(stopped) and len(free) > len(stopped)


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be one of"):
        pick_dtype("float8")
