"""Shared fixtures. Real models come from the default model cache (converted once); every test that stores
anything gets its own temporary index and SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import REPO_ROOT, Settings

FIXTURES = Path(__file__).parent / "fixtures"
SMALL_CATALOG = FIXTURES / "small_catalog.jsonl"
DATA_DIR = Path(os.environ.get("CONVREC_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
needs_data = pytest.mark.skipif(not (DATA_DIR / "redial").is_dir(), reason=f"no ReDial data in {DATA_DIR}")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CONVREC_ONLINE", "0")  # servers a test starts learn nothing across its sessions (each test
# is independent of the others' sessions); tests/test_online.py turns it on where it is the subject


def make_settings(tmp: Path, **overrides) -> Settings:
    return Settings.from_env(data_dir=DATA_DIR, index_dir=tmp / "index", db=tmp / "sessions.sqlite3",
                             **overrides)


@pytest.fixture(scope="session")
def small_recommender(tmp_path_factory):
    from agent.build import build_recommender

    settings = make_settings(tmp_path_factory.mktemp("small"), catalog=str(SMALL_CATALOG), n=3,
                             candidates_in_prompt=8)
    return build_recommender(settings)[0]


@pytest.fixture(scope="session")
def redial_index_dir(tmp_path_factory) -> Path:
    """The ReDial index, built once per test run by `convrec index` (about a minute), then only read.
    CONVREC_TEST_REDIAL_INDEX names an index built before, to skip the build while developing (CI never sets it)."""
    if not (DATA_DIR / "redial").is_dir():
        pytest.skip(f"no ReDial data in {DATA_DIR}")
    if os.environ.get("CONVREC_TEST_REDIAL_INDEX"):
        return Path(os.environ["CONVREC_TEST_REDIAL_INDEX"])
    index_dir = tmp_path_factory.mktemp("redial-index")
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(index_dir)}
    done = subprocess.run([sys.executable, "-m", "ui.cli", "index"], env=env, cwd=REPO_ROOT, capture_output=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return index_dir


@pytest.fixture(scope="session")
def redial_recommender(tmp_path_factory, redial_index_dir):
    from agent.build import build_recommender

    settings = make_settings(tmp_path_factory.mktemp("redial"))
    settings.index_dir = redial_index_dir
    return build_recommender(settings)[0]


def require_servers(*find) -> None:
    """Debian's servers (`make servers`) that a test needs: `find` are deploy.servers' finders (postgres_bin,
    nginx_bin). Without them the test skips, except in CI (CONVREC_REQUIRE_SERVERS=1, set by .ci/run): it fails."""
    try:
        for finder in find:
            finder()
    except FileNotFoundError as missing:
        if os.environ.get("CONVREC_REQUIRE_SERVERS") == "1":
            raise
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL (Debian's package), started once in a temporary folder on loopback."""
    from deploy.servers import postgres_bin, start_postgres

    require_servers(postgres_bin)
    server = start_postgres()
    yield server
    assert server.stop() == 0


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new, empty database on the shared server, for one test."""
    import uuid

    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path):
    """Opens a session store (again and again, on the same data) of each kind: the store's contract holds for both."""
    from agent.store import open_store as opener

    location = (tmp_path / "s.sqlite3" if request.param == "sqlite"
                else request.getfixturevalue("postgres_url"))
    opened = []

    def new_store(**options):
        opened.append(opener(location, **options))
        return opened[-1]

    yield new_store
    for store in opened:
        getattr(store, "close", lambda: None)()
