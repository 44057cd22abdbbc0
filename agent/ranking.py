"""The LLM ranks this turn's candidates; its answer is validated, repaired once, or replaced by a fallback.

The prompt names each candidate by a letter (`LABELS`: one token, where a catalog id takes about seven), and the
answer lists letters, the same format for every engine and the JSON schema vLLM can enforce:
{"ranking": ["C", ...]}. The letters are mapped back to this turn's item ids here; nothing else is accepted.

- A scoring engine (`ScoringEngine.score_choices`) ranks by the model's own probability of naming each candidate's
  letter first after `{"ranking": ["` (one prefill, no second pass); the answer can only contain candidates. With
  the learned ranker's second stage trained on this model (retrieval/ranker.py), those log-probabilities and stage
  one's scores decide the order together; otherwise the model's order is fused with the retrieval order.
- A structured engine (vLLM, in process or remote) generates the answer under `ranking_schema`: a JSON schema whose
  letters are an enum of this turn's candidates, so the decoder cannot write anything else. The answer is still
  parsed and checked; a repeated letter (the schema cannot forbid it without leaving xgrammar) is dropped.
- Any other engine generates the answer; `parse_ranking` accepts only candidate letters, no duplicates, exactly n.
  An invalid answer gets one repair prompt that says what was wrong; a second failure, or an engine error, falls
  back to the retrieval order. The returned notes say which path was taken (they go into the trace).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from langchain_core.messages import AIMessage, BaseMessage

from agent.engines import ChatEngine, EngineError, ScoringEngine, StructuredEngine
from prompts import render_prompt

ANSWER_PREFIX = '{"ranking": ["'
LABELS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
"""The letters that name the rank prompt's candidates, in the order shown; so at most 26 candidates in a prompt."""
RRF_K = 10
"""Reciprocal-rank constant when the model's order is fused with the retrieval order (small: the lists are short)."""
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


class RankingError(ValueError):
    """The answer is not a valid ranking of the candidates; the message says why (it is shown to the model)."""


@dataclass(frozen=True)
class RankingOutcome:
    item_ids: tuple[str, ...]
    """The full candidate order: the LLM's ranking first, then the rest in retrieval order."""
    notes: tuple[str, ...] = ()
    """What happened: "scored", "constrained", "generated", "repaired", "fallback: <reason>"."""

    @property
    def fell_back(self) -> bool:
        return any(note.startswith("fallback") for note in self.notes)


def candidate_labels(count: int) -> list[str]:
    """The letters of a rank prompt with `count` candidates."""
    if count > len(LABELS):
        raise ValueError(f"a rank prompt names at most {len(LABELS)} candidates, not {count}")
    return list(LABELS[:count])


def score_candidates(engine: ScoringEngine, messages: Sequence[BaseMessage], count: int) -> list[float]:
    """The model's log-probability of naming each of the prompt's `count` candidates first (its letter)."""
    return engine.score_choices(messages, ANSWER_PREFIX, candidate_labels(count))


def parse_ranking(text: str, candidate_ids: Sequence[str], n: int) -> list[str]:
    """The entries of a {"ranking": [...]} answer, checked: candidates only (ids, or the prompt's letters), no
    duplicates, exactly n (or all)."""
    match = _JSON_OBJECT.search(text or "")
    if not match:
        raise RankingError('no JSON object found; expected {"ranking": ["<letter>", ...]}')
    try:
        ranking = json.loads(match.group(0)).get("ranking")
    except (json.JSONDecodeError, AttributeError) as error:
        raise RankingError(f"the JSON could not be read ({error})") from None
    if not isinstance(ranking, list):
        raise RankingError('"ranking" must be a list')
    ids = [str(i) for i in ranking]
    unknown = [i for i in ids if i not in set(candidate_ids)]
    if unknown:
        raise RankingError(f"not among the candidates: {', '.join(unknown[:5])}")
    if len(set(ids)) != len(ids):
        raise RankingError("a candidate is repeated")
    expected = min(n, len(candidate_ids))
    if len(ids) != expected:
        raise RankingError(f"expected exactly {expected} candidates, got {len(ids)}")
    return ids


def ranking_schema(candidate_ids: Sequence[str], n: int) -> dict:
    """The answer's JSON schema: {"ranking": [exactly n ids, each one of the candidates]}."""
    size = min(n, len(candidate_ids))
    return {"type": "object", "additionalProperties": False, "required": ["ranking"],
            "properties": {"ranking": {"type": "array", "minItems": size, "maxItems": size,
                                       "items": {"type": "string", "enum": list(candidate_ids)}}}}


class Reranker(Protocol):
    """The learned ranker's second stage (retrieval/ranker.py): the model's log-probabilities beside stage one's."""

    adapter: str | None

    def rerank(self, stage_one_scores: Sequence[float], model_logprobs: Sequence[float]) -> list[int]: ...


