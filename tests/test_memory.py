import pytest

from agent import memory
from agent.types import Constraints, SessionState, Signals


def state(**kw) -> SessionState:
    return SessionState(session_id="s", **kw)


def test_loved_movie_is_remembered_as_liked_and_excluded_from_recommendations():
    new = memory.update(state(), Signals(opinions=(("m1", "liked"),)))
    assert new.liked == ("m1",)
    assert "m1" in new.excluded()


def test_latest_opinion_wins_and_an_item_lives_in_one_set_only():
    s = memory.update(state(), Signals(opinions=(("m1", "liked"),)))
    s = memory.update(s, Signals(opinions=(("m1", "disliked"),)))
    assert s.liked == () and s.disliked == ("m1",)


def test_neutral_mention_does_not_erase_a_stated_opinion():
    s = memory.update(state(), Signals(opinions=(("m1", "disliked"),)))
    s = memory.update(s, Signals(opinions=(("m1", "neutral"),)))
    assert s.disliked == ("m1",) and s.neutral == ()


def test_update_is_pure():
    before = state(liked=("a",))
    memory.update(before, Signals(opinions=(("b", "liked"),)))
    assert before.liked == ("a",)


def test_constraints_merge_and_clear():
    s = memory.update(state(), Signals(constraints=Constraints(genres=("Comedy",), min_year=1990)))
    s = memory.update(s, Signals(constraints=Constraints(excluded_genres=("Horror",), max_year=2005)))
    assert s.constraints == Constraints(genres=("Comedy",), excluded_genres=("Horror",), min_year=1990, max_year=2005)
    s = memory.update(s, Signals(clear_constraints=True))
    assert s.constraints.is_empty()


def test_asking_for_an_excluded_genre_lifts_the_exclusion():
    s = memory.update(state(), Signals(constraints=Constraints(excluded_genres=("Horror",))))
    s = memory.update(s, Signals(constraints=Constraints(genres=("Horror",))))
    assert s.constraints.genres == ("Horror",) and s.constraints.excluded_genres == ()


def test_record_keeps_recommendations_and_bounded_turns():
    s = state()
    for k in range(memory.MAX_TURNS + 3):
        s = memory.record(s, f"u{k}", f"r{k}", (f"i{k}",))
    assert s.turn_count == memory.MAX_TURNS + 3
    assert len(s.turns) == memory.MAX_TURNS and s.turns[-1].user == f"u{memory.MAX_TURNS + 2}"
    assert len(s.recommended) == memory.MAX_TURNS + 3 and s.last_recommended == (f"i{memory.MAX_TURNS + 2}",)


def test_feedback_events_move_items():
    s = memory.apply_feedback(state(), "like", "a")
    s = memory.apply_feedback(s, "dislike", "b")
    s = memory.apply_feedback(s, "seen", "c")
    s = memory.apply_feedback(s, "skip", "d")
    assert s.liked == ("a",) and s.disliked == ("b",) and s.seen == ("c",) and "d" in s.excluded()


def test_unknown_feedback_type_is_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown feedback type"):
        memory.apply_feedback(state(), "poke", "a")


def test_state_round_trips_through_a_dict():
    s = memory.update(state(), Signals(opinions=(("a", "liked"),), constraints=Constraints(genres=("Drama",))))
    s = memory.record(s, "hi", "reply", ("x", "y"))
    assert SessionState.from_dict(s.to_dict()) == s


def test_every_memory_entry_can_be_listed_and_removed_alone():
    from agent.memory import entries, remove_entry

    state = SessionState("s", liked=("1", "2"), disliked=("3",), seen=("4",), recommended=("5",),
                         constraints=Constraints(genres=("Comedy",), excluded_genres=("Horror",), people=("Tom Hanks",),
                                                 min_year=1990))
    listed = entries(state)
    assert listed == ["liked:1", "liked:2", "disliked:3", "seen:4", "recommended:5", "genre:Comedy",
                      "excluded_genre:Horror", "person:Tom Hanks", "min_year"]
    for entry in listed:
        assert entries(remove_entry(state, entry)) == [e for e in listed if e != entry]
    assert remove_entry(state, "recommended:5").recommended == ()  # may be recommended again
    with pytest.raises(ValueError, match="no entry"):
        remove_entry(state, "liked:99")
