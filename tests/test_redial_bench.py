"""The ReDial benchmark protocol: both input formats, the replay, memory scoring, the systems on real dialogues."""

from __future__ import annotations

import json

import pytest

from agent.config import REPO_ROOT
from agent.types import SessionState
from eval.datasets import BenchmarkFormatError, EntityMap, detect_format, load_benchmark, replay, utterances
from eval.metrics import DEFAULT_METRICS
from eval.redial_bench import (
    ALL_SYSTEMS,
    PAIRED_METRICS,
    RETRIEVAL_SYSTEMS,
    memory_accuracy,
    paired_differences,
    run_benchmark,
)
from eval.report import build_tables, html_page, markdown
from retrieval.catalog import Catalog, Item
from retrieval.redial import Dialogue, Message, MovieForm
from retrieval.titles import TitleMatcher
from tests.conftest import DATA_DIR, needs_data


def crafted() -> Dialogue:
    messages = (Message("Hi, I loved @1 and @2", "seeker", 1), Message("any ideas?", "seeker", 2),
                Message("Try @3", "recommender", 3), Message("or @1 again", "recommender", 4),
                Message("seen @3, hated it", "seeker", 5), Message("Then @4", "recommender", 6))
    forms = {"1": MovieForm(0, 1, 1), "2": MovieForm(0, 1, 1), "3": MovieForm(1, 1, 0), "4": MovieForm(1, 0, 2)}
    return Dialogue("d1", messages, {"1": "Alien (1979)", "2": "Heat (1995)", "3": "Clue (1985)",
                                     "4": "Dune (2021)"}, forms)


CATALOG = Catalog(items={i.item_id: i for i in (Item("1", "Alien", 1979), Item("2", "Heat", 1995),
                                                 Item("3", "Clue", 1985), Item("4", "Dune", 2021))})


def test_consecutive_messages_of_one_sender_form_one_utterance():
    assert [(s, ids) for s, _, ids in utterances(crafted())] == [
        ("seeker", ["1", "2"]), ("recommender", ["3", "1"]), ("seeker", ["3"]), ("recommender", ["4"])]


def test_replay_scores_suggested_movies_with_the_memory_so_far():
    turns, final = replay(crafted(), CATALOG, TitleMatcher(CATALOG))
    assert [sorted(t.relevant) for t in turns] == [["3"], ["4"]]  # @1 was mentioned but not suggested
    first, second = turns
    assert first.text == "Hi, I loved Alien (1979) and Heat (1995) any ideas?"
    assert set(first.state.liked) == {"1", "2"} and first.seen == {"1", "2"}
    assert second.seen == {"1", "2", "3"} and "3" in second.state.disliked
    assert set(second.state.excluded()) >= {"1", "2", "3"}  # the recommender's @3 and @1 count as recommended
    assert final.turn_count == 2


def test_memory_accuracy_on_a_crafted_dialogue():
    # truth: liked {1, 2}, disliked {3}; the memory got 1 right, 4 wrong (form says "did not say"), 3 right
    state = SessionState("s", liked=("1", "4"), disliked=("3",))
    scores = memory_accuracy([(state, crafted())], CATALOG)
    assert scores["liked"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "predicted": 2, "actual": 2}
    assert scores["disliked"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "predicted": 1, "actual": 1}
    assert memory_accuracy([(SessionState("s"), crafted())], CATALOG)["liked"]["precision"] is None


def test_the_format_is_told_by_the_first_line_and_anything_else_is_refused(tmp_path):
    official, crslab, other, broken = (tmp_path / n for n in ("a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl"))
    official.write_text(json.dumps({"conversationId": "1", "messages": []}) + "\n")
    crslab.write_text("\n" + json.dumps({"context": [""], "rec": [1], "dialog_id": "test_1"}) + "\n")
    other.write_text(json.dumps({"hello": 1}) + "\n")
    broken.write_text("{not json\n")
    assert detect_format(official) == "redial" and detect_format(crslab) == "crslab"
    for path, message in ((other, "neither"), (broken, "not JSON"), (tmp_path / "none.jsonl", "no such file")):
        with pytest.raises(BenchmarkFormatError, match=message):
            detect_format(path)


