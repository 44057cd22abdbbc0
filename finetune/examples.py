"""Supervised examples from ReDial training conversations, rendered with the very prompts a live turn uses.

Each recommender turn that suggests a movie is replayed exactly as the offline evaluation replays a dev turn
(eval.datasets.replay: convrec's own understanding and memory), then:

- rank example: `agent.turn.rank_prompt` over this turn's retrieved candidates -> {"ranking": [...]} with the
  suggested movies first (in retrieval order among themselves), then the other candidates in retrieval order, n
  of the prompt's candidate letters.
  For training dialogues, popularity and the collaborative model are cross-fitted (finetune/crossfit.py: fitted
  without the dialogue's fold), so the answer does not leak into the candidates.
  When retrieval misses every suggested movie, `on_miss="skip"` (the default) drops the turn: the order of the
  candidates can only matter when the right movie is among them, and that is what the examples teach. "insert"
  puts the suggested movies into the list at random positions (seeded; the last candidates make room). Suggested
  movies the memory excludes (already mentioned, disliked) are never targets: convrec never recommends them.
- explain examples: `agent.turn.explain_prompt` for the suggested movies (then the top candidates) -> the sentence
  `agent.grounding.compose_explanation` builds from facts the movie truly shares with the liked movies the prompt
  names (or the constraints asked for, or its headline facts). The model learns to say only what the facts say.

`Example.answer_parts` splits the answer where the engines tokenize it separately (the ranking prefix, the first
letter, the rest), so training sees the same tokens `TransformersEngine.score_choices` scores;
`Example.choices` / `targets` are what that scoring ranks (every candidate) and which of them are right.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from langchain_core.messages import BaseMessage

from agent.grounding import compose_explanation
from agent.ranking import ANSWER_PREFIX, candidate_labels
from agent.turn import LIKED_IN_EXPLAIN, Recommender, explain_prompt, query_from, rank_prompt
from agent.types import Candidate
from eval.datasets import EvalTurn, load_benchmark, replay
from finetune.config import SPLIT_A, FinetuneConfig
from finetune.crossfit import fold_retrievers, split_b
from retrieval.redial import Dialogue, load_redial_dialogues, load_training_dialogues, training_paths


@dataclass(frozen=True)
class Example:
    kind: str
    """"rank" or "explain"."""
    dialogue_id: str
    messages: tuple[BaseMessage, ...]
    answer_parts: tuple[str, ...]
    choices: tuple[str, ...] = ()
    """Rank examples: every candidate as `TransformersEngine.score_choices` scores it after ANSWER_PREFIX (its letter,
    agent.ranking.candidate_labels), in prompt order."""
    targets: tuple[int, ...] = ()
    """Rank examples: the positions in `choices` of the suggested movies."""

    @property
    def answer(self) -> str:
        return "".join(self.answer_parts)


def build_examples(recommender: Recommender, path: Path, config: FinetuneConfig, *,
                   limit: int = 0) -> tuple[list[Example], Counter]:
    """All examples of the dialogues in `path` (the first `limit`), and counts of what was built and skipped.
    `path` SPLIT_A ("split-a"): the training dialogues outside split B (`split_a`)."""
    catalog, matcher, data_dir = recommender.catalog, recommender.matcher, recommender.settings.data_dir
    training: list[Dialogue] = []  # every training dialogue, when `path` is training data (for the folds)
    if str(path) == SPLIT_A:
        dialogues, training = split_a(data_dir)
        dialogues = dialogues[: limit or None]
        turns = [turn for dialogue in dialogues for turn in replay(dialogue, catalog, matcher)[0]]
        dialogue_count = len(dialogues)
    else:
        benchmark = load_benchmark(path, catalog, matcher, data_dir, limit)
        turns, dialogue_count = benchmark.turns, benchmark.dialogues
        if Path(path).resolve() in {p.resolve() for p in training_paths(data_dir)}:
            training = load_training_dialogues(data_dir)
    fold_of: dict[str, int] = {}
    retrievers = [recommender.retriever]
    if training:  # cross-fitted: no answer leaks into a training turn's candidates
        fold_of, retrievers = fold_retrievers(recommender.retriever, training)
    rng = random.Random(config.seed)
    counts: Counter = Counter()
    examples: list[Example] = []
    for turn in turns:
        retriever = retrievers[fold_of.get(turn.dialogue_id, 0)]
        examples += _turn_examples(dataclasses.replace(recommender, retriever=retriever), turn, config, rng, counts)
    counts["dialogues"] = dialogue_count
    counts["turns"] = len(turns)
    return examples, counts


def split_a(data_dir: Path) -> tuple[list[Dialogue], list[Dialogue]]:
    """(the training dialogues outside split B, every training dialogue), in file order. Split A is the adapter's
    data, so the ranker's stage two can learn the adapter's score on dialogues the adapter never saw."""
    by_file = [load_redial_dialogues(path) for path in training_paths(data_dir)]
    dialogues = [d for file in by_file for d in file]
    held_out = split_b(dialogues, {d.dialogue_id for file in by_file[1:] for d in file})
    return [d for d in dialogues if d.dialogue_id not in held_out], dialogues


def _turn_examples(recommender: Recommender, turn: EvalTurn, config: FinetuneConfig, rng: random.Random,
                   counts: Counter) -> Iterator[Example]:
    catalog, settings = recommender.catalog, recommender.settings
    excluded = set(turn.state.excluded())
    targets = [i for i in sorted(turn.relevant) if i in catalog and i not in excluded]
    if not targets:
        counts["skipped: suggested movie already excluded"] += 1
        return
    shown = recommender.retriever.candidates(query_from(turn.state, turn.text), settings.candidates_in_prompt)
    if config.shuffle_candidates:
        rng.shuffle(shown)
    shown_ids = [c.item_id for c in shown]
    hits = [i for i in shown_ids if i in targets]
    if hits:
        counts["rank: suggested movie retrieved"] += 1
    elif config.on_miss == "skip" or not shown:
        counts["skipped: retrieval missed the suggested movie"] += 1
        return
    else:
        counts["rank: suggested movie inserted"] += 1
        hits = targets[: max(1, len(shown) // 4)]
        shown = shown[: len(shown) - len(hits)]
        for item_id in hits:
            shown.insert(rng.randrange(len(shown) + 1), Candidate(item_id, 0.0))
        shown_ids = [c.item_id for c in shown]
        hits = [i for i in shown_ids if i in hits]
    order = [*hits, *(i for i in shown_ids if i not in hits)][: settings.n]
    labels = candidate_labels(len(shown_ids))
    letters = [labels[shown_ids.index(i)] for i in order]
    rest = json.dumps({"ranking": letters})[len(ANSWER_PREFIX) + len(letters[0]):]
    yield Example("rank", turn.dialogue_id, tuple(rank_prompt(turn.state, turn.text, shown, catalog, settings.n)),
                  (ANSWER_PREFIX, letters[0], rest), choices=tuple(labels),
                  targets=tuple(shown_ids.index(i) for i in hits))
    named_state = dataclasses.replace(turn.state, liked=turn.state.liked[-LIKED_IN_EXPLAIN:])
    for item_id in list(dict.fromkeys(order))[: config.explain_per_turn]:
        item = catalog[item_id]
        sentence, _ = compose_explanation(item, named_state, catalog)
        counts["explain"] += 1
        yield Example("explain", turn.dialogue_id, tuple(explain_prompt(turn.state, item, catalog)), (sentence,))


def describe_mix(counts: Counter, examples: list[Example]) -> dict[str, int]:
    kinds = Counter(e.kind for e in examples)
    return {"dialogues": counts["dialogues"], "turns": counts["turns"], "rank examples": kinds["rank"],
            "explain examples": kinds["explain"],
            **{k: v for k, v in sorted(counts.items()) if k.startswith(("rank:", "skipped:"))}}
