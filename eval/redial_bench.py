"""The ReDial recommendation benchmark, comparable to CRSLab and He et al. (CIKM 2023), plus grounding, explanation
faithfulness, memory, beyond-accuracy and latency numbers for the same turns.

    benchmark = load_benchmark(path, catalog, matcher, data_dir, limit)      (eval/datasets.py)
    results, records = run_benchmark(recommender, benchmark, systems, explain_dialogues=200)

Systems, all scored on the same turns with the same memory (the system's own, replayed from the dialogue):
- popularity, dense, cooccurrence, hybrid: the retrieval step alone, with the fusion weights of RETRIEVAL_SYSTEMS;
- llm: the full pipeline with the base model (retrieve -> the LLM orders the first `candidates_in_prompt` ->
  explanations); lora: the same with a LoRA adapter (`convrec eval --adapter DIR`).
Each ranks up to DEPTH items; "seen removed" drops items mentioned earlier in the dialogue from both the list and the
ground truth (the published setting). Explanations are generated for the turns of the first `explain_dialogues`
dialogues only (0 = accuracy only), since they cost seconds per turn on a CPU.
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
from eval.metrics import DEFAULT_METRICS, coverage, intra_list_diversity, mean, novelty, remove_seen
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


def run_benchmark(recommenders: dict[str, Recommender], benchmark: Benchmark, systems: tuple[str, ...], *,
                  explain_dialogues: int = 0, progress: bool = False, seed: int = 0) -> tuple[dict, list[dict]]:
    """Score every system on the benchmark's turns. `recommenders["llm"]` serves the retrieval systems too;
    `recommenders["lora"]` is needed only for the lora system. Returns (results, per-turn records)."""
    _seed_everything(seed)
    base = recommenders["llm"]
    explained = list(dict.fromkeys(t.dialogue_id for t in benchmark.turns))[:explain_dialogues]
    records = [{"dialogue_id": t.dialogue_id, "relevant": sorted(t.relevant), "seen": sorted(t.seen)}
               for t in benchmark.turns]
    vectors: dict[str, object] = {}
    results = {"path": benchmark.path, "format": benchmark.format, "dialogues": benchmark.dialogues,
               "turns": len(benchmark.turns), "depth": DEPTH, "explained_dialogues": len(explained),
               **benchmark.notes,
               "memory": memory_accuracy(benchmark.finals, base.catalog) if benchmark.finals else None,
               "systems": {}}
    for system in systems:
        started = time.perf_counter()
        result = evaluate_system(system, recommenders.get(system, base), benchmark.turns, set(explained), vectors,
                                 records, progress)
        result["seconds"] = round(time.perf_counter() - started, 1)
        results["systems"][system] = result
    return results, records


def evaluate_system(system: str, recommender: Recommender, turns: list[EvalTurn], explained: set[str],
                    vectors: dict, records: list[dict], progress: bool) -> dict:
    """Accuracy, grounding, beyond-accuracy, latency and (LLM systems) explanation numbers of one system."""
    rank = _ranker(recommender, system)
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
    missing = [i for top in tops for i in top if i not in vectors]
    vectors.update(recommender.retriever.index.vectors(list(dict.fromkeys(missing))) if missing else {})
    result = {
        "raw": {label: _rounded(mean(values)) for label, values in raw.items()},
        "seen_removed": {label: _rounded(mean(values)) for label, values in unseen.items()},
        "grounding": _grounding_rates(counts, len(turns), is_llm),
        "beyond": {
            f"coverage@{TOP}": round(coverage(tops, len(catalog)), 4),
            f"diversity@{TOP}": _mean_of(intra_list_diversity(top, vectors) for top in tops),
            f"novelty@{TOP}": _mean_of(novelty(top, catalog.popularity, len(catalog)) for top in tops),
        },
        "latency": {stage: {"p50": round(percentile(v, 50), 4), "p95": round(percentile(v, 95), 4), "turns": len(v)}
                    for stage, v in stages.items()},
    }
    if is_llm:
        result["engine"] = {"name": recommender.engine.name, "model": recommender.engine.model_name,
                            "adapter": getattr(recommender.engine, "adapters", {}).get(recommender.engine.model_name),
                            "dtype": getattr(recommender.engine, "dtype", None),
                            "retrieval_weight": recommender.retrieval_weight}
        result["explanations"] = {"shown": shown.summary(), "generated": drafted.summary()}
    return result


def _ranker(recommender: Recommender, system: str) -> Callable[[EvalTurn, Trace], list[str]]:
    if system in LLM_SYSTEMS:
        return lambda turn, trace: list(recommender.rank(turn.state, turn.text, trace, depth=DEPTH))
    retriever = dataclasses.replace(recommender.retriever, config=RETRIEVAL_SYSTEMS[system])

    def rank(turn: EvalTurn, trace: Trace) -> list[str]:
        with timed_stage(trace, "retrieve"):
            return [c.item_id for c in retriever.candidates(query_from(turn.state, turn.text), DEPTH)]

    return rank


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
    return {"dialogues": len(pairs), **{kind: _prf(*values) for kind, values in counts.items()}}


def _prf(hits: int, predicted: int, actual: int) -> dict:
    precision = hits / predicted if predicted else None
    recall = hits / actual if actual else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else 0.0
    return {"precision": _round(precision), "recall": _round(recall), "f1": round(f1, 4), "predicted": predicted,
            "actual": actual}


def _rounded(pair: tuple[float | None, int]) -> dict:
    value, count = pair
    return {"mean": _round(value), "turns": count}


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