@needs_data
def test_crslab_turns_replay_the_context_and_map_entities_to_catalog_ids(tmp_path):
    """Two hand-written CRSLab lines of one dialogue, with He et al.'s real entity ids."""
    from retrieval.catalog import load_catalog

    catalog = load_catalog(None, DATA_DIR)
    matcher = TitleMatcher(catalog)
    entities = EntityMap(DATA_DIR, matcher)
    police = next(e for e, uri in entities.uris.items() if uri.endswith("/Police_Academy_(film)"))
    lebowski = next(e for e, uri in entities.uris.items() if uri.endswith("/The_Big_Lebowski"))
    lines = [{"context": ["", "I loved Super Troopers (2001)"], "rec": [police], "prev_entity": [],
              "dialog_id": "test_1"},
             {"context": ["", "I loved Super Troopers (2001)", "You should watch Police Academy (1984)",
                          "Seen it, hated it. Anything else?"], "rec": [lebowski, 999999999],
              "prev_entity": [police], "dialog_id": "test_1"}]
    path = tmp_path / "crslab.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    benchmark = load_benchmark(path, catalog, matcher, DATA_DIR)
    assert benchmark.format == "crslab" and benchmark.dialogues == 1 and len(benchmark.turns) == 2
    first, second = benchmark.turns
    academy = entities.item(police)
    assert catalog[academy].title == "Police Academy" and first.relevant == {academy}
    assert catalog[entities.item(lebowski)].title == "The Big Lebowski"  # no DBpedia link: found by its URI title
    assert "entity:999999999" in second.relevant  # unmapped stays in the ground truth: an honest miss
    assert second.seen == {academy} and second.text == "Seen it, hated it. Anything else?"
    assert academy in second.state.disliked and academy in second.state.excluded()
    assert benchmark.notes["entity_mapping"]["unmapped"] == 1


def scored_records(scores: dict[str, list[float | None]], dialogue_ids: list[str]) -> list[dict]:
    """Turn records as evaluate_system leaves them: every metric of a system scores the turn alike here."""
    return [{"dialogue_id": dialogue_id, "scores": {system: {m.label: values[i] for m in DEFAULT_METRICS}
                                                    for system, values in scores.items()}}
            for i, dialogue_id in enumerate(dialogue_ids)]


def test_paired_differences_compare_the_systems_that_ran_on_the_same_dialogues():
    dialogues = ["d1", "d1", "d2", "d3", "d3", "d3"]
    records = scored_records({"hybrid": [1.0, 0.0, 1.0, 0.5, None, 1.0],
                              "popularity": [0.0, 0.0, 0.5, 0.0, None, 1.0],
                              "dense": [1.0, 1.0, 1.0, 1.0, None, 1.0]}, dialogues)
    paired = paired_differences(records, ("popularity", "dense", "hybrid"), seed=0)
    assert list(paired) == ["hybrid - popularity"]  # llm and lora did not run
    recall = paired["hybrid - popularity"]["Recall@10"]
    assert set(paired["hybrid - popularity"]) == set(PAIRED_METRICS)
    assert recall["difference"] == pytest.approx(0.4)  # (1 + 0 + 0.5 + 0.5 + 0) / 5 scored turns
    assert (recall["a_better"], recall["b_better"], recall["turns"]) == (3, 0, 5)
    assert 0 < recall["ci95"][0] <= recall["ci95"][1] and recall["significant"]
    assert paired_differences(records, ("popularity", "dense", "hybrid"), seed=0) == paired  # seeded: reruns agree
    same = paired_differences(scored_records({"hybrid": [1.0, 0.0], "llm": [1.0, 0.0]}, ["d1", "d2"]),
                              ("hybrid", "llm"), seed=0)
    assert same["llm - hybrid"]["MRR"] == {"difference": 0.0, "ci95": [0.0, 0.0], "a_better": 0, "b_better": 0,
                                           "turns": 2, "significant": False}


