"""The learned ranking stage, loaded from a folder: stage one a LightGBM lambdarank model over per-candidate
features, stage two one learned weight for the model's own score.

    folder/                       made by `convrec ranker` (finetune/ranker.py); the committed one is
      retrieval.txt               finetune/rankers/convrec-ranker
        stage one: orders the retrieval pool (retrieval/features.py FEATURES) -> `LearnedRanker.score`
      ranker.json                 features, prompt-template version, data, validation numbers (the card's), and
                                  stage two: the adapter and its `weight`; the candidates the LLM saw are re-ordered
                                  by stage-one score + weight x the model's log-probability (agent/ranking.py)
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
MODEL_FEATURES = ("stage_one_score", "model_logprob")
"""Stage two's inputs for each candidate the LLM ranked: stage one's score and the model's log-probability of it."""
MODEL_WEIGHTS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
"""The weights of the model's log-probability that `convrec ranker` tries (0: stage one's order unchanged)."""


class RankerError(ValueError):
    """The ranker folder is missing, unreadable or out of date; the message says how to rebuild it."""


def features_version() -> str:
    """A short hash of both stages' feature names: a ranker records it, and is refused when it changes."""
    return hashlib.sha1(json.dumps([FEATURES, MODEL_FEATURES]).encode()).hexdigest()[:12]


@dataclass
class LearnedRanker:
    stage_one: object
    """lightgbm.Booster over FEATURES."""
    model_weight: float | None
    """Stage two: the weight of the model's log-probability beside the stage-one score; None when the ranker was
    built without the model's score."""
    card: dict
    path: Path | None = None

    def score(self, features: np.ndarray) -> np.ndarray:
        """Stage one: a score per pool row (higher is better)."""
        return self.stage_one.predict(features, num_threads=1)

    def rerank(self, stage_one_scores: Sequence[float], model_logprobs: Sequence[float]) -> list[int]:
        """Stage two: the positions of the candidates the LLM saw (in stage-one order), best first."""
        scores = blend(stage_one_scores, model_logprobs, self.model_weight or 0.0)
        return sorted(range(len(scores)), key=lambda k: (-scores[k], k))

    @property
    def adapter(self) -> str | None:
        """The adapter whose scores stage two was trained on (its `model_name`); None without stage two."""
        return self.card.get("adapter") if self.model_weight is not None else None


def blend(stage_one_scores: Sequence[float], model_logprobs: Sequence[float], weight: float) -> np.ndarray:
    """Stage two's score of each candidate: stage-one score + weight x the model's log-probability."""
    return np.asarray(stage_one_scores, dtype=np.float64) + weight * np.asarray(model_logprobs, dtype=np.float64)


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
    model_weight = card.get("stage_two", {}).get("weight") if card.get("adapter") else None
    if card.get("template_version") != template_version and model_weight is not None:
        raise RankerError(f"{folder} was built with other prompt templates ({card.get('template_version')} != "
                          f"{template_version}): rebuild it with `convrec ranker --out {folder}`")
    try:
        stage_one = lightgbm.Booster(model_file=str(folder / STAGE_ONE))
    except lightgbm.basic.LightGBMError as error:
        raise RankerError(f"{folder}: a model file is unreadable ({error}); rebuild it") from None
    return LearnedRanker(stage_one, model_weight, card, folder)
