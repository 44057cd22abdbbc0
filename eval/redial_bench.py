"""The ReDial recommendation benchmark, comparable to CRSLab and He et al. (CIKM 2023), plus grounding, explanation
faithfulness, memory, beyond-accuracy and latency numbers for the same turns.

    benchmark = load_benchmark(path, catalog, matcher, data_dir, limit)      (eval/datasets.py)
    results, records = run_benchmark(recommender, benchmark, systems, explain_dialogues=200)

Systems, all scored on the same turns with the same memory (the system's own, replayed from the dialogue):
- popularity, dense, cooccurrence (the collaborative model), each generator alone (RETRIEVAL_SYSTEMS);
- hybrid: the retrieval step without the LLM: every generator fused, then the learned ranker's first stage (trained
  on the same turns as its second stage, without the model-score feature; retrieval/ranker.py);
- llm: the full pipeline with the base model (retrieve -> the LLM scores the first `candidates_in_prompt` ->
  explanations); lora: the same with a LoRA adapter (`convrec eval --adapter DIR`), whose scores the ranker's
  second stage combines with the first stage's when it was trained on that adapter.
Each ranks up to DEPTH items; "seen removed" drops items mentioned earlier in the dialogue from both the list and the
ground truth (the published setting). Explanations are generated for the turns of the first `explain_dialogues`
dialogues only (0 = accuracy only), since they cost seconds per turn on a CPU.

Every accuracy mean carries "ci95", a 95% bootstrap interval that resamples dialogues (BOOTSTRAP_SAMPLES draws,
the run's seed); results["paired"] holds the seen-removed differences of the PAIRED comparisons, resampled the same
way with both systems on the same dialogues; each turn's record keeps the seen-removed scores ("scores").
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import defaultdict
from collections.abc import Callable

from agent.turn import Recommender, query_from, timed_stage
from agent.types import SessionState, Trace
from eval.datasets import Benchmark, EvalTurn
from eval.faithfulness import ExplanationStats
from eval.latency import percentile
from eval.metrics import (
    DEFAULT_METRICS,
    bootstrap_interval,
    coverage,
    intra_list_diversity,
    mean,
    novelty,
    paired_difference,
    remove_seen,
)
from retrieval.candidates import FusionConfig
from retrieval.redial import Dialogue

DEPTH = 50
TOP = 10
"""Beyond-accuracy numbers are computed on each turn's top TOP items."""

RETRIEVAL_SYSTEMS = {
    "popularity": FusionConfig(dense=0, cooccurrence=0, popularity=1, constraints=0),
    "dense": FusionConfig(dense=1, cooccurrence=0, popularity=0, constraints=0),
    "cooccurrence": FusionConfig(dense=0, cooccurrence=1, popularity=0, constraints=0),
    "hybrid": FusionConfig(),
}
LLM_SYSTEMS = ("llm", "lora")
ALL_SYSTEMS = (*RETRIEVAL_SYSTEMS, *LLM_SYSTEMS)

PUBLISHED = {
    "GPT-4 zero-shot (He et al. 2023)": {"Recall@1": 0.050, "Recall@10": 0.201},
    "UniCRS (He et al. 2023)": {"Recall@1": 0.050, "Recall@10": 0.215, "Recall@50": 0.413},
}
"""Published anchors (seen and out-of-catalog items removed), shown beside our rows."""

BOOTSTRAP_SAMPLES = 1000
PAIRED = (("lora", "hybrid"), ("llm", "hybrid"), ("lora", "llm"), ("hybrid", "popularity"))
"""Comparisons (a, b) reported as a - b when both systems ran."""
PAIRED_METRICS = ("Recall@1", "Recall@10", "Recall@50", "NDCG@10", "MRR")