def report_results(with_intervals: bool) -> dict:
    def accuracy(value: float) -> dict:
        entry = {"mean": value, "turns": 40}
        return entry | ({"ci95": [round(value - 0.0125, 4), round(value + 0.0137, 4)]} if with_intervals else {})

    def system(value: float) -> dict:
        return {"raw": {m.label: accuracy(value) for m in DEFAULT_METRICS},
                "seen_removed": {m.label: accuracy(value) for m in DEFAULT_METRICS},
                "grounding": {"out_of_catalog": 0.0, "repeats": 0.0, "duplicates": 0.0},
                "beyond": {"coverage@10": 0.1, "diversity@10": 0.5, "novelty@10": 9.0},
                "latency": {"retrieve": {"p50": 0.01, "p95": 0.02, "turns": 40}}, "seconds": 1.0}

    results = {"path": "redial/test_dev.jsonl", "format": "redial", "dialogues": 12, "turns": 40, "depth": 50,
               "explained_dialogues": 0, "memory": None,
               "systems": {"popularity": system(0.0625), "<b>hybrid</b>": system(0.1024)}}
    if with_intervals:
        results["bootstrap"] = {"unit": "dialogue", "samples": 1000, "level": 0.95, "seed": 7}
        results["paired"] = {"<b>hybrid</b> - popularity": {"Recall@10": {
            "difference": 0.0399, "ci95": [-0.0051, 0.0851], "a_better": 9, "b_better": 2, "turns": 40,
            "significant": False}}}
    return results


def test_the_report_shows_intervals_and_paired_differences_and_escapes_them_in_html():
    results = report_results(with_intervals=True)
    tables = build_tables(results)
    report = markdown(results, tables, [])
    assert "| popularity | 0.062 [0.050, 0.076] |" in report
    assert "1000 resamples of the turn-weighted mean, seed 7" in report
    assert "## Paired differences (bootstrap over dialogues, 95%)" in report
    assert "| <b>hybrid</b> - popularity | Recall@10 | +0.0399 | [-0.0051, +0.0851] | 9 / 2 / 40 | no |" in report
    page = html_page(results, tables, [])
    assert "<td>0.102 [0.090, 0.116]</td>" in page and "<td>no</td>" in page
    assert "&lt;b&gt;hybrid&lt;/b&gt; - popularity" in page and "<b>hybrid" not in page


def test_results_without_intervals_or_paired_differences_still_render():
    results = report_results(with_intervals=False)
    report = markdown(results, build_tables(results), [])
    assert "| popularity | 0.062 | 0.062 |" in report
    assert "Paired differences" not in report and "In brackets" not in report
    for name in ("redial-dev", "redial-dev-lora"):  # the committed runs of record, written before intervals
        committed = json.loads((REPO_ROOT / "docs" / "eval" / name / "results.json").read_text(encoding="utf-8"))
        tables = build_tables(committed)
        assert "Accuracy (seen removed)" in markdown(committed, tables, []) and html_page(committed, tables, [])


@pytest.mark.slow
@needs_data
def test_a_small_benchmark_runs_every_retrieval_system_on_both_formats(redial_recommender):
    retrieval = tuple(RETRIEVAL_SYSTEMS)
    for path in (DATA_DIR / "redial" / "test_dev.jsonl", DATA_DIR / "redial" / "crslab_format" / "test_dev.jsonl"):
        benchmark = load_benchmark(path, redial_recommender.catalog, redial_recommender.matcher, DATA_DIR, limit=5)
        assert benchmark.dialogues == 5 and benchmark.turns
        results, records = run_benchmark({"llm": redial_recommender}, benchmark, retrieval)
        assert len(records) == len(benchmark.turns) and all(len(r["hybrid"]) == 10 for r in records)
        for result in results["systems"].values():
            assert result["grounding"]["out_of_catalog"] == 0 and result["grounding"]["repeats"] == 0
            for setting in ("raw", "seen_removed"):
                assert all(v["mean"] is None or 0.0 <= v["mean"] <= 1.0 for v in result[setting].values())
                assert all(v["ci95"] is None or 0.0 <= v["ci95"][0] <= v["ci95"][1] <= 1.0
                           for v in result[setting].values())
            assert 0 < result["beyond"]["coverage@10"] < 1 and 0 < result["beyond"]["diversity@10"] < 2
        assert list(results["paired"]) == ["hybrid - popularity"]
        assert all(set(r["scores"]) == set(retrieval) for r in records)
        assert "GPT-4 zero-shot" in markdown(results, build_tables(results), [])
    assert set(ALL_SYSTEMS) == {*retrieval, "llm", "lora"}
