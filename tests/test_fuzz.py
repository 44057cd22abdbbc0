"""Schema fuzzing, CI's slice: schemathesis against a real `convrec serve` (eval/fuzz.py; `make fuzz` runs >= 10,000
requests). Plus the reading of its record, on exchanges written here."""

from __future__ import annotations

import json
import os

import pytest

from eval.fuzz import passed, run_fuzz, summarize
from tests.conftest import DATA_DIR


def exchange(method: str, url: str, status: int, text: str) -> dict:
    return {"request": {"method": method, "url": url}, "response": {"status": status, "content": {"text": text}}}


def test_the_summary_fails_tracebacks_bare_errors_and_5xx():
    envelope = json.dumps({"error": {"message": "no", "type": "invalid_request_error", "param": None, "code": None}})
    good = {"log": {"entries": [exchange("GET", "http://h/v1/sessions/abc", 404, envelope),
                                exchange("DELETE", "http://h/v1/sessions/abc/memory/genre:Comedy", 404, envelope),
                                exchange("GET", "http://h/health", 200, '{"status": "ok"}')]}}
    summary = summarize(good, server_log="")
    assert summary["requests"] == 3 and summary["statuses"] == {"200": 1, "404": 2}
    assert summary["per_operation"]["DELETE /v1/sessions/{session_id}/memory/{entry} 404"] == 1
    assert passed({**summary, "schemathesis_exit_code": 0}, min_requests=3)
    assert not passed({**summary, "schemathesis_exit_code": 0}, min_requests=4)

    bare = exchange("POST", "http://h/v1/chat/completions", 400, '{"detail": "bad"}')
    traced = exchange("GET", "http://h/v1/models", 200, 'Traceback (most recent call last):\n  File "/x.py"')
    server_error = exchange("GET", "http://h/v1/models", 500, envelope)
    for entries, log in (([bare], ""), ([traced], ""), ([server_error], ""), ([], "Traceback (most recent call last)")):
        summary = summarize({"log": {"entries": entries}}, server_log=log)
        assert not passed({**summary, "schemathesis_exit_code": 0})


@pytest.mark.slow
def test_schemathesis_slice_against_a_real_server(tmp_path, redial_index_dir):
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(tmp_path / "sessions.sqlite3")}
    summary = run_fuzz(tmp_path / "fuzz", max_examples=15, env=env)
    report = (tmp_path / "fuzz" / "schemathesis.txt").read_text()
    assert passed(summary, min_requests=300), (json.dumps(summary)[:3000], report[-6000:])
    assert summary["statuses"].get("200", 0) >= 30  # real turns, sessions and events, not only rejections
