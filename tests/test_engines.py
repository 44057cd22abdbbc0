"""The real SmolLM2 through transformers: loading from the registry package, scoring, generation."""

from __future__ import annotations

import pytest
import torch
from langchain_core.messages import HumanMessage, SystemMessage

from agent.config import Settings
from agent.engines import MIN_SHARED_PREFIX, PrefixCache, TransformersEngine, common_length, pick_dtype
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


@pytest.mark.parametrize("choices", [['11"', '22"', '333"'], ["A", "B", "C"], ["A", '22"', "C", '333"']],
                         ids=["several tokens", "one token (no second pass)", "mixed"])
def test_scores_equal_the_log_probability_of_a_full_forward_pass(engine, choices):
    prefix = '{"ranking": ["'
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
    auto_engine.prefix_caching = False  # the same prompt twice, both prefilled whole (bfloat16: see below)
    try:
        (free,) = auto_engine.generate([question], max_new_tokens=40)
        (stopped,) = auto_engine.generate([question], max_new_tokens=40, stop=(".",))
    finally:
        auto_engine.prefix_caching = True
    assert stopped.endswith(".") and stopped.count(".") == 1
    assert free.startswith(stopped) and len(free) > len(stopped)


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be one of"):
        pick_dtype("float8")


def template_prompts() -> tuple[list, list]:
    """Rank prompts of two sessions and the explanation prompts of one turn, rendered from the real templates."""
    from prompts import render_prompt

    candidates = "\n".join(f"{100 + k}: Film {k} ({1990 + k}); Comedy; directed by Jane Roe {k}" for k in range(8))
    rank = [render_prompt("rank", memory=f"Liked: {liked}\nDisliked: none", conversation=f"User: {text}",
                          candidates=candidates, n=3)
            for liked, text in (("The Matrix (1999)", "something funnier"), ("Heat (1995)", "a crime film"))]
    explain = [render_prompt("explain", liked="The Matrix (1999)", item=f"Film {k} ({1990 + k})",
                             facts=f"Film {k} ({1990 + k}); Comedy{', Drama' * k}; directed by Jane Roe {k}")
               for k in range(4)]
    return rank, explain


def test_the_prefix_cache_and_the_batch_give_what_one_prompt_at_a_time_gives(engine):
    """The rank prompts' and the explanation prompts' shared starts are computed once (prefix cache) and the
    explanations are generated as one batch, with prompt lookup: in float32, the same ranking, the same scores and
    the same greedy text as every prompt alone, prefilled whole and decoded one token per step. (In bfloat16 the last
    bits depend on the shapes computed, so a greedy text can differ where two tokens tie: see the bfloat16 test.)"""
    rank, explain = template_prompts()
    choices = [f'{100 + k}"' for k in range(8)]
    engine.prefix_caching, engine.prompt_lookup = False, False
    alone_scores = [engine.score_choices(messages, '{"ranking": ["', choices) for messages in rank]
    alone_texts = [engine.generate([messages], max_new_tokens=32, stop=(".",))[0] for messages in explain]
    engine.prefix_caching, engine.prompt_lookup = True, True
    for _ in range(2):  # the second time from the prefix cache
        scores = [engine.score_choices(messages, '{"ranking": ["', choices) for messages in rank]
        assert engine.generate(explain, max_new_tokens=32, stop=(".",)) == alone_texts
        for cached, alone in zip(scores, alone_scores, strict=True):
            assert sorted(range(8), key=lambda k: -cached[k]) == sorted(range(8), key=lambda k: -alone[k])
            assert cached == pytest.approx(alone, abs=1e-4)
    assert engine._prefixes.longest(engine.model_name, engine._encode_prompt(explain[0]))[0] >= 100


def test_decoding_writes_what_transformers_generate_writes_one_prompt_at_a_time(engine):
    """The batch with the prefix cache and prompt lookup (agent/decoding.py) against transformers' own greedy
    `generate`, one prompt at a time, with its stop-string criterion: the same text."""
    _, explain = template_prompts()
    prompts = [*explain, [HumanMessage("Write three sentences about cats.")]]
    tokenizer = engine.tokenizer
    expected = []
    for messages in prompts:
        ids = torch.tensor([engine._encode_prompt(messages)])
        out = engine.model.generate(ids, max_new_tokens=40, do_sample=False, stop_strings=["."], tokenizer=tokenizer,
                                    pad_token_id=tokenizer.pad_token_id)
        expected.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    assert engine.generate(prompts, max_new_tokens=40, stop=(".",)) == expected
    assert any(text.endswith(".") for text in expected)  # the stop string ended some, max_new_tokens others


def test_a_template_start_is_reused_when_turns_alternate_between_templates(engine):
    """A turn scores a rank prompt, then generates explanations, then the next turn scores a rank prompt again: the
    rank template's fixed start is kept and reused although the prompt just before was another template's."""
    rank, explain = template_prompts()
    engine._prefixes = PrefixCache()
    engine._recent.clear()
    choices = [f'{100 + k}"' for k in range(8)]
    for messages in (rank[0], explain, rank[1], explain, rank[0]):
        if messages is explain:
            engine.generate(explain, max_new_tokens=4)
        else:
            engine.score_choices(messages, '{"ranking": ["', choices)
    kept, _ = engine._prefixes.longest(engine.model_name, engine._encode_prompt(rank[0]))
    fixed = common_length(engine._encode_prompt(rank[0]), engine._encode_prompt(rank[1]))
    assert kept >= fixed >= MIN_SHARED_PREFIX


def test_a_kept_start_holds_the_memory_of_its_own_positions_only(engine):
    """The cache handed to `keep` covers a whole prompt; the kept copy of its start must not hold the rest (a cropped
    view would keep the whole storage alive: the server's memory grew with every longer prompt)."""
    ids = engine._encode_prompt(MESSAGES) * 4
    with torch.inference_mode():
        cache = engine.model(torch.tensor([ids]), use_cache=True).past_key_values
    prefixes = PrefixCache()
    prefixes.keep(engine.model_name, ids[:40], cache)
    layers = engine.model.config.num_hidden_layers
    per_position = 2 * layers * engine.model.config.num_key_value_heads * engine.model.config.head_dim * 4
    assert prefixes.nbytes() == 40 * per_position
    assert prefixes.longest(engine.model_name, ids)[0] == 40


def test_in_bfloat16_the_cached_ranking_is_the_same_but_for_near_ties(auto_engine):
    """bfloat16 keeps ~3 significant digits and its last bits depend on where a prefill is split, so a score moves
    by up to ~0.3 with the prefix cache: two candidates further apart than that keep their order."""
    rank, _ = template_prompts()
    choices = [f'{100 + k}"' for k in range(8)]
    auto_engine.prefix_caching = False
    alone = [auto_engine.score_choices(messages, '{"ranking": ["', choices) for messages in rank]
    auto_engine.prefix_caching = True
    cached = [auto_engine.score_choices(messages, '{"ranking": ["', choices) for messages in rank * 2]
    for one, other in zip(cached, alone * 2, strict=True):
        assert one == pytest.approx(other, abs=0.5)
        for a in range(8):
            for b in range(8):
                if other[a] > other[b] + 0.5:
                    assert one[a] > one[b]
