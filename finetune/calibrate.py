"""Choose, on the validation dialogues, how much the retrieval order counts beside an adapter's ranking.

    calibrate_adapter(settings, adapter_dir)   load the adapter, calibrate, save in its training.json and card
    calibrate(recommender, adapter, valid_path) -> calibration (a dict)

A turn fuses the model's order of its candidates with the retrieval order by reciprocal ranks (`retrieval_weight` for
retrieval, 1 for the model; agent/ranking.py). A fine-tuned model is a different signal from the base model, so the
weight that serves it best differs too. This replays the validation dialogues exactly as the evaluation does, scores
each turn's candidates once with the adapter and once with the base model (the same `score_choices` call a live turn
makes), and measures Recall@10, seen items removed (the evaluation's headline number), of the fused order for every
weight in `WEIGHTS`. The adapter keeps the smallest weight with the best recall (the model counts most on a tie); the
base model's row is recorded beside it so a reader can see what the weight alone would give the base model.

Only turns whose answer is among the ranked candidates can be hits at all, so only those are scored (the others count
as misses for every weight).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from agent.config import Settings
from agent.ranking import fuse_with_retrieval, score_candidates
from agent.turn import Recommender, query_from, rank_prompt
from eval.datasets import load_benchmark
from eval.metrics import Recall, remove_seen
from eval.redial_bench import DEPTH
from finetune.config import TRAINING_FILE, data_path

WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
RECALL_AT_10 = Recall(10)


def calibrate_adapter(settings: Settings, adapter_dir: Path, *, recommender: Recommender | None = None,
                      progress: bool = False) -> dict:
    """Calibrate the adapter in `adapter_dir` (made by `convrec finetune`) on its config's validation file; the result
    goes into its training.json ("calibration") and model card, where `--adapter` finds it. `recommender`: one
    already built from `settings` (training's), whose catalog and index are reused; only the engine is loaded anew."""
    from agent.build import build_recommender, load_engine, named_adapters
    from agent.models import adapter_name
    from finetune.card import write_card

    adapter_dir = Path(adapter_dir)
    training = json.loads((adapter_dir / TRAINING_FILE).read_text(encoding="utf-8"))
    settings = dataclasses.replace(settings, adapters=(str(adapter_dir),), retrieval_weight=None,
                                   engine="transformers")  # the scoring engine, whatever CONVREC_ENGINE says
    if recommender is None:
        recommender, _ = build_recommender(settings, progress=progress)
    else:
        recommender = dataclasses.replace(recommender, engine=load_engine(settings, named_adapters(settings)))
    try:
        valid_file = training["config"]["valid_file"]
        calibration = calibrate(recommender, adapter_name(adapter_dir), data_path(settings, valid_file),
                                limit=training["config"].get("calibrate_dialogues", 0), progress=progress)
        training["calibration"] = {**calibration, "file": valid_file}  # relative to the data dir, like the config
    finally:
        getattr(recommender.engine, "close", lambda: None)()
    (adapter_dir / TRAINING_FILE).write_text(json.dumps(training, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    write_card(adapter_dir)
    return training["calibration"]


def calibrate(recommender: Recommender, adapter: str, valid_path: Path, *, limit: int = 0,
              progress: bool = False) -> dict:
    """The validation Recall@10 of the adapter and of the base model for every weight, and the adapter's weight
    (on the first `limit` dialogues of `valid_path`; 0 = all)."""
    from tqdm import tqdm

    started = time.perf_counter()
    settings, engine = recommender.settings, recommender.engine
    models = {"adapter": engine.using(adapter), "base": engine.using(engine.base_name)}
    benchmark = load_benchmark(valid_path, recommender.catalog, recommender.matcher, settings.data_dir, limit)
    recalls: dict[str, list[list[float]]] = {name: [[] for _ in WEIGHTS] for name in models}
    scored = 0
    for turn in tqdm(benchmark.turns, desc="calibrate", unit="turn", disable=not progress):
        candidates = recommender.retriever.candidates(query_from(turn.state, turn.text),
                                                      max(DEPTH, settings.candidates_in_prompt))
        shown = [c.item_id for c in candidates[: settings.candidates_in_prompt]]
        rest = [c.item_id for c in candidates[settings.candidates_in_prompt:]]
        answerable = bool(set(shown) & set(turn.relevant))
        if answerable:
            scored += 1
            messages = rank_prompt(turn.state, turn.text, candidates[: settings.candidates_in_prompt],
                                   recommender.catalog, settings.n)
        for name, model in models.items():
            by_model = list(range(len(shown)))
            if answerable:
                scores = score_candidates(model, messages, len(shown))
                by_model = sorted(range(len(shown)), key=lambda k: (-scores[k], k))
            for column, weight in enumerate(WEIGHTS):
                order = fuse_with_retrieval(by_model, shown, settings.n, weight, "scored").item_ids if shown else ()
                order, _ = recommender.honour_requests(turn.state, turn.text, (*order, *rest))  # as rank() does
                ranked, relevant = remove_seen(order, turn.relevant, turn.seen)
                value = RECALL_AT_10(ranked, relevant)
                if value is not None:
                    recalls[name][column].append(value)
    means = {name: [round(sum(v) / len(v), 4) if v else 0.0 for v in columns] for name, columns in recalls.items()}
    best = max(means["adapter"])
    weight = WEIGHTS[means["adapter"].index(best)]  # the first (smallest) weight with the best recall
    print(f"calibrated on {len(benchmark.turns)} validation turns ({scored} with the answer among the candidates): "
          f"retrieval weight {weight}, Recall@10 {best} (base model: best {max(means['base'])})", file=sys.stderr)
    return {"file": str(valid_path), "dialogues": benchmark.dialogues, "turns": len(benchmark.turns),
            "turns_scored": scored, "metric": "Recall@10, seen removed", "weights": list(WEIGHTS),
            "recall@10": means, "retrieval_weight": weight, "seconds": round(time.perf_counter() - started, 1)}
