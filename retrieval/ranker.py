"""The learned ranking stage: LightGBM lambdarank models over per-candidate features, loaded from a folder.

    folder/                       made by `convrec ranker` (finetune/ranker.py); the committed one is
      retrieval.txt               finetune/rankers/convrec-ranker
        stage one: orders the retrieval pool (retrieval/features.py FEATURES) -> `LearnedRanker.score`
      with-model.txt              stage two: re-orders the candidates the LLM saw, from their stage-one score and
                                  rank and the model's own log-probability of each (agent/ranking.py)
      ranker.json                 features, prompt-template version, adapter, data, validation numbers (the card's)
      README.md                   the card

`load_ranker` refuses a folder whose features or prompt templates differ from the running code's: rebuild it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.features import FEATURES

RANKER_FILE = "ranker.json"
STAGE_ONE = "retrieval.txt"
STAGE_TWO = "with-model.txt"
MODEL_FEATURES = ("stage_one_score", "stage_one_rank", "model_logprob", "model_margin", "model_rank")
"""Stage two's inputs for each candidate the LLM ranked: where stage one put it, and what the model thinks."""


class RankerError(ValueError):
    """The ranker folder is missing, unreadable or out of date; the message says how to rebuild it."""


def features_version() -> str:
    """A short hash of both stages' feature names: a ranker records it, and is refused when it changes."""
    return hashlib.sha1(json.dumps([FEATURES, MODEL_FEATURES]).encode()).hexdigest()[:12]


@dataclass
class LearnedRanker:
    stage_one: object
    """lightgbm.Booster over FEATURES."""
    stage_two: object | None
    """lightgbm.Booster over MODEL_FEATURES; None when the ranker was built without the model's score."""
    card: dict
    path: Path | None = None

    def score(self, features: np.ndarray) -> np.ndarray:
        """Stage one: a score per pool row (higher is better)."""
        return self.stage_one.predict(features, num_threads=1)

    def rerank(self, stage_one_scores: Sequence[float], model_logprobs: Sequence[float]) -> list[int]:
        """Stage two: the positions of the candidates the LLM saw (in stage-one order), best first."""
        rows = model_feature_rows(stage_one_scores, model_logprobs)
        scores = self.stage_two.predict(rows, num_threads=1)
        return sorted(range(len(scores)), key=lambda k: (-scores[k], k))

    @property
    def adapter(self) -> str | None:
        """The adapter whose scores stage two was trained on (its `model_name`); None without stage two."""
        return self.card.get("adapter") if self.stage_two is not None else None


def model_feature_rows(stage_one_scores: Sequence[float], model_logprobs: Sequence[float]) -> np.ndarray:
    """The MODEL_FEATURES rows of the candidates of one turn, given in stage-one order."""
    logprobs = np.asarray(model_logprobs, dtype=np.float64)
    order = np.argsort(-logprobs, kind="stable")
    model_rank = np.empty(len(logprobs))
    model_rank[order] = np.arange(len(logprobs))
    return np.column_stack([np.asarray(stage_one_scores, dtype=np.float64), np.arange(len(logprobs)),
                            logprobs, logprobs - logprobs.max(), model_rank]).astype(np.float32)


def load_ranker(folder: Path, template_version: str) -> LearnedRanker:
    import lightgbm

    folder = Path(folder)
    try:
        card = json.loads((folder / RANKER_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RankerError(f"{folder}: not a ranker folder ({error}); build one with `convrec ranker --out DIR`") \
            from None
    if card.get("features_version") != features_version():
        raise RankerError(f"{folder} was built for other features ({card.get('features_version')} != "
                          f"{features_version()}): rebuild it with `convrec ranker --out {folder}`")
    if card.get("template_version") != template_version and (folder / STAGE_TWO).exists():
        raise RankerError(f"{folder} was built with other prompt templates ({card.get('template_version')} != "
                          f"{template_version}): rebuild it with `convrec ranker --out {folder}`")
    try:
        stage_one = lightgbm.Booster(model_file=str(folder / STAGE_ONE))
        stage_two = lightgbm.Booster(model_file=str(folder / STAGE_TWO)) if (folder / STAGE_TWO).exists() else None
    except lightgbm.basic.LightGBMError as error:
        raise RankerError(f"{folder}: a model file is unreadable ({error}); rebuild it") from None
    return LearnedRanker(stage_one, stage_two, card, folder)