def run_benchmark(recommenders: dict[str, Recommender], benchmark: Benchmark, systems: tuple[str, ...], *,
                  explain_dialogues: int = 0, progress: bool = False, seed: int = 0,
                  answerable_only: bool = False) -> tuple[dict, list[dict]]:
    """Score every system on the benchmark's turns. `recommenders["llm"]` serves the retrieval systems too;
    `recommenders["lora"]` is needed only for the lora system. Returns (results, per-turn records).
    `answerable_only` (accuracy-only runs): the LLM scores a turn's candidates only when an answer is among them
    (`AnswerableOnly`); every accuracy number is the same, the LLM systems' latency is not measured."""
    if answerable_only and explain_dialogues:
        raise ValueError("answerable_only is for accuracy-only runs (explain_dialogues=0)")
    _seed_everything(seed)
    base = recommenders["llm"]
    explained = list(dict.fromkeys(t.dialogue_id for t in benchmark.turns))[:explain_dialogues]
    records = [{"dialogue_id": t.dialogue_id, "relevant": sorted(t.relevant), "seen": sorted(t.seen)}
               for t in benchmark.turns]
    vectors: dict[str, object] = {}
    results = {"path": benchmark.path, "format": benchmark.format, "dialogues": benchmark.dialogues,
               "turns": len(benchmark.turns), "depth": DEPTH, "explained_dialogues": len(explained),
               **benchmark.notes,
               "memory": ({**memory_accuracy(benchmark.finals, base.catalog),
                           "read_by": "cue rules + reaction model" if base.reactions else "cue rules"}
                          if benchmark.finals else None),
               "bootstrap": {"unit": "dialogue", "samples": BOOTSTRAP_SAMPLES, "level": 0.95, "seed": seed},
               "answerable_only": answerable_only,
               "systems": {}}
    for system in systems:
        started = time.perf_counter()
        result = evaluate_system(system, recommenders.get(system, base), benchmark.turns, set(explained), vectors,
                                 records, progress, seed=seed, answerable_only=answerable_only)
        result["seconds"] = round(time.perf_counter() - started, 1)
        results["systems"][system] = result
    results["paired"] = paired_differences(records, tuple(results["systems"]), seed)
    return results, records


def evaluate_system(system: str, recommender: Recommender, turns: list[EvalTurn], explained: set[str],
                    vectors: dict, records: list[dict], progress: bool, *, seed: int = 0,
                    answerable_only: bool = False) -> dict:
    """Accuracy, grounding, beyond-accuracy, latency and (LLM systems) explanation numbers of one system; each
    record gets this system's seen-removed scores under record["scores"][system]."""
    scored = [0, 0]  # answerable_only: turns the LLM scored, turns it did not need to
    rank = _ranker(recommender, system, scored if answerable_only else None)
    catalog, n, is_llm = recommender.catalog, recommender.settings.n, system in LLM_SYSTEMS
    raw, unseen = defaultdict(list), defaultdict(list)
    counts = defaultdict(int)
    stages, tops = defaultdict(list), []
    shown, drafted = ExplanationStats(), ExplanationStats()
    for turn, record in zip(_progress(turns, system, progress), records, strict=True):
        trace = Trace()
        ranked = rank(turn, trace)
        trace.timings["understand"] = turn.understand_seconds
        if is_llm and turn.dialogue_id in explained:
            with timed_stage(trace, "explain"):
                recommendations = recommender.explain(turn.state, ranked[:n], trace)
            items = [catalog[r.item_id] for r in recommendations]
            shown.add([r.explanation for r in recommendations], items, turn.state, recommender.checker)
            if recommender.settings.explain_with_llm:
                drafted.add(list(trace.drafts), items, turn.state, recommender.checker)
                counts["composed"] += sum(r.explanation != d for r, d in zip(recommendations, trace.drafts,
                                                                             strict=True))
            counts["explained"] += len(recommendations)
        for stage, seconds in trace.timings.items():
            stages[stage].append(seconds)
        if not is_llm or not explained or turn.dialogue_id in explained:  # totals of whole turns only
            stages["total"].append(sum(trace.timings.values()))
        _count_grounding(counts, ranked, turn.state, trace, catalog, n, is_llm)
        ranked_unseen, relevant_unseen = remove_seen(ranked, turn.relevant, turn.seen)
        for metric in DEFAULT_METRICS:
            raw[metric.label].append(metric(ranked, turn.relevant))
            unseen[metric.label].append(metric(ranked_unseen, relevant_unseen))
        tops.append(ranked_unseen[:TOP])
        record[system] = ranked[:TOP]
        record.setdefault("scores", {})[system] = {label: values[-1] for label, values in unseen.items()}
    missing = [i for top in tops for i in top if i not in vectors]
    vectors.update(recommender.retriever.index.vectors(list(dict.fromkeys(missing))) if missing else {})
    dialogue_ids = [turn.dialogue_id for turn in turns]
    result = {
        "raw": {label: mean_with_interval(values, dialogue_ids, seed) for label, values in raw.items()},
        "seen_removed": {label: mean_with_interval(values, dialogue_ids, seed) for label, values in unseen.items()},
        "grounding": _grounding_rates(counts, len(turns), is_llm),
        "beyond": {
            f"coverage@{TOP}": round(coverage(tops, len(catalog)), 4),
            f"diversity@{TOP}": _mean_of(intra_list_diversity(top, vectors) for top in tops),
            f"novelty@{TOP}": _mean_of(novelty(top, catalog.popularity, len(catalog)) for top in tops),
        },
        "latency": {stage: {"p50": round(percentile(v, 50), 4), "p95": round(percentile(v, 95), 4), "turns": len(v)}
                    for stage, v in stages.items()} if not (is_llm and answerable_only) else {},
    }
    if is_llm and answerable_only:
        result["answerable_only"] = {"scored_turns": scored[0], "unscored_turns": scored[1]}
    if is_llm:
        result["engine"] = {"name": recommender.engine.name, "model": recommender.engine.model_name,
                            "adapter": getattr(recommender.engine, "adapters", {}).get(recommender.engine.model_name),
                            "dtype": getattr(recommender.engine, "dtype", None),
                            "retrieval_weight": recommender.retrieval_weight}
        model_written = counts["explained"] - counts["composed"] if recommender.settings.explain_with_llm else 0
        result["explanations"] = {"shown": shown.summary(), "generated": drafted.summary(),
                                  "model_written_share": (round(model_written / counts["explained"], 4)
                                                          if counts["explained"] else None)}
    return result


