"""Ranking validation, repair and fallback, with a fake engine that replays saved model answers."""

import pytest

from agent.engines import EngineError
from agent.ranking import RankingError, parse_ranking, rank_candidates
from prompts import render_prompt

IDS = ["101", "102", "103", "104"]
LETTERS = {"A": "101", "B": "102", "C": "103", "D": "104"}  # how the prompt names them


class ReplayEngine:
    """Returns the queued answers in order (like simonw/llm's enqueue)."""

    name = "replay"
    model_name = "replay"

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.calls: list = []

    def generate(self, conversations, max_new_tokens, stop=()):
        self.calls.append(conversations)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return [answer]


def messages():
    return render_prompt("rank", memory="Liked: none", conversation="User: hi", candidates="A: Alien (1979)", n=2)


def test_valid_answer_is_parsed():
    assert parse_ranking('{"ranking": ["103", "101"]}', IDS, 2) == ["103", "101"]


def test_fenced_answer_with_prose_is_parsed():
    assert parse_ranking('Sure!\n```json\n{"ranking": ["102", "104"]}\n```', IDS, 2) == ["102", "104"]


@pytest.mark.parametrize("answer, message", [
    ('{"ranking": ["101", "999"]}', "not among the candidates"),
    ('{"ranking": ["101", "101"]}', "repeated"),
    ('{"ranking": ["101"]}', "exactly 2"),
    ('{"ranking": "101"}', "must be a list"),
    ('{"ranking": ["10', "no JSON object"),
    ("I recommend The Matrix", "no JSON object"),
])
def test_invalid_answers_are_refused_with_a_reason(answer, message):
    with pytest.raises(RankingError, match=message):
        parse_ranking(answer, IDS, 2)


def test_invalid_answer_gets_one_repair_that_names_the_error():
    engine = ReplayEngine('{"ranking": ["Z", "A"]}', '{"ranking": ["D", "B"]}')
    outcome = rank_candidates(engine, messages(), IDS, 2)
    assert outcome.item_ids[:2] == ("104", "102") and outcome.notes == ("repaired",)
    assert set(outcome.item_ids) == set(IDS)
    repair_prompt = engine.calls[1][0][-1].content
    assert "Z" in repair_prompt and "not among the candidates" in repair_prompt and "A, B, C, D" in repair_prompt


def test_a_generated_answer_naming_item_ids_instead_of_letters_is_refused():
    """The prompt names candidates by letter; an id, even a candidate's, is not an answer (it gets the repair)."""
    engine = ReplayEngine('{"ranking": ["101", "102"]}', '{"ranking": ["101", "102"]}')
    assert rank_candidates(engine, messages(), IDS, 2).fell_back


def test_two_invalid_answers_fall_back_to_retrieval_order():
    outcome = rank_candidates(ReplayEngine("nonsense", '{"ranking": ["E", "F"]}'), messages(), IDS, 2)
    assert outcome.item_ids == tuple(IDS) and outcome.fell_back


def test_engine_error_falls_back_to_retrieval_order():
    outcome = rank_candidates(ReplayEngine(EngineError("down")), messages(), IDS, 2)
    assert outcome.item_ids == tuple(IDS) and "engine error" in outcome.notes[0]


def test_fewer_candidates_than_n_asks_for_all_of_them():
    outcome = rank_candidates(ReplayEngine('{"ranking": ["B", "A"]}'), messages(), ["101", "102"], 5)
    assert outcome.item_ids == ("102", "101") and outcome.notes == ("generated",)


class FixedScores:
    name = "scores"
    model_name = "scores"

    def generate(self, conversations, max_new_tokens, stop=()):
        raise AssertionError("a scoring engine is not asked to generate a ranking")

    def score_choices(self, messages, prefix, choices):
        assert prefix == '{"ranking": ["' and choices == ["A", "B", "C", "D"][:len(choices)]
        return [{"A": -3.0, "B": -1.0, "C": -2.0, "D": -9.0}[c] for c in choices]


def test_scoring_engine_ranks_by_likelihood():
    outcome = rank_candidates(FixedScores(), messages(), IDS, 2)
    assert outcome.item_ids == ("102", "103", "101", "104") and outcome.notes == ("scored",)


def test_the_models_order_is_fused_with_the_retrieval_order_by_reciprocal_ranks():
    # retrieval order 101..104; the model's 102, 103, 101, 104. With weight 1 (RRF_K = 10): 102 = 1/11 + 1/12,
    # 101 = 1/13 + 1/11, 103 = 1/12 + 1/13, 104 = 1/14 + 1/14.
    assert rank_candidates(FixedScores(), messages(), IDS, 2, retrieval_weight=1.0).item_ids == (
        "102", "101", "103", "104")
    # a heavy retrieval weight lets retrieval's first pick (101 = 1/13 + 3/11) beat the model's (102 = 1/11 + 3/12)
    assert rank_candidates(FixedScores(), messages(), IDS, 2, retrieval_weight=3.0).item_ids[0] == "101"


class SchemaEngine:
    """A structured engine with a canned answer; records the schema it was asked to follow."""

    name, model_name, model_names = "schema", "schema", ("schema",)

    def __init__(self, answer: str) -> None:
        self.answer, self.schemas = answer, []

    def using(self, model_name):
        return self

    def generate(self, conversations, max_new_tokens, stop=()):
        raise AssertionError("a structured engine ranks through generate_structured")

    def generate_structured(self, messages, schema, max_new_tokens):
        self.schemas.append(schema)
        return self.answer


def test_a_structured_engine_is_asked_for_exactly_n_of_the_candidates():
    engine = SchemaEngine('{"ranking": ["C", "A"]}')
    outcome = rank_candidates(engine, messages(), IDS, 2, retrieval_weight=0.0)
    assert outcome.notes == ("constrained",) and outcome.item_ids == ("103", "101", "102", "104")
    ranking = engine.schemas[0]["properties"]["ranking"]
    assert ranking["items"]["enum"] == list(LETTERS) and ranking["minItems"] == ranking["maxItems"] == 2
    assert "uniqueItems" not in ranking  # xgrammar cannot enforce it; repeats are dropped in Python


def test_a_repeated_id_from_a_structured_engine_is_dropped_and_the_order_fused():
    outcome = rank_candidates(SchemaEngine('{"ranking": ["D", "D"]}'), messages(), IDS, 2, retrieval_weight=0.0)
    assert outcome.item_ids == ("104", "101", "102", "103")
    fused = rank_candidates(SchemaEngine('{"ranking": ["D", "C"]}'), messages(), IDS, 2, retrieval_weight=1.0)
    # 101 = 1/13 + 1/11 (model, retrieval), 104 = 1/11 + 1/14, 103 = 1/12 + 1/13, 102 = 1/14 + 1/12
    assert fused.item_ids == ("101", "104", "103", "102")


def test_a_truncated_structured_answer_falls_back_to_the_retrieval_order():
    outcome = rank_candidates(SchemaEngine('{"ranking": ["A'), messages(), IDS, 2)
    assert outcome.fell_back and outcome.item_ids == tuple(IDS)
