"""Where the session memory goes wrong, by class: the first step of learning opinions from data (issue 17).

    python -m eval.memory_errors [--split train|valid] [--limit N] [--rules-only] [--json]

Each seeker dialogue is replayed as `convrec eval` replays it (eval.datasets.replay; messages read by the cue rules
and the reaction model, agent/reactions.py, or with --rules-only the rules alone), and every movie of the seeker's
own form that the form says they liked (1) or did not like (0) is compared with the final memory: liked, disliked,
neutral (mentioned, no opinion read) or absent. The misses are counted per class of situation, from the form and the
dialogue alone:
    suggested by the recommender or brought up by the seeker; seen or not (the form); the seeker wrote its title.
The dev dialogues are never read here: this chooses what to learn, and dev stays the test.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections import Counter
from pathlib import Path

from agent.config import Settings
from agent.reactions import read_message
from eval.datasets import Reader, replay, utterances
from retrieval.redial import SEEKER, TRAINING_FILES, VALIDATION_FILE, load_redial_dialogues, render_mentions

SEEN = {0: "not seen", 1: "seen", 2: "seen: not said"}


def memory_state(state, item_id: str) -> str:
    """What the memory holds about `item_id` at the end of a dialogue."""
    for kind in ("liked", "disliked", "neutral"):
        if item_id in getattr(state, kind):
            return kind
    return "absent"


def error_classes(dialogues, catalog, matcher, read: Reader | None = None) -> dict:
    """Counts of (truth, what the memory holds, situation) over the form movies with an opinion; `read` reads each
    seeker message (agent.reactions.read_message), else the cue rules alone."""
    outcomes: Counter = Counter()
    for dialogue in dialogues:
        _, state = replay(dialogue, catalog, matcher, read)
        seeker_wrote = {i for sender, _, ids in utterances(dialogue) if sender == SEEKER for i in ids}
        for item_id, form in dialogue.forms.items():
            if form.liked not in (0, 1) or item_id not in catalog:
                continue
            truth = "liked" if form.liked == 1 else "disliked"
            situation = (("suggested" if form.suggested else "seeker's own"), SEEN.get(form.seen, "?"),
                         "seeker named it" if item_id in seeker_wrote else "only the recommender named it")
            outcomes[(truth, memory_state(state, item_id), situation)] += 1
    return outcomes


def report(outcomes: Counter) -> dict:
    """Per truth: how many, how many the memory holds right, and the misses by class, largest first."""
    out = {}
    for truth in ("liked", "disliked"):
        rows = {key: n for key, n in outcomes.items() if key[0] == truth}
        total = sum(rows.values())
        right = sum(n for key, n in rows.items() if key[1] == truth)
        misses = Counter()
        for (_, held, situation), n in rows.items():
            if held != truth:
                misses[(held, *situation)] += n
        out[truth] = {"movies": total, "held_right": right, "recall": round(right / total, 4) if total else None,
                      "misses": [{"memory": key[0], "suggested": key[1], "seen": key[2], "named": key[3], "count": n,
                                  "share_of_misses": round(n / max(total - right, 1), 4)}
                                 for key, n in misses.most_common()]}
    return out


def main() -> None:
    from agent.build import load_embedder, load_reactions_of, load_settings_catalog
    from retrieval.embeddings import EmbeddingCache
    from retrieval.titles import TitleMatcher

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("train", "valid"), default="valid")
    parser.add_argument("--limit", type=int, default=0, help="the first N dialogues only (0: all)")
    parser.add_argument("--rules-only", action="store_true",
                        help="read messages with the cue rules alone (default: the rules and the reaction model)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env(reactions="none" if args.rules_only else None)
    files = TRAINING_FILES if args.split == "train" else (VALIDATION_FILE,)
    dialogues = [d for name in files if (Path(settings.data_dir) / name).exists()
                 for d in load_redial_dialogues(Path(settings.data_dir) / name)][: args.limit or None]
    catalog = load_settings_catalog(settings)
    matcher = TitleMatcher(catalog)
    reactions, read = load_reactions_of(settings), None
    if reactions is not None:  # every seeker message embedded once, in batches
        texts = [render_mentions(raw, d.mentions) for d in dialogues for sender, raw, _ in utterances(d)
                 if sender == SEEKER]
        embedder = EmbeddingCache(load_embedder(settings), texts)
        read = functools.partial(read_message, catalog=catalog, matcher=matcher, reactions=reactions, embedder=embedder)
    result = report(error_classes(dialogues, catalog, matcher, read))
    result["dialogues"], result["split"] = len(dialogues), args.split
    result["read_by"] = "cue rules + reaction model" if reactions else "cue rules"
    if args.json:
        print(json.dumps(result))
        return
    print(f"{len(dialogues)} {args.split} dialogues, messages read by {result['read_by']}")
    for truth in ("liked", "disliked"):
        r = result[truth]
        print(f"\n{truth}: {r['movies']} form movies, memory right on {r['held_right']} (recall {r['recall']})")
        print(f"{'memory holds':<14}{'suggested?':<15}{'seen?':<16}{'named by':<32}{'count':>6}{'share':>8}")
        for m in r["misses"][:12]:
            print(f"{m['memory']:<14}{m['suggested']:<15}{m['seen']:<16}{m['named']:<32}{m['count']:>6}"
                  f"{m['share_of_misses']:>8.1%}")


if __name__ == "__main__":
    main()
