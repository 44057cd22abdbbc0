"""The web chat (Gradio 6): one card per recommendation with 👍 / 👎 / "seen it", shown as soon as the picks are
decided and filled in as each explanation is written, then the streamed reply; a memory panel the user can edit;
"new conversation" and "forget me".

    convrec ui                     the Recommender in this process (the model loads in the background)
    convrec ui --api-url URL       a running `convrec serve` does the work

Both backends answer the same five calls (turn, feedback, memory, remove, forget; `turn` yields where the turn
stands: the picks, each explanation, the reply), so the page never knows which one runs. Everything shown comes from
the catalog or the model and is escaped first: it is displayed as text, never as HTML or Markdown (no scripts, no
images, no links).
"""

from __future__ import annotations

import html
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from agent.memory import entries
from agent.types import SessionState, short_reply

MAX_CARDS = 10
EXAMPLES = [
    "I loved The Matrix, what else?",
    "Something funny for tonight, nothing before 1990.",
    "A movie like Toy Story for the kids.",
    "I liked Heat and Se7en. Any crime thrillers?",
]


class BackendUnavailable(RuntimeError):
    """The model is still loading, or the engine/server is down; the message says which."""


@dataclass
class Card:
    item_id: str
    label: str
    explanation: str
    genres: list[str] = field(default_factory=list)
    directors: list[str] = field(default_factory=list)
    cast: list[str] = field(default_factory=list)


@dataclass
class Answer:
    """Where a turn stands: the picks first (explanations empty, `reply` ""), then each card as its explanation
    arrives, last the reply (`done`)."""

    reply: str
    cards: list[Card]
    memory: dict | None
    done: bool = False


class Backend(Protocol):
    def status(self) -> str | None:
        """None when ready, else what the user should be told ("loading the model...")."""

    def turn(self, session_id: str, text: str) -> Iterator[Answer]:
        """The turn as it happens: the picks, each explanation, then the reply (see `Answer`)."""

    def feedback(self, session_id: str, kind: str, item_id: str) -> dict: ...

    def memory(self, session_id: str) -> dict | None: ...

    def remove(self, session_id: str, entry: str) -> dict: ...

    def forget(self, session_id: str) -> None: ...


class LocalBackend:
    """The Recommender in this process, through the API's own ChatService (same locking, events and checks)."""

    def __init__(self, build) -> None:
        self.service = None
        self.error: str | None = None
        threading.Thread(target=self._load, args=(build,), name="convrec-load", daemon=True).start()

    def _load(self, build) -> None:
        from ui.api.metrics import Metrics
        from ui.api.serving import ChatService

        try:
            self.service = ChatService(build(), Metrics())
        except Exception as error:  # shown on the page
            self.error = f"{type(error).__name__}: {error}"

    def status(self) -> str | None:
        if self.service is not None:
            return None
        return f"The engine is unavailable: {self.error}" if self.error else "Loading the model… (about a minute)"

    def _ready(self):
        message = self.status()
        if message:
            raise BackendUnavailable(message)
        return self.service

    def turn(self, session_id: str, text: str) -> Iterator[Answer]:
        from ui.api.serving import recommendation_dicts

        service = self._ready()
        service.claim(session_id, None)
        catalog, cards, memory = service.recommender.catalog, [], None
        for kind, value in service.turn_events(session_id, text):
            if kind == "error":
                error, _ = value
                raise ValueError(f"the turn failed ({type(error).__name__}: {error})")
            if kind == "explanation":
                cards = with_explanation(cards, Card(**_card_fields(recommendation_dicts([value], catalog)[0])))
                yield Answer("", cards, memory)
            else:
                cards = [Card(**_card_fields(r)) for r in recommendation_dicts(value.recommendations, catalog)]
                memory = value.memory.to_dict()
                yield Answer(value.reply if kind == "done" else "", cards, memory, done=kind == "done")

    def feedback(self, session_id: str, kind: str, item_id: str) -> dict:
        from ui.api.protocol import FeedbackEvent

        return self._ready().apply_events(session_id, [FeedbackEvent(type=kind, item_id=item_id)], None)["memory"]

    def memory(self, session_id: str) -> dict | None:
        state = self._ready().recommender.sessions.load(session_id)
        return state.to_dict() if state else None

    def remove(self, session_id: str, entry: str) -> dict:
        return self._ready().remove_entry(session_id, entry, None)["memory"]

    def forget(self, session_id: str) -> None:
        self._ready().recommender.sessions.forget(session_id)

    def label(self, item_id: str) -> str:
        service = self.service
        item = service.recommender.catalog.get(item_id) if service else None
        return item.label if item else item_id


