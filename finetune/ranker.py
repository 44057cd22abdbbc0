"""Train the learned ranker (`convrec ranker --out DIR`): which collaborative model, then two LightGBM stages.

    train_ranker(recommender, config, out) -> card
      1. data       the 3,358 training dialogues (retrieval.redial.TRAINING_FILES), replayed through understand +
                    memory exactly as the evaluation replays a dev dialogue; validation (100) for selection only
      2. folds      every training dialogue gets one of `folds` folds; popularity and the collaborative model are
                    fitted once per fold on the other folds, so a training turn's features never come from a model
                    that saw its dialogue (k-fold cross-fitting)
      3. compare    each collaborative model of COLLABORATIVE_MODELS alone, Recall@10/50 on validation -> keep the best
      4. stage one  lambdarank over the pool's features (retrieval/features.py), on split A: train_sample and the
                    train_extra dialogues not in split B; early stopping on validation
      5. stage two  on split B (a seeded share of train_extra, finetune/crossfit.py: dialogues held out of stage
                    one and of the adapter's examples): stage one's top `candidates_in_prompt` of a sample of turns,
                    scored by the adapter (`score_choices`, the live turn's call) -> the weight of the model's
                    log-probability beside the stage-one score (MODEL_WEIGHTS) with the best NDCG@10 there; its
                    5-fold cross-validated gain over stage one alone on split B and its effect on validation are
                    recorded beside it
      6. save       retrieval.txt, ranker.json and README.md (the card)

Split B turns are scored by the LLM only where stage one's shown candidates hold the answer (the others carry no
ranking signal); the card says how many.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.ranking import score_candidates
from agent.turn import Recommender, query_from, rank_prompt
from eval.datasets import EvalTurn, load_benchmark, replay
from eval.metrics import Recall, paired_difference, remove_seen
from finetune.crossfit import SPLIT_B_SHARE, assign_folds
from finetune.crossfit import fold_retrievers as fold_retrievers_of
from finetune.crossfit import split_b as split_b_of
from prompts import TEMPLATE_VERSION
from retrieval.candidates import FusionConfig, HybridRetriever
from retrieval.collaborative import COLLABORATIVE_MODELS
from retrieval.embeddings import EmbeddingCache
from retrieval.features import FEATURES, pool_features
from retrieval.ranker import (
    MODEL_FEATURES,
    MODEL_WEIGHTS,
    RANKER_FILE,
    STAGE_ONE,
    LearnedRanker,
    blend,
    features_version,
)
from retrieval.redial import TRAINING_FILES, VALIDATION_FILE, dialogue_items, load_redial_dialogues, training_paths

LGB_PARAMS = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": 0.05,
              "num_leaves": 31, "min_data_in_leaf": 40, "feature_fraction": 0.9, "bagging_fraction": 0.8,
              "bagging_freq": 1, "lambdarank_truncation_level": 20, "verbosity": -1, "num_threads": 2,
              "deterministic": True, "force_row_wise": True}


@dataclass
class RankerConfig:
    folds: int = 5
    """Cross-fitting folds for popularity and the collaborative model on training turns."""
    split_b_share: float = SPLIT_B_SHARE
    """Share of train_extra's dialogues held out of stage one for stage two (the adapter never saw them)."""
    model_turns: int = 300
    """Split-B turns scored by the LLM for stage two (~3.5 s each on a 2-core CPU in float32); only turns whose
    answer is among the shown candidates count (the others cannot tell one weight from another)."""
    rounds: int = 400
    """Boosting rounds at most (early stopping on validation NDCG@10 after 40 without gain)."""
    max_dialogues: int = 0
    """Use only the first N training dialogues (0 = all); tests use a handful."""
    valid_dialogues: int = 0
    """Use only the first N validation dialogues (0 = all)."""
    with_model: bool = True
    """Train stage two (needs an adapter to score with)."""
    stage_two_only: bool = False
    """Keep the stage one already in the output folder and (re)train stage two only (e.g. for a new adapter)."""
    seed: int = 0


RECALL = {n: Recall(n) for n in (1, 10, 50)}


