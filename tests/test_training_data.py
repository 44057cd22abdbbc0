"""One definition of the training data: every learned signal reads TRAINING_FILES; validation and dev stay apart."""

from __future__ import annotations

import json

import pytest

from retrieval.redial import DEV_FILE, TRAINING_FILES, VALIDATION_FILE, load_training_dialogues, training_paths
from tests.conftest import DATA_DIR, needs_data


def _ids(name: str) -> set[str]:
    return {str(json.loads(line)["conversationId"]) for line in (DATA_DIR / name).read_text().splitlines()
            if line.strip()}


@needs_data
def test_no_dev_or_validation_conversation_is_in_the_training_data() -> None:
    training = {d.dialogue_id for d in load_training_dialogues(DATA_DIR)}
    assert len(training) == 3358
    assert not training & _ids(VALIDATION_FILE)
    assert not training & _ids(DEV_FILE)
    assert not _ids(VALIDATION_FILE) & _ids(DEV_FILE)


@needs_data
def test_training_reads_both_files_and_each_dialogue_once() -> None:
    assert [p.relative_to(DATA_DIR).as_posix() for p in training_paths(DATA_DIR)] == list(TRAINING_FILES)
    dialogues = load_training_dialogues(DATA_DIR)
    assert len({d.dialogue_id for d in dialogues}) == len(dialogues)


def test_a_data_dir_without_train_extra_reads_train_sample_only(tmp_path) -> None:
    (tmp_path / "redial" / "train_sample").mkdir(parents=True)
    assert training_paths(tmp_path) == [tmp_path / TRAINING_FILES[0]]


@pytest.mark.slow
@needs_data
def test_the_collaborative_model_and_popularity_learn_from_every_training_dialogue(redial_recommender) -> None:
    dialogues = load_training_dialogues(DATA_DIR)
    sample_ids = _ids(TRAINING_FILES[0])
    counts = {}
    for d in dialogues:
        for item_id in d.mentions:
            counts.setdefault(item_id, [0, 0])[d.dialogue_id in sample_ids] += 1
    only_in_extra = sorted(i for i, (extra, sample) in counts.items() if extra >= 3 and not sample
                           and i in redial_recommender.catalog)
    assert only_in_extra, "train_extra mentions movies train_sample does not"
    item_id = only_in_extra[0]
    assert redial_recommender.retriever.popularity[item_id] == counts[item_id][0]
    model = redial_recommender.retriever.collaborative
    known = model.item_ids if hasattr(model, "item_ids") else model.counts  # EASE, or co-occurrence counts
    assert item_id in known
