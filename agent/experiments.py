"""A/B experiments: a file names the arms (each a few settings), the traffic split, the primary metric and the
guardrails; every session is assigned to one arm, the same one every time.

    experiment = load_experiment(Path("experiments/pipeline-vs-popularity.toml"))
    arm = experiment.arm_of(session_id)        # sha256(name, session id) -> [0, 1) -> the split's arm
    recommender = experiment.recommender_for(base_recommender, arm)

A file (TOML):

    name = "pipeline-vs-popularity"
    primary_metric = "like_rate"                  # likes and clicks per exposed pick
    [split]                                       # shares, summing to 1; the first arm is the control
    pipeline = 0.5
    popularity = 0.5
    [arms.pipeline]                               # nothing: the server's own settings
    [arms.popularity]
    ranking = "popularity"                        # "llm" (the full pipeline), "retrieval" (no LLM), "popularity"
    explanations = "facts"                        # "llm" or "facts"
    [guardrails]                                  # an arm breaking one is flagged in the report
    latency_p95_seconds = 60.0
    fallback_rate = 0.5
    error_rate = 0.01

Arm settings: `model` (a model the server serves: an adapter's name or the base model), `ranking`, `explanations`,
`retrieval_weight` (how much the retrieval order counts beside the model's) and `[arms.X.retrieval]` (fusion
weights: dense, cooccurrence, popularity, constraints). Assignment hashes the experiment's name with the session id,
so it needs no table, survives restarts and agrees across replicas; the store keeps each turn's picks as
exposures in the turn's own transaction (agent/store.py) and the report reads them (eval/experiments.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrieval.candidates import FusionConfig

METRICS = ("like_rate",)
RANKINGS = ("llm", "retrieval", "popularity")
EXPLANATIONS = ("llm", "facts")
POPULARITY_ONLY = FusionConfig(dense=0, cooccurrence=0, popularity=1, constraints=0)
ARM_KEYS = {"model", "ranking", "explanations", "retrieval_weight", "retrieval"}
GUARDRAILS = {"latency_p95_seconds": 60.0, "fallback_rate": 0.5, "error_rate": 0.01}


class ExperimentError(ValueError):
    """The experiment file is malformed; the message says where."""


@dataclass(frozen=True)
class Experiment:
    name: str
    arms: dict[str, dict[str, Any]]
    split: dict[str, float]
    primary_metric: str = "like_rate"
    guardrails: dict[str, float] = field(default_factory=lambda: dict(GUARDRAILS))

    def arm_of(self, session_id: str) -> str:
        """The session's arm: deterministic and sticky (a hash, not a coin)."""
        digest = hashlib.sha256(f"{self.name}\0{session_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        total = 0.0
        for arm, share in self.split.items():
            total += share
            if point < total:
                return arm
        return next(reversed(self.split))

    def definition(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def recommender_for(self, recommender, arm: str):
        """`recommender` with the arm's settings (its engine view chosen by the caller for `model`)."""
        settings = self.arms[arm]
        ranking = settings.get("ranking", "llm")
        retriever = recommender.retriever
        if "retrieval" in settings:
            retriever = dataclasses.replace(retriever, config=dataclasses.replace(retriever.config,
                                                                                  **settings["retrieval"]))
        if ranking == "popularity":
            retriever = dataclasses.replace(retriever, config=POPULARITY_ONLY, ranker=None)
        changed = {"rank_with_llm": ranking == "llm"}
        if "explanations" in settings:
            changed["explain_with_llm"] = settings["explanations"] == "llm"
        if "retrieval_weight" in settings:
            changed["retrieval_weight"] = float(settings["retrieval_weight"])
        return dataclasses.replace(recommender, settings=dataclasses.replace(recommender.settings, **changed),
                                   retriever=retriever, experiment=(self.name, arm))


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_experiment(path: Path) -> Experiment:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ExperimentError(f"{path}: cannot read the experiment file ({error})") from None
    return parse_experiment(data, str(path))


def parse_experiment(data: dict[str, Any], where: str = "experiment") -> Experiment:
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ExperimentError(f"{where}: `name` must be a non-empty string")
    arms, split = data.get("arms"), data.get("split")
    if not isinstance(arms, dict) or len(arms) < 2 or not all(isinstance(a, dict) for a in arms.values()):
        raise ExperimentError(f"{where}: `arms` must hold at least two tables ([arms.NAME])")
    if not isinstance(split, dict) or set(split) != set(arms):
        raise ExperimentError(f"{where}: `split` must give a share to each arm ({', '.join(arms)})")
    if not all(_number(v) and v > 0 for v in split.values()) or abs(sum(split.values()) - 1) > 1e-9:
        raise ExperimentError(f"{where}: the split's shares must be positive and sum to 1")
    for arm, settings in arms.items():
        unknown = set(settings) - ARM_KEYS
        if unknown:
            raise ExperimentError(f"{where}: arm {arm!r}: unknown setting {sorted(unknown)[0]!r} "
                                  f"(known: {', '.join(sorted(ARM_KEYS))})")
        if settings.get("ranking", "llm") not in RANKINGS:
            raise ExperimentError(f"{where}: arm {arm!r}: ranking must be one of {', '.join(RANKINGS)}")
        if settings.get("explanations", "llm") not in EXPLANATIONS:
            raise ExperimentError(f"{where}: arm {arm!r}: explanations must be one of {', '.join(EXPLANATIONS)}")
        if not _number(settings.get("retrieval_weight", 0.0)):
            raise ExperimentError(f"{where}: arm {arm!r}: retrieval_weight must be a number")
        weights = settings.get("retrieval", {})
        fields = {f.name for f in dataclasses.fields(FusionConfig)}
        if not isinstance(weights, dict) or set(weights) - fields or not all(map(_number, weights.values())):
            raise ExperimentError(f"{where}: arm {arm!r}: retrieval takes fusion settings "
                                  f"({', '.join(sorted(fields))})")
    metric = data.get("primary_metric", "like_rate")
    if metric not in METRICS:
        raise ExperimentError(f"{where}: primary_metric must be one of {', '.join(METRICS)}")
    given = data.get("guardrails", {})
    if not isinstance(given, dict) or set(given) - set(GUARDRAILS) or not all(map(_number, given.values())):
        raise ExperimentError(f"{where}: [guardrails] takes numbers for {', '.join(GUARDRAILS)}")
    guardrails = {**GUARDRAILS, **given}
    return Experiment(name.strip(), {a: dict(arms[a]) for a in split}, {a: float(split[a]) for a in split},
                      metric, {k: float(v) for k, v in guardrails.items()})
