"""Would a non-linear model read disliked movies better than the committed reaction model? (issue 17's disliked F1)

    python -m eval.reaction_models          # about 4 minutes on 2 cores; training dialogues only, never dev

The training dialogues are replayed and cut into the committed model's five folds (finetune/reactions.py: same
rows, same seed); on the first fold held out, each model is fitted on the other four and the final memory's liked /
disliked F1 (as `convrec eval` scores the memory) is taken at the thresholds that give the best disliked F1 *on that
same fold* - an optimistic figure, the same for every model, so only the comparison means something:
    rules only; the committed logistic regression (C=0.1, balanced); gradient-boosted trees (balanced); an MLP.
"""

from __future__ import annotations

import json
import time

import numpy as np

from agent.build import load_embedder, load_settings_catalog
from agent.config import Settings
from eval.datasets import utterances
from eval.redial_bench import memory_accuracy
from finetune.reactions import SEED, embedded, final_memory, folds, replay_steps
from retrieval.redial import SEEKER, load_redial_dialogues, render_mentions, training_paths
from retrieval.titles import TitleMatcher

LIKED_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
DISLIKED_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    started = time.perf_counter()
    settings = Settings.from_env()
    catalog = load_settings_catalog(settings)
    matcher = TitleMatcher(catalog)
    train = [d for path in training_paths(settings.data_dir) for d in load_redial_dialogues(path)]
    texts = [render_mentions(raw, d.mentions) for d in train for sender, raw, _ in utterances(d) if sender == SEEKER]
    vectors = embedded(list(dict.fromkeys(texts)), load_embedder(settings), settings.cache_dir)
    replayed = {d.dialogue_id: replay_steps(d, catalog, matcher, vectors) for d in train}
    by_id = {d.dialogue_id: d for d in train}
    fold_of = folds(train)
    fit_ids = [i for i in by_id if fold_of[i] != 0]
    held = [i for i in by_id if fold_of[i] == 0]
    rows = [(x, y) for i in fit_ids for step in replayed[i] for x, y in zip(step.rows, step.labels, strict=True)]
    x, y = np.stack([r for r, _ in rows]), np.array([label for _, label in rows])

    def memory_f1(thresholds, keep_rules=True) -> tuple[float, float]:
        result = memory_accuracy([(final_memory(i, replayed[i], thresholds, keep_rules), by_id[i]) for i in held],
                                 catalog)
        return result["liked"]["f1"], result["disliked"]["f1"]

    liked, disliked = memory_f1(None)
    report = {"held_out_dialogues": len(held), "rules only": {"liked_f1": liked, "disliked_f1": disliked}}
    models = {
        "logistic regression (committed)": LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000),
        "gradient-boosted trees": HistGradientBoostingClassifier(class_weight="balanced", max_iter=300,
                                                                 learning_rate=0.05, random_state=SEED),
        "MLP (128 hidden)": MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=200, early_stopping=True,
                                          random_state=SEED),
    }
    for name, model in models.items():
        model.fit(x, y)
        for i in held:
            for step in replayed[i]:
                step.probabilities = model.predict_proba(np.stack(step.rows)) if step.items else None
        best = max(((memory_f1({"liked": a, "disliked": b}, keep), a, b, keep) for a in LIKED_THRESHOLDS
                    for b in DISLIKED_THRESHOLDS for keep in (True, False)), key=lambda r: r[0][1])
        (liked, disliked), a, b, keep = best
        report[name] = {"liked_f1": liked, "disliked_f1": disliked, "thresholds": [a, b], "rules_kept": keep}
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
