"""The load soak, CI's slice: 32 clients x 2 turns against a real `convrec serve` (eval/soak.py; `make load` runs
32 x 20 with the adapter and the model's explanations): no failure, no lost turn, resident memory flat."""

from __future__ import annotations

import json
import os

import pytest

from eval.soak import passed, run_soak
from tests.conftest import DATA_DIR

pytestmark = pytest.mark.slow


def test_32_clients_x_2_turns_lose_nothing_and_memory_stays_flat(tmp_path, redial_index_dir):
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(tmp_path / "sessions.sqlite3")}
    summary = run_soak(env, clients=32, turns=2, server_args=("--no-llm-explanations",),
                       log_path=tmp_path / "server.log")
    assert summary["requests"] == 64 and summary["acknowledged_turns"] == 64 and summary["stored_turns"] == 64
    assert passed(summary), json.dumps(summary)
