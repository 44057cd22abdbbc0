"""The ReDial recommendation benchmark, comparable to CRSLab and He et al. (CIKM 2023).

Protocol, per dialogue (official ReDial format):
- consecutive messages of one sender form one utterance; `@id` mentions are rendered as titles;
- a seeker utterance goes through the real `understand` + `memory.update` (so the memory is the system's own);
- a recommender utterance that mentions movies its form marks `suggested = 1` is an evaluation turn: the system
  ranks (up to 50 items) from the memory so far and the seeker's last utterance; the ground truth is those movies;
- after it, the movies the human recommender mentioned count as recommended (the system will not repeat them).
"seen removed": items mentioned earlier in the dialogue leave both the ground truth and the ranked list.

Systems share one `Recommender`: retrieval-only variants swap the fusion weights; "llm" is the full ranking step.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agent import memory
from agent.turn import Recommender, query_from
from agent.types import SessionState, Trace
from agent.understand import understand
from eval.metrics import DEFAULT_METRICS, mean, remove_seen
from retrieval.candidates import FusionConfig
from retrieval.redial import RECOMMENDER, SEEKER, Dialogue, mentioned_ids, render_mentions

DEPTH = 50

RETRIEVAL_SYSTEMS = {
    "popularity": FusionConfig(dense=0, cooccurrence=0, popularity=1, constraints=0),
    "dense": FusionConfig(dense=1, cooccurrence=0, popularity=0, constraints=0),
    "cooccurrence": FusionConfig(dense=0, cooccurrence=1, popularity=0, constraints=0),
    "hybrid": FusionConfig(),
}
ALL_SYSTEMS = (*RETRIEVAL_SYSTEMS, "llm")

PUBLISHED = {
    "GPT-4 zero-shot (He et al. 2023)": {"Recall@1": 0.050, "Recall@10": 0.201},
    "UniCRS (He et al. 2023)": {"Recall@1": 0.050, "Recall@10": 0.215, "Recall@50": 0.413},
}
"""Published anchors (seen and out-of-catalog items removed), shown beside our rows."""


@dataclass(frozen=True)
class EvalTurn:
    dialogue_id: str
    state: SessionState
    text: str
    relevant: frozenset[str]
    seen: frozenset[str]


def utterances(dialogue: Dialogue) -> Iterator[tuple[str, str, list[str]]]:
    """(sender, raw text, mentioned ids) with consecutive messages of one sender merged."""
    group: list[str] = []
    sender = None
    for message in (*dialogue.messages, None):
        if message is None or message.sender != sender:
            if group:
                raw = " ".join(group)
                yield sender, raw, mentioned_ids(raw)
            group, sender = [], message.sender if message else None
        if message is not None:
            group.append(message.text)


def replay(dialogue: Dialogue, recommender: Recommender) -> tuple[list[EvalTurn], SessionState]:
    """The evaluation turns of one dialogue, and the memory at its end."""
    catalog, matcher = recommender.catalog, recommender.matcher
    state, seen, last_seeker, turns = SessionState(f"eval-{dialogue.dialogue_id}"), [], "", []
    for sender, raw, ids in utterances(dialogue):
        text = render_mentions(raw, dialogue.mentions)
        if sender == SEEKER:
            state = memory.update(state, understand(text, state, catalog, matcher))
            last_seeker = text
        elif sender == RECOMMENDER:
            relevant = {i for i in ids if i in catalog and (f := dialogue.forms.get(i)) and f.suggested == 1}
            if relevant:
                turns.append(EvalTurn(dialogue.dialogue_id, state, last_seeker, frozenset(relevant),
                                      frozenset(seen)))
            state = memory.record(state, last_seeker, text, tuple(i for i in dict.fromkeys(ids) if i in catalog))
        seen += ids
    return turns, state


def ranker(recommender: Recommender, system: str) -> Callable[[EvalTurn], list[str]]:
    if system == "llm":
        return lambda turn: list(recommender.rank(turn.state, turn.text, Trace(), depth=DEPTH))
    retriever = dataclasses.replace(recommender.retriever, config=RETRIEVAL_SYSTEMS[system])
    return lambda turn: [c.item_id for c in retriever.candidates(query_from(turn.state, turn.text), DEPTH)]


def evaluate_accuracy(turns: list[EvalTurn], rank: Callable[[EvalTurn], list[str]], catalog) -> dict:
    """Mean of every metric, raw and seen-removed, plus grounding counts of the lists."""
    raw: dict[str, list] = {m.label: [] for m in DEFAULT_METRICS}
    unseen: dict[str, list] = {m.label: [] for m in DEFAULT_METRICS}
    outside, repeats, started = 0, 0, time.perf_counter()
    for turn in turns:
        ranked = rank(turn)
        outside += sum(i not in catalog for i in ranked)
        repeats += sum(i in turn.state.excluded() for i in ranked)
        ranked_unseen, relevant_unseen = remove_seen(ranked, turn.relevant, turn.seen)
        for metric in DEFAULT_METRICS:
            raw[metric.label].append(metric(ranked, turn.relevant))
            unseen[metric.label].append(metric(ranked_unseen, relevant_unseen))
    return {"turns": len(turns), "seconds": round(time.perf_counter() - started, 2),
            "raw": {k: _rounded(mean(v)) for k, v in raw.items()},
            "seen_removed": {k: _rounded(mean(v)) for k, v in unseen.items()},
            "out_of_catalog": outside, "repeats": repeats}


def _rounded(pair: tuple[float | None, int]) -> dict:
    value, count = pair
    return {"mean": None if value is None else round(value, 4), "turns": count}


def run_benchmark(recommender: Recommender, dialogues: list[Dialogue], systems: tuple[str, ...]) -> dict:
    replayed = [(dialogue, *replay(dialogue, recommender)) for dialogue in dialogues]
    turns = [turn for _, dialogue_turns, _ in replayed for turn in dialogue_turns]
    finals = [(final, dialogue) for dialogue, _, final in replayed]
    return {"dialogues": len(dialogues), "turns": len(turns),
            "memory": memory_accuracy(finals, recommender.catalog),
            "systems": {system: evaluate_accuracy(turns, ranker(recommender, system), recommender.catalog)
                        for system in systems}}


def format_markdown(results: dict) -> str:
    """The accuracy table ("seen removed", the published setting), our systems then the published anchors."""
    labels = [m.label for m in DEFAULT_METRICS]
    lines = [f"# ReDial recommendation accuracy ({results['dialogues']} dialogues, {results['turns']} turns)", "",
             "Seen items removed from ground truth and predictions (He et al. 2023 setting).", "",
             "| system | " + " | ".join(labels) + " | seconds |", "|---" * (len(labels) + 2) + "|"]
    for system, result in results["systems"].items():
        cells = [_cell(result["seen_removed"][label]["mean"]) for label in labels]
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {result['seconds']} |")
    for name, published in PUBLISHED.items():
        lines.append(f"| *{name}* | " + " | ".join(_cell(published.get(label)) for label in labels) + " | |")
    lines += ["", "## Memory accuracy (final memory vs the seeker's movie forms)", "",
              "| opinion | precision | recall | F1 | predicted | actual |", "|---|---|---|---|---|---|"]
    for kind, m in results["memory"].items():
        lines.append(f"| {kind} | {_cell(m['precision'])} | {_cell(m['recall'])} | {m['f1']:.3f} | "
                     f"{m['predicted']} | {m['actual']} |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def memory_truth(dialogue: Dialogue, catalog) -> tuple[set[str], set[str]]:
    """What the memory should have learned: the seeker's form says liked (1) or not (0); 2 = did not say."""
    liked = {i for i, form in dialogue.forms.items() if form.liked == 1 and i in catalog}
    disliked = {i for i, form in dialogue.forms.items() if form.liked == 0 and i in catalog}
    return liked, disliked


def memory_accuracy(pairs: list[tuple[SessionState, Dialogue]], catalog) -> dict:
    """Precision, recall and F1 of the final memory's liked and disliked sets, micro-averaged over dialogues."""
    counts = {"liked": [0, 0, 0], "disliked": [0, 0, 0]}  # true positives, predicted, actual
    for state, dialogue in pairs:
        truth = dict(zip(("liked", "disliked"), memory_truth(dialogue, catalog), strict=True))
        in_dialogue = set(dialogue.forms)
        for kind, predicted in (("liked", set(state.liked)), ("disliked", set(state.disliked))):
            predicted &= in_dialogue
            counts[kind][0] += len(predicted & truth[kind])
            counts[kind][1] += len(predicted)
            counts[kind][2] += len(truth[kind])
    return {kind: _prf(*values) for kind, values in counts.items()}


def _prf(hits: int, predicted: int, actual: int) -> dict:
    precision = hits / predicted if predicted else None
    recall = hits / actual if actual else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else 0.0
    return {"precision": _round(precision), "recall": _round(recall), "f1": round(f1, 4), "predicted": predicted,
            "actual": actual}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
