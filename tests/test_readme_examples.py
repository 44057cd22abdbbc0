"""The README's API examples, run as written against a real server (only the port is changed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.servers import free_port, start_server
from tests.conftest import DATA_DIR

pytestmark = pytest.mark.slow
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def example(kind: str) -> str:
    match = re.search(rf"<!-- readme-example: {kind} -->\n```{kind}\n(.*?)```", README, re.DOTALL)
    assert match, f"no {kind} example in README.md"
    return match.group(1)


@pytest.fixture(scope="module")
def port(tmp_path_factory, redial_index_dir):
    tmp = tmp_path_factory.mktemp("readme")
    port = free_port()
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(tmp / "s.sqlite3")}
    process = start_server(port, env, "--no-llm-explanations", "--candidates", "10")
    yield port
    process.terminate()
    process.wait(timeout=30)


def test_the_python_example_works_as_written(port):
    code = example("python").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Here are my picks" in done.stdout and "\n1 " in done.stdout


def test_the_curl_example_works_as_written(port):
    test_the_python_example_works_as_written(port)  # creates session "alice"
    script = example("bash").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    done = subprocess.run(["bash", "-c", "set -e\n" + script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"applied":1' in done.stdout and '"155632"' in done.stdout and '"deleted":true' in done.stdout
