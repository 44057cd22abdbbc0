"""The OpenAI-compatible API as clients use it: a real `convrec serve` subprocess on a free loopback port, the
official `openai` client, LangChain's ChatOpenAI, and plain HTTP for the error cases."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from deploy.servers import free_port, start_server
from eval.crash import run_crash_check
from eval.load import run_load
from tests.conftest import DATA_DIR, SMALL_CATALOG
from ui.api.metrics import Metrics
from ui.api.serving import ChatService

pytestmark = pytest.mark.slow
KEY_A, KEY_B = "test-key-a", "test-key-b"
FAST = ("--no-llm-explanations", "--candidates", "10")


@pytest.fixture(scope="module")
def server_env(tmp_path_factory, redial_index_dir) -> dict:
    tmp = tmp_path_factory.mktemp("api")
    return {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
            "CONVREC_DB": str(tmp / "sessions.sqlite3")}


@pytest.fixture(scope="module")
def server_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api-log") / "serve.log"


@pytest.fixture(scope="module")
def url(server_env, server_log):
    port = free_port()
    process = start_server(port, server_env, "--api-key", KEY_A, "--api-key", KEY_B, *FAST, log_path=server_log)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY_A, max_retries=0, timeout=300)


def auth(key: str = KEY_A) -> dict:
    return {"Authorization": f"Bearer {key}"}


def session() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def ask(url: str, session_id: str, text: str, key: str = KEY_A) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={**auth(key), "X-Session-Id": session_id},
                      json={"messages": [{"role": "user", "content": text}]}, timeout=300)


def assert_envelope(response: httpx.Response, status: int, **expected) -> dict:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    for key, value in expected.items():
        assert error[key] == value, (key, error)
    return error


def test_openai_client_create_returns_reply_and_structured_recommendations(client):
    sid = session()
    completion = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "I loved The Matrix, what else?"}],
        extra_headers={"X-Session-Id": sid})
    assert "Here are my picks" in completion.choices[0].message.content
    recs = completion.model_extra["recommendations"]
    assert len(recs) >= 3 and [r["rank"] for r in recs] == list(range(1, len(recs) + 1))
    assert all(r["explanation"] and r["facts"] for r in recs)
    assert completion.model_extra["session_id"] == sid and completion.usage.total_tokens > 0


def test_openai_client_stream_sends_the_picks_then_each_explanation_then_the_reply(client, server_env):
    """The streamed order: role, the picks (explanations empty), one chunk per explanation in rank order, the reply
    text, the finish chunk, usage; the stored turn has the explanations."""
    sid = session()
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "something funny from the 90s"}],
        stream=True, stream_options={"include_usage": True}, extra_headers={"X-Session-Id": sid})
    chunks = list(stream)
    extras = [c.model_extra or {} for c in chunks]
    assert chunks[0].choices[0].delta.role == "assistant"
    picks_at = next(k for k, extra in enumerate(extras) if "recommendations" in extra)
    picks = extras[picks_at]["recommendations"]
    assert picks_at == 1 and len(picks) >= 3 and not any(r["explanation"] for r in picks)
    explained = [(k, extra["explanation"]) for k, extra in enumerate(extras) if "explanation" in extra]
    assert [k for k, _ in explained] == list(range(2, 2 + len(picks)))
    assert [e["item_id"] for _, e in explained] == [r["item_id"] for r in picks]
    assert all(e["explanation"] and e["facts"] for _, e in explained)
    text_at = [k for k, c in enumerate(chunks) if c.choices and c.choices[0].delta.content]
    assert text_at and min(text_at) > explained[-1][0]
    text = "".join(chunks[k].choices[0].delta.content for k in text_at)
    assert "Here are my picks" in text and all(e["explanation"] in text for _, e in explained)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    with sqlite3.connect(server_env["CONVREC_DB"]) as db:  # the second write: the stored reply is the full one
        stored = db.execute("SELECT reply FROM turns WHERE session_id = ?", (sid,)).fetchone()[0]
    assert stored == text


def test_raw_stream_ends_with_done(url):
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers=auth(), timeout=300,
                      json={"messages": [{"role": "user", "content": "a thriller"}], "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)


def test_models_list_has_the_base_model(client):
    assert "smollm2-135m-instruct" in [m.id for m in client.models.list().data]


def test_langchain_chat_openai_works_unchanged(url):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=f"{url}/v1", api_key=KEY_A, model="smollm2-135m-instruct", max_retries=0)
    answer = chat.invoke("I loved Toy Story, anything similar?")
    assert "Here are my picks" in answer.content


def test_a_new_session_id_is_returned_in_header_and_body(url):
    response = httpx.post(f"{url}/v1/chat/completions", headers=auth(), timeout=300,
                          json={"messages": [{"role": "user", "content": "hello"}]})
    assert response.status_code == 200
    sid = response.headers["x-session-id"]
    assert sid and response.json()["session_id"] == sid
    assert httpx.get(f"{url}/v1/sessions/{sid}", headers=auth()).json()["turns"] == 1


def test_the_user_field_names_the_session(url):
    sid = session()
    response = httpx.post(f"{url}/v1/chat/completions", headers=auth(), timeout=300,
                          json={"messages": [{"role": "user", "content": "I loved Alien"}], "user": sid})
    assert response.headers["x-session-id"] == sid


@pytest.mark.parametrize("body, param, code", [
    (b"{not json", None, "invalid_json"),
    (b"{}", "messages", None),
    (json.dumps({"messages": []}).encode(), "messages", None),
    (json.dumps({"messages": [{"role": "system", "content": "hi"}]}).encode(), "messages", None),
    (json.dumps({"messages": [{"role": "user", "content": "   "}]}).encode(), "messages", None),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 100_000}]}).encode(), "messages", None),
    (json.dumps({"model": "gpt-99", "messages": [{"role": "user", "content": "hi"}]}).encode(), "model",
     "model_not_found"),
])
def test_bad_chat_requests_get_400_in_the_openai_envelope(url, body, param, code):
    response = httpx.post(f"{url}/v1/chat/completions", content=body,
                          headers={**auth(), "content-type": "application/json"})
    assert_envelope(response, 400, param=param, code=code)


def test_missing_or_wrong_key_gets_401(url):
    assert_envelope(httpx.get(f"{url}/v1/models"), 401, code="invalid_api_key")
    assert_envelope(httpx.get(f"{url}/v1/models", headers=auth("nope")), 401, code="invalid_api_key")


def test_unknown_session_and_unknown_route_get_404(url):
    assert_envelope(httpx.get(f"{url}/v1/sessions/never-seen", headers=auth()), 404, code="session_not_found")
    assert_envelope(httpx.delete(f"{url}/v1/sessions/never-seen", headers=auth()), 404)
    assert_envelope(httpx.post(f"{url}/v1/sessions/never-seen/events", headers=auth(),
                               json={"type": "like", "item_id": "85036"}), 404)
    assert_envelope(httpx.get(f"{url}/v1/nothing-here", headers=auth()), 404)


def test_a_session_belongs_to_the_key_that_created_it(url):
    sid = session()
    assert ask(url, sid, "I loved Jaws").status_code == 200
    assert httpx.get(f"{url}/v1/sessions/{sid}", headers=auth(KEY_A)).status_code == 200
    assert_envelope(httpx.get(f"{url}/v1/sessions/{sid}", headers=auth(KEY_B)), 404)
    assert_envelope(ask(url, sid, "more please", key=KEY_B), 404)
    assert_envelope(httpx.delete(f"{url}/v1/sessions/{sid}", headers=auth(KEY_B)), 404)


def test_a_session_can_be_created_before_its_first_message(url):
    made = httpx.post(f"{url}/v1/sessions", headers=auth(), json={}).json()
    assert made["created"] is True and made["memory"]["liked"] == []
    sid = session()
    assert httpx.post(f"{url}/v1/sessions", headers=auth(), json={"session_id": sid}).json()["created"] is True
    again = httpx.post(f"{url}/v1/sessions", headers=auth(), json={"session_id": sid})
    assert again.status_code == 200 and again.json()["created"] is False
    liked = httpx.post(f"{url}/v1/sessions/{sid}/events", headers=auth(), json={"type": "like", "item_id": "85036"})
    assert liked.json()["memory"]["liked"] == ["85036"]
    assert_envelope(httpx.post(f"{url}/v1/sessions", headers=auth(KEY_B), json={"session_id": sid}), 404)
    assert_envelope(httpx.post(f"{url}/v1/sessions", headers=auth(), json={"session_id": "no spaces"}), 400,
                    param="session_id")
    assert_envelope(httpx.post(f"{url}/v1/sessions", headers=auth(), json={"id": "x"}), 400)
    assert httpx.get(f"{url}/v1/experiments", headers=auth()).json() == {"object": "list", "data": []}


def test_bad_events_get_400(url):
    sid = session()
    ask(url, sid, "I loved Alien")
    events = f"{url}/v1/sessions/{sid}/events"
    assert_envelope(httpx.post(events, headers=auth(), json={"type": "poke", "item_id": "85036"}), 400, param="type")
    assert_envelope(httpx.post(events, headers=auth(), json={"type": "like", "item_id": "no-such-item"}), 400,
                    param="item_id", code="unknown_item")
    assert_envelope(httpx.post(events, headers=auth(), content=b"[{"), 400, code="invalid_json")
    assert httpx.get(f"{url}/v1/sessions/{sid}", headers=auth()).json()["events"] == 0


def test_a_disliked_item_never_comes_back_and_a_seen_one_neither(url):
    sid = session()
    first = ask(url, sid, "I loved The Matrix, what else?").json()["recommendations"]
    disliked, seen = first[0]["item_id"], first[1]["item_id"]
    response = httpx.post(f"{url}/v1/sessions/{sid}/events", headers=auth(),
                          json=[{"type": "dislike", "item_id": disliked}, {"type": "seen", "item_id": seen}])
    assert response.status_code == 200 and response.json()["applied"] == 2
    memory = httpx.get(f"{url}/v1/sessions/{sid}", headers=auth()).json()["memory"]
    assert disliked in memory["disliked"] and seen in memory["seen"]
    for text in ("more like that", "something else", "anything with Keanu Reeves?"):
        ids = [r["item_id"] for r in ask(url, sid, text).json()["recommendations"]]
        assert disliked not in ids and seen not in ids


def test_a_liked_event_pulls_similar_items_up(url):
    from retrieval.catalog import load_redial_catalog

    toy_story = next(i.item_id for i in load_redial_catalog(DATA_DIR) if i.label == "Toy Story (1995)")
    sid = session()
    ask(url, sid, "hello")
    response = httpx.post(f"{url}/v1/sessions/{sid}/events", headers=auth(),
                          json={"events": [{"type": "like", "item_id": toy_story}]})
    assert response.status_code == 200 and toy_story in response.json()["memory"]["liked"]
    recs = ask(url, sid, "what else?").json()["recommendations"]
    assert "Like Toy Story (1995)" in " ".join(r["explanation"] for r in recs)


def test_delete_forgets_the_session(url):
    sid = session()
    ask(url, sid, "I loved Alien")
    assert httpx.delete(f"{url}/v1/sessions/{sid}", headers=auth()).json() == {"session_id": sid, "deleted": True}
    assert_envelope(httpx.get(f"{url}/v1/sessions/{sid}", headers=auth()), 404)


def test_health_and_metrics(url):
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    text = httpx.get(f"{url}/metrics").text
    for name in ("convrec_http_requests_total", "convrec_turn_stage_seconds_bucket", "convrec_turns_total",
                 "convrec_fallbacks_total", "convrec_engine_errors_total"):
        assert name in text


def test_sixteen_concurrent_clients_three_turns_each_all_stored(url):
    report = run_load(url, clients=16, turns=3, api_key=KEY_A, timeout=600)
    assert report.requests == 48 and report.failures == 0, report.errors[:3]
    for session_id in report.acknowledged:
        stored = httpx.get(f"{url}/v1/sessions/{session_id}", headers=auth()).json()
        assert stored["turns"] == 3 and stored["memory"]["turn_count"] == 3


def test_rate_limit_gets_429_with_retry_after(tmp_path):
    port = free_port()
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(tmp_path / "index"),
           "CONVREC_DB": str(tmp_path / "s.sqlite3")}
    process = start_server(port, env, "--catalog", str(SMALL_CATALOG), "--rate-limit", "2")
    try:
        statuses = [httpx.get(f"http://127.0.0.1:{port}/v1/models") for _ in range(3)]
        assert [s.status_code for s in statuses[:2]] == [200, 200]
        assert_envelope(statuses[2], 429, code="rate_limit_exceeded")
        assert int(statuses[2].headers["retry-after"]) >= 1
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_engine_unavailable_gets_503_with_retry_after(tmp_path):
    import subprocess
    import sys
    import time

    port = free_port()
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(tmp_path / "index"),
           "CONVREC_DB": str(tmp_path / "s.sqlite3")}
    process = subprocess.Popen([sys.executable, "-m", "ui.cli", "serve", "--port", str(port), "--catalog",
                                str(SMALL_CATALOG), "--model", str(tmp_path / "no-such-model")],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                if health["status"] == "error":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                              json={"messages": [{"role": "user", "content": "hi"}]})
        assert_envelope(response, 503, code="engine_unavailable")
        assert response.headers["retry-after"]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_kill_9_mid_load_loses_no_acknowledged_turn_stream_or_event(server_env, tmp_path):
    env = {**server_env, "CONVREC_DB": str(tmp_path / "crash.sqlite3")}
    report = run_crash_check(env, clients=6, turns=8, kill_after=12, server_args=FAST,
                             log_path=tmp_path / "serve.log")
    assert report["acknowledged"] > 0 and report["failed_by_the_kill"] > 0, report
    assert report["streamed_turns_acknowledged"] > 0 and report["events_acknowledged"] > 0, report
    assert report["lost"] == report["streamed_turns_lost"] == report["events_lost"] == 0, report


def test_user_text_never_reaches_the_server_log(url, server_log):
    secret = f"my-private-canary-{uuid.uuid4().hex[:8]}"
    sid = session()
    assert ask(url, sid, f"I loved The Matrix, {secret}").status_code == 200
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers={**auth(), "X-Session-Id": sid}, timeout=300,
                      json={"messages": [{"role": "user", "content": f"more like {secret}"}], "stream": True}) as r:
        assert r.status_code == 200 and "[DONE]" in r.read().decode()
    for bad in ({"messages": [{"role": "user", "content": secret * 1000}]},
                {"model": secret, "messages": [{"role": "user", "content": secret}]}):
        assert httpx.post(f"{url}/v1/chat/completions", headers=auth(), json=bad, timeout=60).status_code == 400
    assert secret not in server_log.read_text(errors="replace")


def test_debug_logs_the_user_text(small_recommender, caplog):
    service = ChatService(small_recommender, Metrics())
    with caplog.at_level(logging.INFO, logger="convrec"):
        service.run_turn("log-1", "a quiet canary request")
    assert "quiet canary" not in caplog.text
    with caplog.at_level(logging.DEBUG, logger="convrec"):
        service.run_turn("log-1", "a loud canary request")
    assert "loud canary" in caplog.text
