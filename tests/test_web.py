"""The web chat: escaping (fast), then a real browser (Debian's chromium driven by playwright) against `convrec ui`
with the real model and index, a gradio_client call of the chat endpoint, and hostile catalog text shown as text.

The browser tests need /usr/bin/chromium (`make test` installs it). A screenshot goes to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agent.config import REPO_ROOT
from deploy.servers import free_port, start_server
from tests.conftest import DATA_DIR, needs_data
from ui.web import ApiBackend, BackendUnavailable, Card, card_markdown, entry_choices, memory_markdown, plain

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts"
HOSTILE = '<img src="http://example.invalid/x.png" onerror="alert(1)"> <script>alert(2)</script> [click](http://x.invalid)'


def test_untrusted_text_is_escaped_for_markdown_and_html():
    escaped = plain(HOSTILE)
    assert "<" not in escaped and ">" not in escaped and "](" not in escaped and "http:" not in escaped
    card = card_markdown(Card("1", HOSTILE, HOSTILE, genres=[HOSTILE]), 1)
    assert "<" not in card and "](" not in card
    memory = {"session_id": "s", "liked": ["1"], "disliked": [], "seen": [], "recommended": [], "neutral": [],
              "constraints": {"genres": ["Comedy"], "min_year": 1990}, "turns": [], "turn_count": 1}
    assert "<" not in memory_markdown(memory, lambda i: HOSTILE)
    assert entry_choices(memory, lambda i: "The Matrix (1999)") == [
        ("liked: The Matrix (1999)", "liked:1"), ("wants: Comedy", "genre:Comedy"), ("min year", "min_year")]


# -- the real app in a real browser --------------------------------------------------------------------------------

def start_ui(env: dict, *extra: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    handle = log.open("ab")
    process = subprocess.Popen([sys.executable, "-m", "ui.cli", "ui", "--port", str(port), *extra], cwd=REPO_ROOT,
                               env=env, stdout=handle, stderr=handle)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError("convrec ui did not start in 120 s")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, redial_index_dir):
    tmp = tmp_path_factory.mktemp("ui")
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(tmp / "sessions.sqlite3")}
    process, url = start_ui(env, log=tmp / "ui.log")
    yield url, tmp / "sessions.sqlite3"
    process.terminate()
    process.wait(timeout=30)


def wait_until_ready(page, timeout_s: float = 300) -> None:
    page.locator("#convrec-engine").get_by_text("Ready.").wait_for(timeout=timeout_s * 1000)


def send(page, text: str, timeout_s: float = 180) -> None:
    page.locator("#convrec-message textarea").fill(text)
    page.locator("#convrec-send").click()
    page.locator("#convrec-status").get_by_text("Answered in").wait_for(timeout=timeout_s * 1000)


WATCH_FIRST_CARD = """() => {
  window.convrecSeen = [];
  const note = () => {
    const card = document.querySelector('#card-text-0');
    const status = document.querySelector('#convrec-status');
    const entry = [card && card.offsetParent !== null ? card.innerText : '', status ? status.innerText : ''];
    const last = window.convrecSeen[window.convrecSeen.length - 1];
    if (!last || last[0] !== entry[0] || last[1] !== entry[1]) window.convrecSeen.push(entry);
  };
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, characterData: true,
                                                     attributes: true});
}"""
"""Records every change of the first card and of the status line, as (card text, status) pairs."""


def card_titles(page) -> list[str]:
    titles = []
    for k in range(10):
        card = page.locator(f"#card-text-{k}")
        if card.is_visible():
            titles.append(card.locator("h3").inner_text().split(". ", 1)[1].strip())
    return titles


@pytest.mark.slow
@needs_data
def test_chat_cards_dislike_and_memory_in_a_real_browser(browser, ui_server):
    url, db = ui_server
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(url)
    wait_until_ready(page)
    page.evaluate(WATCH_FIRST_CARD)
    send(page, "I loved The Matrix, what else?")
    first = card_titles(page)
    assert len(first) >= 3, first
    seen = page.evaluate("window.convrecSeen")  # the picks came first, then their explanations
    final = page.locator("#card-text-0").inner_text()
    explanation = final.splitlines()[-1]
    picked = next(k for k, (card, _) in enumerate(seen) if first[0] in card)
    explained = next(k for k, (card, _) in enumerate(seen) if explanation in card)
    assert explanation not in seen[picked][0] and picked < explained, seen
    assert any("Picked in" in status for _, status in seen) and "Answered in" in seen[-1][1], seen
    assert "The Matrix (1999)" in page.locator("#convrec-memory").inner_text()  # liked, from the message
    page.locator("#card-dislike-0").click()
    page.locator("#card-text-0").get_by_text("it will not come back").wait_for(timeout=30_000)
    memory = page.locator("#convrec-memory").inner_text()
    disliked_line = next(line for line in memory.splitlines() if "Disliked" in line)
    assert first[0] in disliked_line, memory
    send(page, "What else do you have?")
    second = card_titles(page)
    assert len(second) >= 3 and first[0] not in second, (first, second)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-chat.png"), full_page=True)

    page.locator("#convrec-entry input").click()  # remove one memory entry
    page.get_by_role("option", name="liked: The Matrix (1999)").click()
    page.locator("#convrec-remove").click()
    page.locator("#convrec-status").get_by_text("Removed from your memory").wait_for(timeout=30_000)
    liked_line = next(line for line in page.locator("#convrec-memory").inner_text().splitlines() if "Liked" in line)
    assert "The Matrix (1999)" not in liked_line

    page.locator("#convrec-forget").click()  # forget me: the session is deleted from the store
    page.locator("#convrec-status").get_by_text("Forgotten").wait_for(timeout=30_000)
    assert "Nothing yet" in page.locator("#convrec-memory").inner_text() and not card_titles(page)
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    page.close()


@pytest.mark.slow
@needs_data
def test_the_chat_endpoint_through_gradio_client(ui_server):
    from gradio_client import Client

    client = Client(ui_server[0], verbose=False)
    deadline = time.monotonic() + 300
    while True:  # the model may still be loading in the server
        job = client.submit("I loved Toy Story, something for the kids?", [], api_name="/chat")
        history, *_ = job.result()
        if "Loading" not in json.dumps(history) or time.monotonic() > deadline:
            break
        time.sleep(3)
    reply = history[-1]["content"]
    text = reply if isinstance(reply, str) else " ".join(block.get("text", "") for block in reply)
    assert "My picks are on the cards" in text and "Here are my picks" not in text  # not the cards again
    updates = job.outputs()  # every streamed update: the cards come before the reply (unchanged values are not resent)
    cards = [[v for v in rest if isinstance(v, dict) and "### " in str(v.get("value", ""))] for _, *rest in updates]
    first_cards = next(k for k, shown in enumerate(cards) if shown)
    assert len(cards[first_cards]) >= 3 and "Here are my picks" not in json.dumps(updates[first_cards][0])


@pytest.mark.slow
def test_hostile_catalog_text_is_shown_as_text(browser, tmp_path):
    """A catalog whose titles and facts carry markup: the page shows the characters, makes no element of them."""
    items = [{"id": str(k), "title": f"Film {k} {HOSTILE}", "year": 2000 + k, "genres": ["Comedy"],
              "directors": [f"Jane <b>Doe</b> {k}"], "cast": ["A <i>B</i>"], "description": HOSTILE}
             for k in range(6)]
    catalog = tmp_path / "hostile.jsonl"
    catalog.write_text("".join(json.dumps(item) + "\n" for item in items))
    env = {**os.environ, "CONVREC_INDEX_DIR": str(tmp_path / "index"), "CONVREC_DB": str(tmp_path / "s.sqlite3")}
    process, url = start_ui(env, "--catalog", str(catalog), log=tmp_path / "ui.log")
    try:
        page = browser.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url)
        wait_until_ready(page)
        send(page, f"A comedy please {HOSTILE}")  # the chat shows the user's own text (the cards show the titles)
        assert card_titles(page)
        for selector in ("#convrec-chat", "#card-text-0", "#convrec-memory"):
            area = page.locator(selector)
            assert area.locator("img").count() == 0 and area.locator("script").count() == 0
            assert area.locator("a").count() == 0 and area.locator("b, i").count() == 0
        assert "<img src=" in page.locator("#card-text-0").inner_text()
        assert "<script>" in page.locator("#convrec-chat").inner_text() or "<img" in page.locator(
            "#convrec-chat").inner_text()
        assert not [u for u in requests if "invalid" in u]  # no remote image was fetched
        page.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
@needs_data
def test_the_api_backend_drives_a_running_server(tmp_path, redial_index_dir):
    """`convrec ui --api-url`: the page's five calls against a real `convrec serve` on loopback."""
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(tmp_path / "sessions.sqlite3")}
    port = free_port()
    server = start_server(port, env, "--no-llm-explanations", log_path=tmp_path / "serve.log")
    try:
        backend = ApiBackend(f"http://127.0.0.1:{port}")
        assert backend.status() is None
        steps = list(backend.turn("web-api", "I loved The Matrix, what else?"))
        answer = steps[-1]  # the picks, then one step per explanation, then the reply
        assert answer.done and "Here are my picks" in answer.reply and not any(step.done for step in steps[:-1])
        assert steps[0].cards and not any(card.explanation for card in steps[0].cards)
        assert len(steps) == len(answer.cards) + 2 and steps[-2].cards == answer.cards
        assert len(answer.cards) >= 3 and all(card.label and card.explanation for card in answer.cards)
        assert any(card.genres or card.directors or card.cast for card in answer.cards)
        first = answer.cards[0].item_id
        assert first in backend.feedback("web-api", "dislike", first)["disliked"]
        assert first not in backend.remove("web-api", f"disliked:{first}")["disliked"]
        with pytest.raises(ValueError, match="no entry"):
            backend.remove("web-api", "liked:not-an-id")
        backend.forget("web-api")
        assert backend.memory("web-api") is None
    finally:
        server.terminate()
        server.wait(timeout=30)
    nobody = ApiBackend(f"http://127.0.0.1:{free_port()}")
    assert "unavailable" in nobody.status()
    with pytest.raises(BackendUnavailable):
        list(nobody.turn("s", "hello"))