class ApiBackend:
    """A running `convrec serve` over HTTP (its OpenAI-compatible chat endpoint and session routes)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 300.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.labels: dict[str, str] = {}

    def _call(self, method: str, path: str, **kwargs) -> dict:
        import httpx

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise BackendUnavailable(f"The server at {self.client.base_url} is unavailable: {error}") from None
        return self._check(response)

    @staticmethod
    def _check(response) -> dict:
        """The JSON body of a response; an error status raises with the server's message."""
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if response.status_code == 503:
            raise BackendUnavailable(message or f"The server is not ready ({body.get('status', 'loading')}).")
        if response.status_code >= 400:
            raise ValueError(message or f"HTTP {response.status_code}")
        return body

    def status(self) -> str | None:
        try:
            health = self._call("GET", "/health")
        except (BackendUnavailable, ValueError) as error:
            return str(error)
        return None if health.get("status") == "ok" else f"The server says: {health.get('status', 'not ready')}"

    def turn(self, session_id: str, text: str) -> Iterator[Answer]:
        """The streamed chat completion: the picks chunk, the explanation chunks, then the reply text."""
        import httpx

        body = {"messages": [{"role": "user", "content": text}], "stream": True}
        cards: list[Card] = []
        reply, memory = "", None
        try:
            with self.client.stream("POST", "/v1/chat/completions", headers={"X-Session-Id": session_id},
                                    json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[len("data: "):])
                    if "error" in chunk:
                        raise ValueError(chunk["error"].get("message") or "the turn failed")
                    if "recommendations" in chunk:
                        cards = [Card(**_card_fields(r)) for r in chunk["recommendations"]]
                        self.labels.update({card.item_id: card.label for card in cards})
                        memory = self.memory(session_id)  # committed with the picks
                        yield Answer("", cards, memory)
                    elif "explanation" in chunk:
                        cards = with_explanation(cards, Card(**_card_fields(chunk["explanation"])))
                        yield Answer("", cards, memory)
                    reply += "".join(c["delta"].get("content") or "" for c in chunk.get("choices", []))
        except httpx.HTTPError as error:
            raise BackendUnavailable(f"The server at {self.client.base_url} is unavailable: {error}") from None
        yield Answer(reply, cards, memory if memory is not None else self.memory(session_id), done=True)

    def feedback(self, session_id: str, kind: str, item_id: str) -> dict:
        event = {"type": kind, "item_id": item_id}
        return self._call("POST", f"/v1/sessions/{session_id}/events", json=event)["memory"]

    def memory(self, session_id: str) -> dict | None:
        try:
            return self._call("GET", f"/v1/sessions/{session_id}")["memory"]
        except ValueError:
            return None

    def remove(self, session_id: str, entry: str) -> dict:
        return self._call("DELETE", f"/v1/sessions/{session_id}/memory/{entry}")["memory"]

    def forget(self, session_id: str) -> None:
        try:
            self._call("DELETE", f"/v1/sessions/{session_id}")
        except ValueError:  # nothing stored yet
            pass

    def label(self, item_id: str) -> str:
        return self.labels.get(item_id, item_id)


# -- what the page shows (all text escaped) ----------------------------------------------------------------------

_MARKDOWN_SPECIALS = re.compile(r"([!-%'-/:<-@\[-`{-~])")
"""ASCII punctuation but & and ; (the HTML entities' own): escaped, none starts Markdown syntax, a link or an
autolink (http:, www., @)."""


