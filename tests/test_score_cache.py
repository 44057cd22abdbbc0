"""The evaluation's score cache returns exactly what the engine computed, shares work across processes, and leaves
everything else to the engine."""

from __future__ import annotations

from langchain_core.messages import HumanMessage

from agent.engines import ScoringEngine, StructuredEngine
from eval.score_cache import ScoreCachingEngine


class _Engine:
    name, base_name = "fake", "base"
    model_names = ("adapter", "base")

    def __init__(self, model_name="adapter"):
        self.model_name, self.calls = model_name, 0

    def using(self, model_name):
        return _Engine(model_name)

    def generate(self, conversations, max_new_tokens=64, stop=()):
        return ["text"] * len(conversations)

    def score_choices(self, messages, prefix, choices):
        self.calls += 1
        return [float(len(c)) + (0.5 if self.model_name == "base" else 0.0) for c in choices]


def test_a_cached_score_is_the_computed_score_and_is_not_computed_twice(tmp_path) -> None:
    engine = _Engine()
    cached = ScoreCachingEngine(engine, tmp_path / "scores.jsonl")
    messages = [HumanMessage("hello")]
    first = cached.score_choices(messages, "{", ["1", "22"])
    assert cached.score_choices(messages, "{", ["1", "22"]) == first == [1.0, 2.0]
    assert engine.calls == 1 and (cached.hits, cached.misses) == (1, 1)
    assert cached.score_choices([HumanMessage("other")], "{", ["1", "22"]) == first
    assert engine.calls == 2  # another prompt is another key


def test_another_process_reads_what_the_first_wrote_and_models_do_not_mix(tmp_path) -> None:
    path = tmp_path / "scores.jsonl"
    ScoreCachingEngine(_Engine(), path).score_choices([HumanMessage("hi")], "{", ["7"])
    later = ScoreCachingEngine(_Engine(), path)
    assert later.score_choices([HumanMessage("hi")], "{", ["7"]) == [1.0] and later.hits == 1
    base = later.using("base")
    assert base.score_choices([HumanMessage("hi")], "{", ["7"]) == [1.5] and base.misses == 1


def test_the_wrapper_is_a_scoring_engine_and_nothing_more(tmp_path) -> None:
    cached = ScoreCachingEngine(_Engine(), tmp_path / "scores.jsonl")
    assert isinstance(cached, ScoringEngine) and not isinstance(cached, StructuredEngine)
    assert cached.generate([[HumanMessage("x")]]) == ["text"] and cached.model_name == "adapter"


def test_a_retrained_adapter_under_the_same_name_does_not_reuse_old_scores(tmp_path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v1")
    engine = _Engine()
    engine.adapters = {"adapter": str(adapter)}
    path = tmp_path / "scores.jsonl"
    ScoreCachingEngine(engine, path).score_choices([HumanMessage("hi")], "{", ["7"])
    (adapter / "adapter_model.safetensors").write_bytes(b"weights v2")
    retrained = ScoreCachingEngine(engine, path)
    retrained.score_choices([HumanMessage("hi")], "{", ["7"])
    assert (retrained.hits, retrained.misses) == (0, 1)