def _ranker(recommender: Recommender, system: str,
            scored: list[int] | None = None) -> Callable[[EvalTurn, Trace], list[str]]:
    if system in LLM_SYSTEMS and scored is not None:
        def rank_answerable(turn: EvalTurn, trace: Trace) -> list[str]:
            engine = AnswerableOnly(recommender.engine, turn.relevant, scored, trace)
            answerable = dataclasses.replace(recommender, engine=engine)
            return list(answerable.rank(turn.state, turn.text, trace, depth=DEPTH))

        return rank_answerable
    if system in LLM_SYSTEMS:
        return lambda turn, trace: list(recommender.rank(turn.state, turn.text, trace, depth=DEPTH))
    learned = recommender.retriever.ranker if system == "hybrid" else None  # the generators alone are fused
    retriever = dataclasses.replace(recommender.retriever, config=RETRIEVAL_SYSTEMS[system], ranker=learned)

    def rank(turn: EvalTurn, trace: Trace) -> list[str]:
        with timed_stage(trace, "retrieve"):
            ranked = [c.item_id for c in retriever.candidates(query_from(turn.state, turn.text), DEPTH)]
            if system == "hybrid":  # as the full pipeline does (Recommender.rank): picks match what was asked
                ranked = list(recommender.honour_requests(turn.state, turn.text, tuple(ranked))[0])
            return ranked

    return rank


class AnswerableOnly:
    """The engine of one evaluated turn, for accuracy-only runs: `score_choices` asks the model only when one of the
    choices is an answer of the turn. When none is, re-ordering them cannot change any accuracy metric (the answers
    keep their positions after the shown candidates, seen removed or not, and the request step sorts stably by
    tier), so every choice gets 0.0: the candidates keep the retrieval order. A test checks that the numbers equal a
    full run's. Everything else goes to the engine."""

    def __init__(self, engine, answers: frozenset[str], scored: list[int], trace: Trace) -> None:
        self._engine, self._answers, self._scored, self._trace = engine, answers, scored, trace

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def score_choices(self, messages, prefix: str, choices) -> list[float]:
        if self._answers.isdisjoint(self._trace.candidate_ids):  # the shown candidates (the prompt names letters)
            self._scored[1] += 1
            return [0.0] * len(choices)
        self._scored[0] += 1
        return self._engine.score_choices(messages, prefix, choices)


def _count_grounding(counts: dict, ranked: list[str], state: SessionState, trace: Trace, catalog, n: int,
                     is_llm: bool) -> None:
    counts["ranked"] += len(ranked)
    counts["out_of_catalog"] += sum(i not in catalog for i in ranked)
    counts["repeats"] += sum(i in state.excluded() for i in ranked)
    counts["duplicates"] += len(ranked) - len(set(ranked))
    if is_llm:
        picks = ranked[:n]
        counts["picks"] += len(picks)
        counts["out_of_candidates"] += sum(i not in trace.candidate_ids for i in picks)
        counts["fallback_turns"] += any(note.startswith("fallback") for note in trace.fallbacks)