def train_ranker(recommender: Recommender, config: RankerConfig, out: Path, *, progress: bool = False) -> dict:
    started = time.perf_counter()
    data_dir = Path(recommender.settings.data_dir)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if progress else (lambda *a: None)

    by_file = [load_redial_dialogues(path) for path in training_paths(data_dir)]  # train_sample, then train_extra
    dialogues = [d for file in by_file for d in file][: config.max_dialogues or None]
    extra_ids = {d.dialogue_id for file in by_file[1:] for d in file}
    split_b = split_b_of(dialogues, extra_ids, config.split_b_share, config.seed)
    items = {d.dialogue_id: dialogue_items(d) for d in dialogues}
    say(f"{len(dialogues)} training dialogues ({len(split_b)} in split B), replaying ...")
    catalog, matcher = recommender.catalog, recommender.matcher
    turns = [t for d in dialogues for t in replay(d, catalog, matcher)[0]]
    valid = load_benchmark(data_dir / VALIDATION_FILE, catalog, matcher, data_dir, config.valid_dialogues).turns
    say(f"{len(turns)} training turns, {len(valid)} validation turns ({time.perf_counter() - started:.0f} s)")
    cache = EmbeddingCache(recommender.retriever.embedder, [t.text for t in (*turns, *valid) if t.text.strip()])
    recommender = dataclasses.replace(recommender, retriever=dataclasses.replace(recommender.retriever,
                                                                                 embedder=cache))

    if config.stage_two_only:  # keep the stage one (and its card) already in `out`
        import lightgbm

        card = json.loads((out / RANKER_FILE).read_text(encoding="utf-8"))
        stage_one = lightgbm.Booster(model_file=str(out / STAGE_ONE))
        make = COLLABORATIVE_MODELS[card["collaborative"]]
        full = dataclasses.replace(recommender.retriever, collaborative=make(list(items.values())), ranker=None)
        fold_of, fold_retrievers = fold_retrievers_of(full, dialogues, config.folds, config.seed)
        served = dataclasses.replace(full, ranker=LearnedRanker(stage_one, None, {}))
        card |= {"features_version": features_version(), "model_features": list(MODEL_FEATURES),
                 "template_version": TEMPLATE_VERSION}
    else:
        card, stage_one, full, served, fold_of, fold_retrievers = _stage_one(recommender, config, dialogues, items,
                                                                             turns, valid, split_b, say, started)
        card["data"] = {"training_files": list(TRAINING_FILES), "validation_file": VALIDATION_FILE,
                        "training_dialogues": len(dialogues), "training_turns": len(turns),
                        "split_b_dialogues": len(split_b), "validation_turns": len(valid)}
        card["config"] = dataclasses.asdict(config)
        out.mkdir(parents=True, exist_ok=True)
        stage_one.save_model(str(out / STAGE_ONE))
    card.pop("adapter", None)
    card.pop("stage_two", None)
    if config.with_model:
        b_turns = [t for t in turns if t.dialogue_id in split_b]
        random.Random(config.seed).shuffle(b_turns)
        info = train_stage_two(recommender, served, fold_retrievers, fold_of, b_turns, valid, config, say)
        card |= {"adapter": recommender.engine.model_name, "stage_two": info,
                 "stage_two_config": dataclasses.asdict(config)}
    card["seconds" if not config.stage_two_only else "stage_two_seconds"] = round(time.perf_counter() - started, 1)
    (out / RANKER_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    write_ranker_card(card, out)
    return card


def _stage_one(recommender, config, dialogues, items, turns, valid, split_b, say, started):
    """Choose the collaborative model on validation, then fit stage one on split A's cross-fitted pools."""
    comparison, models = compare_collaborative(recommender.retriever, items, valid)
    chosen = max(comparison, key=lambda name: (comparison[name]["Recall@10"], comparison[name]["Recall@50"]))
    say(f"collaborative models on validation: {comparison}; kept {chosen}")
    full = dataclasses.replace(recommender.retriever, collaborative=models[chosen], ranker=None)
    fold_of, fold_retrievers = fold_retrievers_of(full, dialogues, config.folds, config.seed)
    a_turns = [t for t in turns if t.dialogue_id not in split_b]
    train_groups = _groups(a_turns, lambda t: fold_retrievers[fold_of[t.dialogue_id]])
    valid_groups = _groups(valid, lambda t: full)
    say(f"stage one: {len(train_groups[1])} training turns with the answer in the pool "
        f"({time.perf_counter() - started:.0f} s)")
    stage_one, stage_one_info = _fit(train_groups, valid_groups, config.rounds, config.seed)
    served = dataclasses.replace(full, ranker=LearnedRanker(stage_one, None, {}))
    validation = {"fused (no ranker)": _recall(full, valid), "stage one": _recall(served, valid)}
    say(f"validation: {validation}")
    card = {"features_version": features_version(), "features": list(FEATURES), "model_features": list(MODEL_FEATURES),
            "template_version": TEMPLATE_VERSION, "collaborative": chosen, "collaborative_comparison": comparison,
            "cross_fitting": f"{config.folds}-fold over training dialogues (popularity and collaborative model)",
            "stage_one": stage_one_info, "validation": validation}
    return card, stage_one, full, served, fold_of, fold_retrievers


def compare_collaborative(retriever: HybridRetriever, items: dict[str, list[str]],
                          valid: list[EvalTurn]) -> tuple[dict, dict]:
    """Each collaborative model alone (fitted on every training dialogue), scored on validation: (recall by name,
    the fitted model by name)."""
    alone = FusionConfig(dense=0, cooccurrence=1, popularity=0, constraints=0)
    models = {name: make(list(items.values())) for name, make in COLLABORATIVE_MODELS.items()}
    recall = {name: _recall(dataclasses.replace(retriever, collaborative=model, config=alone, ranker=None), valid)
              for name, model in models.items()}
    return recall, models


def _groups(turns: list[EvalTurn], retriever_of) -> tuple[np.ndarray, list[int], np.ndarray]:
    """(features, group sizes, labels) of the turns whose pool holds an answer (the others teach nothing)."""
    features, sizes, labels = [], [], []
    for turn in turns:
        retriever = retriever_of(turn)
        query = query_from(turn.state, turn.text)
        pool = retriever.pool(query)
        label = np.array([i in turn.relevant for i in pool.item_ids], dtype=np.float32)
        if not label.any():
            continue
        features.append(pool_features(pool, query, retriever))
        sizes.append(len(label))
        labels.append(label)
    return np.concatenate(features), sizes, np.concatenate(labels)


def _fit(train, valid, rounds: int, seed: int):
    import lightgbm

    started = time.perf_counter()
    train_set = lightgbm.Dataset(train[0], train[2], group=train[1], free_raw_data=False)
    valid_set = lightgbm.Dataset(valid[0], valid[2], group=valid[1], reference=train_set)
    booster = lightgbm.train({**LGB_PARAMS, "seed": seed}, train_set, num_boost_round=rounds,
                             valid_sets=[valid_set], callbacks=[lightgbm.early_stopping(40, verbose=False)])
    return booster, {"rows": int(len(train[2])), "turns": len(train[1]), "rounds": booster.best_iteration,
                     "validation_ndcg@10": round(booster.best_score["valid_0"]["ndcg@10"], 4),
                     "seconds": round(time.perf_counter() - started, 1)}


def train_stage_two(recommender: Recommender, served: HybridRetriever, fold_retrievers, fold_of, b_turns, valid,
                    config: RankerConfig, say) -> dict:
    """Stage two on split B: each sampled turn's shown candidates (stage one, cross-fitted features) scored by the
    adapter; the weight of its log-probability with the best NDCG@10 there; validation scored likewise with the
    full models, to show what the weight does on turns nothing was chosen on."""
    started = time.perf_counter()
    shown_n = recommender.settings.candidates_in_prompt

    def scored(turns, retriever_of, limit) -> list[Scored]:
        out: list[Scored] = []
        for turn in turns:
            if len(out) == limit:
                break
            retriever = retriever_of(turn)
            shown = retriever.candidates(query_from(turn.state, turn.text), shown_n)
            label = np.array([c.item_id in turn.relevant for c in shown])
            if not label.any():
                continue
            messages = rank_prompt(turn.state, turn.text, shown, recommender.catalog, recommender.settings.n)
            logprobs = score_candidates(recommender.engine, messages, len(shown))
            out.append(Scored(turn.dialogue_id, np.array([c.score for c in shown]), np.array(logprobs), label))
            if len(out) % 50 == 0:
                say(f"  stage two: {len(out)} turns scored ({time.perf_counter() - started:.0f} s)")
        return out

    staged = [dataclasses.replace(r, ranker=served.ranker) for r in fold_retrievers]
    train = scored(b_turns, lambda t: staged[fold_of[t.dialogue_id]], config.model_turns)
    held = scored(valid, lambda t: served, len(valid))
    by_weight = {w: _quality(train, w) for w in MODEL_WEIGHTS}
    weight = max(MODEL_WEIGHTS, key=lambda w: (by_weight[w]["ndcg@10"], -w))
    info = {"weight": weight, "scored_training_turns": len(train), "scored_validation_turns": len(held),
            "split_b_by_weight": {str(w): q for w, q in by_weight.items()},
            "split_b_cross_validated": _cross_validated(train, config.seed),
            "validation": {"stage one": _quality(held, 0.0), "stage two": _quality(held, weight)},
            "seconds_with_scoring": round(time.perf_counter() - started, 1)}
    say(f"stage two: weight {weight}; {json.dumps(info)}")
    return info


@dataclass
class Scored:
    """One turn's shown candidates as stage two sees them (stage-one order): scores, log-probabilities, answers."""
    dialogue_id: str
    stage_one: np.ndarray
    logprobs: np.ndarray
    label: np.ndarray


def _quality(turns: list[Scored], weight: float) -> dict:
    """Hits@10 and NDCG@10 (the answer among the shown candidates) of the blend with `weight`."""
    hits, ndcg = [], []
    for turn in turns:
        order = np.argsort(-blend(turn.stage_one, turn.logprobs, weight), kind="stable")
        ranked = turn.label[order][:10]
        hits.append(bool(ranked.any()))
        ndcg.append(float((ranked / np.log2(np.arange(2, 12))).sum() / (1 / np.log2(np.arange(2, 12)))[
            : int(turn.label.sum())].sum()))
    return {"turns": len(turns), "hits@10": int(sum(hits)), "ndcg@10": round(float(np.mean(ndcg)), 4) if turns
            else None}


def _cross_validated(turns: list[Scored], seed: int, folds: int = 5) -> dict:
    """Out-of-fold effect of choosing the weight on split B: folds of dialogues; each fold's turns ranked with the
    weight chosen on the other folds, beside stage one alone on the same turns."""
    fold_of = assign_folds(sorted({t.dialogue_id for t in turns}), folds, seed)
    one, two, weights = [], [], []
    for fold in range(folds):
        rest = [t for t in turns if fold_of[t.dialogue_id] != fold]
        held = [t for t in turns if fold_of[t.dialogue_id] == fold]
        weight = max(MODEL_WEIGHTS, key=lambda w: (_quality(rest, w)["ndcg@10"], -w))
        weights.append(weight)
        one += [_quality([t], 0.0) for t in held]
        two += [_quality([t], weight) for t in held]
    by_dialogue: dict[str, tuple[list[float], list[float]]] = {}
    for turn, a, b in zip([t for f in range(folds) for t in turns if fold_of[t.dialogue_id] == f], one, two,
                          strict=True):
        by_dialogue.setdefault(turn.dialogue_id, ([], []))
        by_dialogue[turn.dialogue_id][0].append(b["ndcg@10"])
        by_dialogue[turn.dialogue_id][1].append(a["ndcg@10"])
    gain = paired_difference([v[0] for v in by_dialogue.values()], [v[1] for v in by_dialogue.values()], seed=seed)
    return {"weights": weights, "stage_one_hits@10": sum(q["hits@10"] for q in one),
            "stage_two_hits@10": sum(q["hits@10"] for q in two), "ndcg@10_gain": gain}


def _recall(retriever: HybridRetriever, turns: list[EvalTurn], depth: int = 50) -> dict:
    """Recall@1/10/50, seen removed, of the retriever alone on the turns (the evaluation's headline setting)."""
    values: dict[str, list[float]] = {f"Recall@{n}": [] for n in RECALL}
    for turn in turns:
        ranked = [c.item_id for c in retriever.candidates(query_from(turn.state, turn.text), depth)]
        ranked, relevant = remove_seen(ranked, turn.relevant, turn.seen)
        for n, metric in RECALL.items():
            value = metric(ranked, relevant)
            if value is not None:
                values[f"Recall@{n}"].append(value)
    return {label: round(float(np.mean(v)), 4) if v else None for label, v in values.items()}


def write_ranker_card(card: dict, out: Path) -> None:
    data = card["data"]
    lines = [
        "# convrec learned ranker", "",
        "Two LightGBM lambdarank stages (retrieval/ranker.py), built by `convrec ranker` (finetune/ranker.py).", "",
        f"- Data: {data['training_dialogues']} training dialogues ({', '.join(data['training_files'])}), "
        f"{data['training_turns']} replayed turns; selection on {data['validation_file']} "
        f"({data['validation_turns']} turns). The dev set chose nothing.",
        f"- Cross-fitting: {card['cross_fitting']}. Stage two learns on split B ({data['split_b_dialogues']} "
        "train_extra dialogues held out of stage one and of the adapter's examples; finetune/crossfit.py).",
        f"- Collaborative model kept: `{card['collaborative']}`.",
        f"- Features (stage one): {', '.join(card['features'])}.",
        f"- Features (stage two): {', '.join(card['model_features'])}; adapter `{card.get('adapter')}`.",
        f"- Prompt templates: {card['template_version']}; features version {card['features_version']}.",
        f"- Built in {card.get('seconds', 0):.0f} s.", "",
        "## Collaborative models alone on validation (seen removed)", "",
        "| model | Recall@1 | Recall@10 | Recall@50 |", "|---|---|---|---|",
        *(f"| {name} | {r['Recall@1']} | {r['Recall@10']} | {r['Recall@50']} |"
          for name, r in card["collaborative_comparison"].items()), "",
        "## Validation (seen removed)", "",
        "| order | Recall@1 | Recall@10 | Recall@50 |", "|---|---|---|---|",
        *(f"| {name} | {r['Recall@1']} | {r['Recall@10']} | {r['Recall@50']} |"
          for name, r in card["validation"].items()), "",
        f"Stage one: {json.dumps(card['stage_one'])}", "",
    ]
    if "stage_two" in card:
        two = card["stage_two"]
        cv, gain = two["split_b_cross_validated"], two["split_b_cross_validated"]["ndcg@10_gain"]
        low, high = gain["interval"] or (None, None)
        lines += ["## Stage two: the model's score", "",
                  f"Adapter `{card['adapter']}`; {two['scored_training_turns']} split-B turns whose answer is among "
                  f"the shown candidates scored by it, and "
                  f"{two['scored_validation_turns']} such validation turns. Order: stage-one score + weight x "
                  f"log-probability; kept weight **{two['weight']}** (best NDCG@10 on split B).", "",
                  "| weight | split-B hits@10 | split-B NDCG@10 |", "|---|---|---|",
                  *(f"| {w} | {q['hits@10']} | {q['ndcg@10']} |" for w, q in two["split_b_by_weight"].items()), "",
                  f"5-fold cross-validated on split B (weight chosen on four folds, scored on the fifth; weights "
                  f"{cv['weights']}): hits@10 {cv['stage_one_hits@10']} (stage one) -> {cv['stage_two_hits@10']}; "
                  f"NDCG@10 gain {gain['difference']:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}] (bootstrap over "
                  "dialogues).", "",
                  f"Validation (chose nothing): stage one {json.dumps(two['validation']['stage one'])}, stage two "
                  f"{json.dumps(two['validation']['stage two'])}. Stage two took "
                  f"{card.get('stage_two_seconds', two['seconds_with_scoring']):.0f} s.", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
