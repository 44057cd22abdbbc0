"""Faults: a full or read-only session store, a damaged index folder, missing or damaged model files. (kill -9 in the
middle of turns, streams and event batches: tests/test_api.py, eval/crash.py.)"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from agent.config import REPO_ROOT
from deploy.servers import free_port, start_server
from tests.conftest import DATA_DIR, SMALL_CATALOG

pytestmark = pytest.mark.slow


# -- the store on a small file system that fills up, then turns read-only -----------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (a real file system that fills up); skipped where this machine allows no mounts."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"no tmpfs mount here ({done.stderr.decode().strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_or_read_only_store_answers_503_loses_nothing_and_recovers(small_disk, tmp_path, redial_index_dir):
    db = small_disk / "sessions.sqlite3"
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(db)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, env, "--no-llm-explanations", "--candidates", "6", log_path=tmp_path / "serve.log")
    sid = f"disk-{uuid.uuid4().hex[:8]}"

    def turn(text: str) -> httpx.Response:
        return httpx.post(f"{url}/v1/chat/completions", headers={"X-Session-Id": sid}, timeout=120,
                          json={"messages": [{"role": "user", "content": text}]})

    def stored() -> int:
        answer = httpx.get(f"{url}/v1/sessions/{sid}", timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["turns"]

    try:
        assert turn("I loved The Matrix").status_code == 200
        item = httpx.get(f"{url}/v1/sessions/{sid}", timeout=30).json()["memory"]["recommended"][0]

        filler = fill(small_disk)  # full: every write is refused or fits; none is half-done, none is a 500
        answers = [turn("something funnier").status_code, turn("more like that").status_code]
        answers.append(httpx.post(f"{url}/v1/sessions/{sid}/events", json={"type": "like", "item_id": item},
                                  timeout=30).status_code)
        assert set(answers) <= {200, 503}, answers
        acknowledged_turns = 1 + answers[:2].count(200)
        filler.unlink()  # space again: everything acknowledged is there, and writes work
        assert stored() == acknowledged_turns
        assert turn("anything from the 90s?").status_code == 200
        assert stored() == acknowledged_turns + 1

        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)  # read-only: a clear 503
        refused = turn("something scary")
        assert refused.status_code == 503 and refused.headers.get("retry-after"), refused.text
        error = refused.json()["error"]
        assert error["code"] == "store_unavailable" and "nothing was changed" in error["message"]
        assert str(db) not in error["message"] and "Traceback" not in refused.text
        event = httpx.post(f"{url}/v1/sessions/{sid}/events", json={"type": "like", "item_id": item}, timeout=30)
        assert event.status_code == 503 and event.json()["error"]["code"] == "store_unavailable"

        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        assert stored() == acknowledged_turns + 1
        assert turn("something scary").status_code == 200
        assert stored() == acknowledged_turns + 2
    finally:
        server.terminate()
        server.wait(timeout=60)
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- a damaged index folder ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_catalog_and_embedder():
    from agent.build import load_embedder
    from retrieval.catalog import load_catalog_file
    from tests.conftest import make_settings

    return load_catalog_file(SMALL_CATALOG), load_embedder(make_settings(Path("/nonexistent")))


def test_a_damaged_index_is_set_aside_with_a_message_and_rebuilt(tmp_path, small_catalog_and_embedder, caplog):
    from retrieval.index import build_index

    catalog, embedder = small_catalog_and_embedder
    index_dir = tmp_path / "index"
    first, _ = build_index(catalog, embedder, index_dir, progress=False)
    expected = first.query(embedder.embed(["a hacker in a simulation"])[0], 3)
    del first
    (index_dir / "chroma.sqlite3").write_bytes(b"not a database" * 1000)
    with caplog.at_level(logging.WARNING, logger="convrec.index"):
        index, status = build_index(catalog, embedder, index_dir, progress=False)
    assert status.rebuilt and status.count == len(catalog)
    assert "could not be read" in caplog.text and "rebuilding" in caplog.text
    assert (tmp_path / "index.damaged" / "chroma.sqlite3").exists()
    assert index.query(embedder.embed(["a hacker in a simulation"])[0], 3) == expected

    next(index_dir.glob("catalog-*.json")).unlink()  # a build cut short leaves no stamp: rebuilt, no message
    caplog.clear()
    index, status = build_index(catalog, embedder, index_dir, progress=False)
    assert status.rebuilt and index.query(embedder.embed(["a hacker in a simulation"])[0], 3) == expected


# -- missing or damaged model files --------------------------------------------------------------------------------

def ask_with_model(model: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_DB": str(tmp_path / "s.sqlite3"),
           "CONVREC_INDEX_DIR": str(tmp_path / "index")}
    return subprocess.run([sys.executable, "-m", "ui.cli", "ask", "--session", "m", "--catalog", str(SMALL_CATALOG),
                           "--model", model, "hi"], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("damage, message", [
    ("missing folder", "no LLM folder at"),
    ("truncated weights", "SafetensorError"),
    ("config not JSON", "not a valid JSON file"),
])
def test_missing_or_damaged_model_files_get_a_clear_message(tmp_path, damage, message):
    from agent.config import DEFAULT_LLM, Settings
    from agent.models import resolve_llm

    model = tmp_path / "model"
    if damage != "missing folder":
        shutil.copytree(resolve_llm(DEFAULT_LLM, Settings.from_env().cache_dir), model)
    if damage == "truncated weights":
        weights = model / "model.safetensors"
        os.truncate(weights, weights.stat().st_size // 2)
    if damage == "config not JSON":
        (model / "config.json").write_text("{half a file")
    done = ask_with_model(str(model), tmp_path)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "cannot be loaded" in done.stderr or damage == "missing folder"