def _grounding_rates(counts: dict, turns: int, is_llm: bool) -> dict:
    def share(part: str, whole: int) -> float | None:
        return round(counts[part] / whole, 4) if whole else None

    rates = {"out_of_catalog": share("out_of_catalog", counts["ranked"]),
             "repeats": share("repeats", counts["ranked"]), "duplicates": share("duplicates", counts["ranked"])}
    if is_llm:
        rates |= {"out_of_candidates": share("out_of_candidates", counts["picks"]),
                  "fallback_turns": share("fallback_turns", turns),
                  "explanations_composed": share("composed", counts["explained"])}
    return rates


def memory_truth(dialogue: Dialogue, catalog) -> tuple[set[str], set[str]]:
    """What the memory should have learned: the seeker's form says liked (1) or not (0); 2 = did not say."""
    liked = {i for i, form in dialogue.forms.items() if form.liked == 1 and i in catalog}
    disliked = {i for i, form in dialogue.forms.items() if form.liked == 0 and i in catalog}
    return liked, disliked


def memory_accuracy(pairs: list[tuple[SessionState, Dialogue]], catalog) -> dict:
    """Precision, recall and F1 of the final memory's liked and disliked sets, micro-averaged over dialogues.
    Only movies of the dialogue's form count as predictions (the form is the truth only for those)."""
    counts = {"liked": [0, 0, 0], "disliked": [0, 0, 0]}  # true positives, predicted, actual
    for state, dialogue in pairs:
        truth = dict(zip(("liked", "disliked"), memory_truth(dialogue, catalog), strict=True))
        in_dialogue = set(dialogue.forms)
        for kind, predicted in (("liked", set(state.liked)), ("disliked", set(state.disliked))):
            predicted &= in_dialogue
            counts[kind][0] += len(predicted & truth[kind])
            counts[kind][1] += len(predicted)
            counts[kind][2] += len(truth[kind])
    return {"dialogues": len(pairs), **{kind: precision_recall_f1(*values) for kind, values in counts.items()}}


def precision_recall_f1(hits: int, predicted: int, actual: int) -> dict:
    """Precision, recall, F1 (rounded; None where undefined) and the two counts, as the memory's rows show them."""
    precision = hits / predicted if predicted else None
    recall = hits / actual if actual else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else 0.0
    return {"precision": _round(precision), "recall": _round(recall), "f1": round(f1, 4), "predicted": predicted,
            "actual": actual}


def paired_differences(records: list[dict], systems: tuple[str, ...], seed: int) -> dict:
    """{"a - b": {metric: {"difference", "ci95", "a_better", "b_better", "turns", "significant"}}} for the PAIRED
    comparisons whose systems both ran, from the records' seen-removed scores; dialogues resampled for both at once."""
    dialogue_ids = [record["dialogue_id"] for record in records]

    def by_dialogue(system: str, label: str) -> list[list[float | None]]:
        return _by_dialogue([record["scores"][system][label] for record in records], dialogue_ids)

    paired = {}
    for a, b in PAIRED:
        if a in systems and b in systems:
            paired[f"{a} - {b}"] = {
                label: _rounded_difference(paired_difference(by_dialogue(a, label), by_dialogue(b, label),
                                                             samples=BOOTSTRAP_SAMPLES, seed=seed))
                for label in PAIRED_METRICS}
    return paired


def _rounded_difference(result: dict) -> dict:
    interval = result["interval"]
    return {"difference": _round(result["difference"]),
            "ci95": None if interval is None else [_round(x) for x in interval],
            **{key: result[key] for key in ("a_better", "b_better", "turns", "significant")}}


def mean_with_interval(values: list[float | None], dialogue_ids: list[str], seed: int) -> dict:
    """Mean, scored turns and the 95% bootstrap interval over dialogues of one metric's per-turn values."""
    value, count = mean(values)
    interval = bootstrap_interval(_by_dialogue(values, dialogue_ids), samples=BOOTSTRAP_SAMPLES, seed=seed)
    return {"mean": _round(value), "turns": count, "ci95": None if interval is None else [_round(x) for x in interval]}


def _by_dialogue(values: list, dialogue_ids: list[str]) -> list[list]:
    """Per-turn values grouped by dialogue, in order of first appearance."""
    groups = defaultdict(list)
    for value, dialogue_id in zip(values, dialogue_ids, strict=True):
        groups[dialogue_id].append(value)
    return list(groups.values())


def _mean_of(values) -> float | None:
    return _round(mean(values)[0])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _progress(turns: list[EvalTurn], system: str, enabled: bool):
    if not enabled:
        return turns
    from tqdm import tqdm

    return tqdm(turns, desc=f"{system:>12}", unit="turn", dynamic_ncols=True)


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