def plain(text: object) -> str:
    """Untrusted text for a Markdown component: HTML-escaped and Markdown-escaped, so it shows exactly as written."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(str(text), quote=False))


def with_explanation(cards: list[Card], explained: Card) -> list[Card]:
    """The cards with `explained` in place of the card of the same item."""
    return [explained if card.item_id == explained.item_id else card for card in cards]


def _card_fields(r: dict) -> dict:
    label = f"{r['title']} ({r['year']})" if r.get("year") else str(r["title"])
    return {"item_id": str(r["item_id"]), "label": label, "explanation": str(r.get("explanation", "")),
            "genres": list(r.get("genres", [])), "directors": list(r.get("directors", [])),
            "cast": list(r.get("cast", []))}


def card_markdown(card: Card, rank: int) -> str:
    lines = [f"### {rank}\\. {plain(card.label)}"]
    for title, values in (("Genres", card.genres), ("Director", card.directors), ("Cast", card.cast)):
        if values:
            lines.append(f"**{title}:** {plain(', '.join(values))}")
    lines.append(plain(card.explanation))
    return "  \n".join(lines)


def memory_markdown(memory: dict | None, label) -> str:
    if not memory:
        return "*Nothing yet: tell me about movies you like or dislike.*"
    c = memory.get("constraints", {})
    rows = [("👍 Liked", [label(i) for i in memory.get("liked", [])]),
            ("👎 Disliked", [label(i) for i in memory.get("disliked", [])]),
            ("👁 Seen", [label(i) for i in memory.get("seen", [])]),
            ("Wants", [*c.get("genres", []), *c.get("people", [])]),
            ("Avoids", c.get("excluded_genres", [])),
            ("Years", [f"{c.get('min_year') or 'any'} to {c.get('max_year') or 'now'}"]
             if c.get("min_year") or c.get("max_year") else []),
            ("Already recommended", [label(i) for i in memory.get("recommended", [])][-10:])]
    return "\n\n".join(f"**{name}:** {plain('; '.join(values)) if values else '–'}" for name, values in rows)


def entry_choices(memory: dict | None, label) -> list[tuple[str, str]]:
    """(shown, entry) pairs for the "remove from memory" picker."""
    if not memory:
        return []
    names = {"liked": "liked", "disliked": "disliked", "seen": "seen", "recommended": "recommended",
             "genre": "wants", "excluded_genre": "avoids", "person": "wants"}
    out = []
    for entry in entries(SessionState.from_dict(memory)):
        kind, _, value = entry.partition(":")
        if kind in ("liked", "disliked", "seen", "recommended"):
            value = label(value)
        shown = f"{names.get(kind, kind.replace('_', ' '))}: {value}" if value else kind.replace("_", " ")
        out.append((shown, entry))
    return out


# -- the page ----------------------------------------------------------------------------------------------------

CSS = """
.convrec-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 6px 10px; }
#convrec-engine, #convrec-status { color: var(--body-text-color-subdued); }
"""


def create_web_app(backend: Backend, *, concurrency_limit: int = 4):
    import gradio as gr

    def label(item_id: str) -> str:
        return backend.label(item_id)

    def panel(session_id: str, memory: dict | None = None) -> tuple:
        """The memory panel and its picker; the memory is fetched once unless the caller already has it."""
        if memory is None and session_id and backend.status() is None:
            memory = backend.memory(session_id)
        return memory_markdown(memory, label), gr.update(choices=entry_choices(memory, label), value=None)

    def card_updates(cards: list[Card], notes: dict[str, str] | None = None) -> list:
        notes = notes or {}
        updates = []
        for k in range(MAX_CARDS):
            if k < len(cards):
                text = card_markdown(cards[k], k + 1)
                if cards[k].item_id in notes:
                    text += f"  \n*{notes[cards[k].item_id]}*"
                updates += [gr.update(visible=True), gr.update(value=text)]
            else:
                updates += [gr.update(visible=False), gr.update(value="")]
        return updates

    def respond(text: str, history: list, session_id: str, cards: list) -> Iterator[tuple]:
        text = (text or "").strip()
        history = list(history or [])
        if not text:
            yield (history, "", session_id, cards, *card_updates(cards), *panel(session_id), "Type a message first.")
            return
        session_id = session_id or f"web-{uuid.uuid4().hex[:12]}"
        history += [{"role": "user", "content": plain(text)}, {"role": "assistant", "content": "…"}]
        yield (history, "", session_id, cards, *card_updates(cards), *panel(session_id), "Thinking…")
        started = time.perf_counter()
        answer, picked = None, None
        try:
            for answer in backend.turn(session_id, text):  # the cards first, each explanation as it comes, the reply
                if answer.done:
                    break
                cards, picked = answer.cards, picked or time.perf_counter() - started
                yield (history, "", session_id, cards, *card_updates(cards), *panel(session_id, answer.memory),
                       f"Picked in {picked:.1f} s; writing the explanations…")
        except (BackendUnavailable, ValueError) as error:
            history[-1] = {"role": "assistant", "content": plain(f"Sorry: {error}")}
            yield (history, text, session_id, cards, *card_updates(cards), *panel(session_id), plain(str(error)))
            return
        seconds = time.perf_counter() - started
        cards = answer.cards
        memory_view, shown_cards = panel(session_id, answer.memory), card_updates(cards)
        shown = ""
        for line in short_reply(answer.reply).splitlines(keepends=True):  # line by line; the cards show the picks
            shown += line
            history[-1] = {"role": "assistant", "content": plain(shown)}
            yield (history, "", session_id, cards, *shown_cards, *memory_view, "Answering…")
        yield (history, "", session_id, cards, *shown_cards, *memory_view, f"Answered in {seconds:.1f} s.")

    def feedback(kind: str, k: int):
        notes = {"like": "👍 noted: more like this", "dislike": "👎 noted: it will not come back",
                 "seen": "👁 noted: seen it"}

        def handler(session_id: str, cards: list) -> tuple:
            if not session_id or k >= len(cards):
                return (*card_updates(cards), *panel(session_id), "Nothing to rate yet.")
            try:
                backend.feedback(session_id, kind, cards[k].item_id)
            except (BackendUnavailable, ValueError) as error:
                return (*card_updates(cards), *panel(session_id), plain(str(error)))
            return (*card_updates(cards, {cards[k].item_id: notes[kind]}), *panel(session_id),
                    f"{notes[kind].split(':')[0]} ({plain(cards[k].label)}). Your next message takes it into account.")

        return handler

    def remove(session_id: str, entry: str | None) -> tuple:
        if not session_id or not entry:
            return (*panel(session_id), "Pick an entry to remove first.")
        try:
            backend.remove(session_id, entry)
        except (BackendUnavailable, ValueError) as error:
            return (*panel(session_id), plain(str(error)))
        return (*panel(session_id), "Removed from your memory.")

    def new_conversation() -> tuple:
        return ([], "", "", [], *card_updates([]), *panel(""), "New conversation.")

    def forget(session_id: str) -> tuple:
        if session_id:
            try:
                backend.forget(session_id)
            except BackendUnavailable as error:
                return ([], "", session_id, [], *card_updates([]), *panel(""), plain(str(error)))
        return ([], "", "", [], *card_updates([]), *panel(""), "Forgotten: everything stored for you is deleted.")

    def show_status() -> str:
        return plain(backend.status() or "Ready.")

    with gr.Blocks(title="convrec") as app:
        session = gr.State("")
        shown_cards = gr.State([])
        gr.Markdown("# convrec\nTell me what you like; rate the picks with 👍 / 👎 / seen it.")
        engine = gr.Markdown(elem_id="convrec-engine")
        status = gr.Markdown(elem_id="convrec-status")
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=360, elem_id="convrec-chat", sanitize_html=True,
                                     feedback_options=None, allow_tags=False)
                message = gr.Textbox(placeholder="Something like The Matrix but funnier, nothing before 1990",
                                     show_label=False, elem_id="convrec-message", max_length=4000)
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="convrec-send")
                groups, texts, buttons = [], [], []
                for k in range(MAX_CARDS):
                    with gr.Group(visible=False, elem_classes=["convrec-card"], elem_id=f"card-{k}") as group:
                        texts.append(gr.Markdown(elem_id=f"card-text-{k}"))
                        with gr.Row():
                            buttons.append([(kind, gr.Button(caption, size="sm", elem_id=f"card-{kind}-{k}"))
                                            for kind, caption in (("like", "👍"), ("dislike", "👎"),
                                                                  ("seen", "seen it"))])
                    groups.append(group)
                gr.Examples(EXAMPLES, inputs=message, label="Try")
            with gr.Column(scale=2):
                gr.Markdown("## What I remember")
                memory_view = gr.Markdown(memory_markdown(None, label), elem_id="convrec-memory")
                entry = gr.Dropdown(label="Remove from memory", choices=[], elem_id="convrec-entry")
                remove_button = gr.Button("Remove", size="sm", elem_id="convrec-remove")
                with gr.Row():
                    new_button = gr.Button("New conversation", elem_id="convrec-new")
                    forget_button = gr.Button("Forget me", variant="stop", elem_id="convrec-forget")
        cards_out = [c for pair in zip(groups, texts, strict=True) for c in pair]
        turn_out = [chatbot, message, session, shown_cards, *cards_out, memory_view, entry, status]
        for trigger in (message.submit, send.click):
            trigger(respond, [message, chatbot, session, shown_cards], turn_out, concurrency_limit=concurrency_limit,
                    api_name="chat" if trigger == send.click else False)
        for k, row in enumerate(buttons):
            for kind, button in row:
                button.click(feedback(kind, k), [session, shown_cards], [*cards_out, memory_view, entry, status],
                             api_name=False)
        remove_button.click(remove, [session, entry], [memory_view, entry, status], api_name=False)
        new_button.click(new_conversation, None, turn_out, api_name=False)
        forget_button.click(forget, [session], turn_out, api_name=False)
        app.load(show_status, None, engine, api_name=False)
        gr.Timer(2.0).tick(show_status, None, engine, api_name=False)
    return app