def rank_candidates(engine: ChatEngine, messages: list[BaseMessage], candidate_ids: Sequence[str],
                    n: int, retrieval_weight: float = 0.0, *, reranker: Reranker | None = None,
                    stage_one_scores: Sequence[float] = ()) -> RankingOutcome:
    """`candidate_ids` in retrieval order (the prompt names them by `candidate_labels`). A scoring engine's
    log-probabilities go to `reranker` when it was trained on this model's scores ("reranked"); otherwise its order
    is fused with the retrieval order (reciprocal ranks, `retrieval_weight` for the retrieval order, 1 for the
    model's; 0 keeps the model's order alone)."""
    if not candidate_ids:
        return RankingOutcome((), ("no candidates",))
    try:
        if isinstance(engine, ScoringEngine):
            if reranker is not None and reranker.adapter == engine.model_name and stage_one_scores:
                return _rerank_by_scores(engine, messages, candidate_ids, n, reranker, stage_one_scores)
            return _rank_by_scores(engine, messages, candidate_ids, n, retrieval_weight)
        if isinstance(engine, StructuredEngine):
            return _rank_by_constrained_generation(engine, messages, candidate_ids, n, retrieval_weight)
        return _rank_by_generation(engine, messages, candidate_ids, n)
    except EngineError as error:
        return RankingOutcome(tuple(candidate_ids), (f"fallback: engine error: {error}",))


def _rank_by_scores(engine: ScoringEngine, messages, candidate_ids, n, retrieval_weight: float) -> RankingOutcome:
    scores = score_candidates(engine, messages, len(candidate_ids))
    by_model = sorted(range(len(candidate_ids)), key=lambda k: (-scores[k], k))
    return fuse_with_retrieval(by_model, candidate_ids, n, retrieval_weight, "scored")


def _rerank_by_scores(engine: ScoringEngine, messages, candidate_ids, n, reranker: Reranker,
                      stage_one_scores: Sequence[float]) -> RankingOutcome:
    scores = score_candidates(engine, messages, len(candidate_ids))
    order = reranker.rerank(stage_one_scores, scores)
    answer = json.dumps({"ranking": [candidate_ids[k] for k in order[:n]]})
    top = parse_ranking(answer, candidate_ids, n)  # the same validation every engine's answer goes through
    return RankingOutcome(_complete(top, [candidate_ids[k] for k in order]), ("reranked",))


def _rank_by_constrained_generation(engine: StructuredEngine, messages, candidate_ids, n,
                                    retrieval_weight: float) -> RankingOutcome:
    labels = candidate_labels(len(candidate_ids))
    answer = engine.generate_structured(messages, ranking_schema(labels, n), max_new_tokens=5 * n + 8)
    try:
        named = json.loads(answer)["ranking"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:  # only a truncated answer can get here
        return RankingOutcome(tuple(candidate_ids), (f"fallback: constrained answer unreadable ({error})",))
    position = {label: k for k, label in enumerate(labels)}
    picked = list(dict.fromkeys(position[i] for i in named if i in position))  # in order, repeats dropped
    by_model = picked + [k for k in range(len(candidate_ids)) if k not in picked]
    return fuse_with_retrieval(by_model, candidate_ids, n, retrieval_weight, "constrained")


def fuse_with_retrieval(by_model: list[int], candidate_ids: Sequence[str], n: int, retrieval_weight: float,
                        note: str) -> RankingOutcome:
    """The model's order (candidate positions, best first) fused with the retrieval order by reciprocal ranks."""
    fused = {k: 1 / (RRF_K + position) for position, k in enumerate(by_model, start=1)}
    fused = {k: value + retrieval_weight / (RRF_K + k + 1) for k, value in fused.items()}
    order = sorted(fused, key=lambda k: (-fused[k], k))
    answer = json.dumps({"ranking": [candidate_ids[k] for k in order[:n]]})
    top = parse_ranking(answer, candidate_ids, n)  # the same validation every engine's answer goes through
    return RankingOutcome(_complete(top, [candidate_ids[k] for k in order]), (note,))


def _rank_by_generation(engine: ChatEngine, messages, candidate_ids, n) -> RankingOutcome:
    labels = candidate_labels(len(candidate_ids))
    item_of = dict(zip(labels, candidate_ids, strict=True))
    answer = engine.generate([messages], max_new_tokens=5 * n + 8)[0]
    try:
        top = [item_of[label] for label in parse_ranking(answer, labels, n)]
        return RankingOutcome(_complete(top, candidate_ids), ("generated",))
    except RankingError as error:
        first_error = error
    repair = render_prompt("repair", error=first_error, n=min(n, len(candidate_ids)), letters=", ".join(labels))
    answer = engine.generate([[*messages, AIMessage(answer), *repair]], max_new_tokens=5 * n + 8)[0]
    try:
        top = [item_of[label] for label in parse_ranking(answer, labels, n)]
        return RankingOutcome(_complete(top, candidate_ids), ("repaired",))
    except RankingError as error:
        return RankingOutcome(tuple(candidate_ids), (f"fallback: invalid ranking twice ({first_error}; {error})",))


def _complete(top: list[str], candidate_ids: Sequence[str]) -> tuple[str, ...]:
    return (*top, *(i for i in candidate_ids if i not in set(top)))
