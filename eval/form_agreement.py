"""How far two people agree on a ReDial seeker's opinions: the ceiling for the session memory's F1 (issue 17).

    python -m eval.form_agreement [--split dev|valid|train] [--json]

In ReDial both workers fill a form for every movie mentioned: the seeker says whether they liked it (1), did not (0)
or did not say (2), and the recommender answers the same question about the seeker. convrec's memory is scored
against the seeker's form (`memory_truth` in eval/redial_bench.py: catalog movies only); the recommender's form,
scored the same way, is what a second person who read the whole dialogue gets. Reported per opinion: F1, precision,
recall and the seeker's count, over the dialogues where both forms are filled.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Container, Iterable
from pathlib import Path

from retrieval.redial import TRAINING_FILES, VALIDATION_FILE

DEV_FILE = "redial/test_dev.jsonl"
OPINIONS = {"liked": 1, "disliked": 0}


def opinions(form: object, value: int, catalog: Container[str]) -> set[str]:
    """The catalog movies a form gives `value` (a form left empty is written `[]` in the files)."""
    if not isinstance(form, dict):
        return set()
    return {str(movie) for movie, answers in form.items() if int(answers["liked"]) == value and str(movie) in catalog}


def agreement(records: Iterable[dict], catalog: Container[str]) -> dict:
    """The recommender's form scored against the seeker's, per opinion, on dialogues with both forms."""
    counts = {kind: [0, 0, 0] for kind in OPINIONS}  # agreed, recommender's, seeker's
    dialogues = 0
    for record in records:
        seeker, recommender = record.get("initiatorQuestions"), record.get("respondentQuestions")
        if not seeker or not recommender:
            continue
        dialogues += 1
        for kind, value in OPINIONS.items():
            truth, other = opinions(seeker, value, catalog), opinions(recommender, value, catalog)
            for k, n in enumerate((len(truth & other), len(other), len(truth))):
                counts[kind][k] += n
    result: dict = {"dialogues_with_both_forms": dialogues}
    for kind, (agreed, predicted, actual) in counts.items():
        precision, recall = agreed / max(predicted, 1), agreed / max(actual, 1)
        f1 = 2 * precision * recall / (precision + recall) if agreed else 0.0
        result[kind] = {"f1": round(f1, 4), "precision": round(precision, 4), "recall": round(recall, 4),
                        "actual": actual}
    return result


def read_records(paths: Iterable[Path]) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def main() -> None:
    from agent.build import load_settings_catalog
    from agent.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("dev", "valid", "train"), default="dev")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = Settings.from_env()
    names = {"dev": (DEV_FILE,), "valid": (VALIDATION_FILE,), "train": TRAINING_FILES}[args.split]
    paths = [Path(settings.data_dir) / name for name in names if (Path(settings.data_dir) / name).exists()]
    catalog = {item.item_id for item in load_settings_catalog(settings)}
    result = {"split": args.split, **agreement(read_records(paths), catalog)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.split}: {result['dialogues_with_both_forms']} dialogues with both forms; the recommender's form "
          "scored against the seeker's:")
    for kind in OPINIONS:
        row = result[kind]
        print(f"  {kind:9} F1 {row['f1']:.3f}  precision {row['precision']:.3f}  recall {row['recall']:.3f}  "
              f"({row['actual']} seeker opinions)")


if __name__ == "__main__":
    main()
