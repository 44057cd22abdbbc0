"""A real turn: real SmolLM2, real MiniLM, real Chroma in a temporary folder, real SQLite."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from agent.build import build_recommender
from agent.engines import EngineError
from agent.turn import InputError

pytestmark = pytest.mark.slow


def new_session() -> str:
    return uuid.uuid4().hex[:10]


def find_id(catalog, title: str, year: int) -> str:
    return next(i.item_id for i in catalog if i.title == title and i.year == year)


def test_loved_movie_is_remembered_and_never_recommended(redial_recommender):
    r = redial_recommender
    matrix = find_id(r.catalog, "The Matrix", 1999)
    session = new_session()
    first = r.run_turn(session, "I loved The Matrix, what else should I watch?")
    assert matrix in first.memory.liked
    second = r.run_turn(session, "more like that please")
    for result in (first, second):
        ids = [rec.item_id for rec in result.recommendations]
        assert matrix not in ids
        assert len(ids) == r.settings.n and len(set(ids)) == len(ids)
        assert all(i in r.catalog for i in ids)
    assert not {rec.item_id for rec in first.recommendations} & {
        rec.item_id for rec in second.recommendations
    }


def test_every_explanation_is_built_from_the_items_facts(redial_recommender):
    r = redial_recommender
    session = new_session()
    r.run_turn(session, "I really liked Toy Story and Finding Nemo")
    result = r.run_turn(session, "something funny for the whole family")
    assert result.recommendations
    for rec in result.recommendations:
        item = r.catalog[rec.item_id]
        assert rec.explanation.strip()
        assert rec.facts, "an explanation cites at least one fact"
        check = r.checker.check(rec.explanation, item, result.memory)
        assert not check.unsupported, (rec.explanation, check.unsupported)
        own = item.facts()
        for key, values in rec.facts.items():
            if key != "liked":
                assert set(values) <= set(own.get(key, ())), (key, values, own)


def test_i_hated_that_one_rejects_the_recommendation_and_it_never_returns(small_recommender):
    r = small_recommender
    session = new_session()
    first = r.run_turn(session, "I want a good science fiction movie")
    top = first.recommendations[0].item_id
    second = r.run_turn(session, "I hated that one")
    assert top in second.memory.disliked
    third = r.run_turn(session, "what else do you have?")
    for result in (second, third):
        assert top not in [rec.item_id for rec in result.recommendations]


def test_a_restart_keeps_the_session(small_recommender):
    r = small_recommender
    session = new_session()
    first = r.run_turn(session, "I loved Toy Story")
    restarted, _ = build_recommender(r.settings)
    stored = restarted.sessions.load(session)
    assert stored == first.memory
    again = restarted.run_turn(session, "anything else?")
    assert again.memory.turn_count == 2
    assert not {x.item_id for x in first.recommendations} & {x.item_id for x in again.recommendations}


def test_forget_leaves_nothing_behind(small_recommender):
    r = small_recommender
    session = new_session()
    r.run_turn(session, "I loved Alien")
    assert r.sessions.forget(session)
    assert r.sessions.load(session) is None and r.sessions.history(session) == []


def test_trace_reports_stages_engine_and_model(small_recommender):
    result = small_recommender.run_turn(new_session(), "a movie from the 90s")
    trace = result.trace
    assert {"understand", "retrieve", "rank", "explain", "save", "total"} <= set(trace.timings)
    assert trace.engine == "transformers" and trace.model == "smollm2-135m-instruct"


def test_constraints_are_respected(redial_recommender):
    r = redial_recommender
    result = r.run_turn(new_session(), "a comedy, nothing before 1990 please")
    assert result.memory.constraints.min_year == 1990
    for rec in result.recommendations:
        assert rec.year is not None and rec.year >= 1990


def test_a_request_naming_a_person_gets_explanations_that_name_that_person(redial_recommender):
    r = redial_recommender
    result = r.run_turn(new_session(), "Any 90s comedy with Jim Carrey?")
    assert result.memory.constraints.people == ("Jim Carrey",)
    starring = [rec for rec in result.recommendations if "Jim Carrey" in r.catalog[rec.item_id].cast]
    assert len(starring) >= 3, [rec.title for rec in result.recommendations]
    for rec in starring:
        assert "Jim Carrey" in rec.explanation, rec.explanation
        assert not r.checker.check(rec.explanation, r.catalog[rec.item_id], result.memory).unsupported


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * 100_000, "limit"),
        ("bad \udcff bytes", "UTF-8"),
    ],
)
def test_bad_messages_get_a_clear_error_and_lose_nothing(small_recommender, text, message):
    r = small_recommender
    session = new_session()
    kept = r.run_turn(session, "I loved Inception").memory
    with pytest.raises(InputError, match=message):
        r.run_turn(session, text)
    assert r.sessions.load(session) == kept


def test_a_message_naming_nothing_in_the_catalog_still_gets_recommendations(small_recommender):
    result = small_recommender.run_turn(new_session(), 'Have you seen "Zorblax Returns 9"?')
    assert result.recommendations
    assert "Zorblax" in result.reply


class DownEngine:
    name, model_name = "down", "down"

    def generate(self, conversations, max_new_tokens, stop=()):
        raise EngineError("engine unavailable")


class HallucinatingEngine:
    """Generates rankings naming items that are not candidates (and, for explanations, false claims)."""

    name, model_name = "hallucinating", "hallucinating"

    def generate(self, conversations, max_new_tokens, stop=()):
        if '"ranking"' in conversations[0][0].content:
            return ['{"ranking": ["Z", "tt9999999", "tt0000001"]}']  # a letter past the list, ids not letters
        return ["It won an Oscar for Best Picture and stars Tom Cruise."] * len(conversations)


def test_engine_down_falls_back_to_retrieval_order_with_true_explanations(small_recommender):
    r = dataclasses.replace(small_recommender, engine=DownEngine())
    result = r.run_turn(new_session(), "I loved Alien")
    assert len(result.recommendations) == r.settings.n
    assert any("engine error" in note for note in result.trace.fallbacks)
    for rec in result.recommendations:
        assert r.checker.check(rec.explanation, r.catalog[rec.item_id], result.memory).grounded


def test_items_outside_the_candidates_never_reach_the_user(small_recommender):
    r = dataclasses.replace(small_recommender, engine=HallucinatingEngine())
    result = r.run_turn(new_session(), "something like Jaws")
    ids = [rec.item_id for rec in result.recommendations]
    assert ids and all(i in r.catalog for i in ids) and "tt9999999" not in ids
    assert any(note.startswith("fallback: invalid ranking twice") for note in result.trace.fallbacks)
    assert all("Oscar" not in rec.explanation and "Tom Cruise" not in rec.explanation
               for rec in result.recommendations)


def test_the_picks_are_stored_before_the_explanations_and_kept_when_the_turn_dies(small_recommender):
    """Picks first: when `on_picks` runs, the turn (memory, picks) is committed; explanations follow one by one and
    are written in a second transaction. A crash between the two keeps the picks."""
    r, session = small_recommender, new_session()
    seen: list = []

    def on_picks(result):
        stored = r.sessions.history(session)[-1]
        assert stored["recommended"] == [rec.item_id for rec in result.recommendations]
        assert not any(rec.explanation for rec in result.recommendations)
        seen.append("picks")

    result = r.run_turn(session, "I loved Alien", on_picks=on_picks,
                        on_explanation=lambda rec: seen.append(rec.item_id))
    assert seen == ["picks", *(rec.item_id for rec in result.recommendations)]
    assert r.sessions.history(session)[-1]["reply"] == result.reply
    assert r.sessions.load(session).to_dict() == result.memory.to_dict()
    assert all(rec.explanation in result.reply for rec in result.recommendations)
    assert result.trace.timings["first_pick"] < result.trace.timings["total"]

    def crash(_):
        raise KeyboardInterrupt("the process dies after the picks")

    with pytest.raises(KeyboardInterrupt):
        r.run_turn(session, "something scarier", on_explanation=crash)
    kept = r.sessions.load(session)
    assert kept.turn_count == 2 and len(r.sessions.history(session)) == 2
    assert set(kept.last_recommended) <= set(kept.recommended) and kept.last_recommended
    assert all(i in kept.recommended for i in r.sessions.history(session)[-1]["recommended"])
