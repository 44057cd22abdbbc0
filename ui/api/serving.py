"""Serving logic of the API: OpenAI chat requests and feedback events onto the one `Recommender.run_turn`.

How a chat request becomes a turn: the *last user message* is the turn's text. Earlier messages in the request are
not replayed: the server's own session memory is the source of truth for history, so a client may send only the
new message (or its whole transcript, which changes nothing). The session is `X-Session-Id`, else the `user` field,
else a new one whose id is returned in the `X-Session-Id` header and the body's `session_id`.

Streaming (`stream: true`), picks first: the chunks are
    1. the assistant role (and `session_id`), sent before the turn starts;
    2. `recommendations`: every pick (id, title, year, rank, facts for a card) with `explanation` empty, sent as soon
       as the ranking is done and the turn (memory and picks) is committed to SQLite;
    3. one `explanation` chunk per pick (`item_id`, `rank`, `explanation`, `facts`) as each is written and checked;
    4. the reply text, line by line (`delta.content`), then the finish chunk, the usage chunk when asked for, and
       `data: [DONE]`.
The stored turn gets its explanations when they are done (a second write; a crash in between keeps the picks).
A non-streaming response is one object with the full reply and `recommendations`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict

from agent import memory
from agent.experiments import Experiment, ExperimentError
from agent.turn import InputError, Recommender, check_message, check_session_id
from agent.types import Recommendation, TurnResult
from ui.api.allocator import give_back
from ui.api.metrics import Metrics
from ui.api.protocol import MAX_BODY_BYTES, ApiError, ChatCompletionRequest, FeedbackEvent

log = logging.getLogger("convrec.api")


class ChatService:
    def __init__(self, recommender: Recommender, metrics: Metrics, experiment: Experiment | None = None) -> None:
        self.recommender = recommender
        self.metrics = metrics
        self.created = int(time.time())
        engine = recommender.engine
        self.recommenders = {name: dataclasses.replace(recommender, engine=engine.using(name))
                             for name in engine.model_names}
        """One Recommender per servable model (the default adapter, the base model, other adapters): they share
        the catalog, index, session store and engine; the request's `model` picks one."""
        self.experiment = experiment
        self.arms: dict[str, Recommender] = {}
        """Under an experiment, one Recommender per arm; the session's arm answers, whatever `model` asks for."""
        if experiment is not None:
            for arm, settings in experiment.arms.items():
                model = settings.get("model", self.model_names()[0])
                if model not in self.recommenders:
                    raise ExperimentError(f"experiment {experiment.name!r}: arm {arm!r} asks for model {model!r}; "
                                          f"this server serves {', '.join(self.recommenders)}")
                self.arms[arm] = experiment.recommender_for(self.recommenders[model], arm)
            recommender.sessions.register_experiment(experiment.name, experiment.definition())

    # -- models --------------------------------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """The default model first (the first --adapter, else the base model), then the others."""
        return list(self.recommenders)

    def list_models(self) -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "created": self.created,
                                            "owned_by": "convrec"} for name in self.model_names()]}

    # -- chat ----------------------------------------------------------------------------------------------------
    def prepare(self, request: ChatCompletionRequest, session_id: str | None,
                owner: str | None) -> tuple[str, str, str]:
        """Validate everything before any work: (session_id, text, model). Raises ApiError."""
        model = request.model or self.model_names()[0]
        if model not in self.model_names():
            raise ApiError(400, f"unknown model {model!r}; GET /v1/models lists them", param="model",
                           code="model_not_found")
        users = [m for m in request.messages if m.role == "user"]
        if not users:
            raise ApiError(400, "messages must contain a user message", param="messages")
        try:
            for earlier in users[:-1]:  # not read, but a user message without text is malformed wherever it is
                check_message(earlier.text(), limit=MAX_BODY_BYTES)
            text = check_message(users[-1].text(), self.recommender.settings.max_message_chars)
            if session_id is None:  # a header that is there is checked, even when empty
                session_id = request.user or f"s-{uuid.uuid4().hex[:16]}"
            check_session_id(session_id)
        except InputError as error:
            raise ApiError(400, str(error), param="messages") from None
        self.claim(session_id, owner)
        return session_id, text, model

    def complete(self, session_id: str, text: str, model: str) -> dict:
        result = self.run_turn(session_id, text, model)
        body = self._envelope("chat.completion", model)
        body["choices"] = [{"index": 0, "message": {"role": "assistant", "content": result.reply},
                            "finish_reason": "stop"}]
        body["usage"] = self._usage(text, result.reply)
        body["recommendations"] = recommendation_dicts(result.recommendations, self.recommender.catalog)
        body["session_id"] = session_id
        return body

    def stream(self, session_id: str, text: str, model: str, include_usage: bool) -> Iterator[str]:
        """Server-sent events, picks first (see the module's docstring); an error after the stream opened is sent as
        an error event before [DONE]. The turn finishes (and stores its explanations) even when the client goes
        away (`turn_events`)."""
        base = self._envelope("chat.completion.chunk", model)
        catalog = self.recommender.catalog

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

        yield chunk({"role": "assistant", "content": ""}, session_id=session_id)
        for kind, value in self.turn_events(session_id, text, model):
            if kind == "picks":
                yield chunk({}, recommendations=recommendation_dicts(value.recommendations, catalog),
                            session_id=session_id)
            elif kind == "explanation":
                yield chunk({}, explanation=recommendation_dicts([value], catalog)[0])
            elif kind == "error":  # the stream is open: report in-band, never a traceback
                error, picks_stored = value
                self.metrics.errors.labels(kind=type(error).__name__).inc()
                stored = "its picks were stored" if picks_stored else "nothing was stored for it"
                yield _sse(ApiError(500, f"the turn failed; {stored}", type="server_error").body())
                yield "data: [DONE]\n\n"
                return
            else:
                result = value
        for line in result.reply.splitlines(keepends=True):
            yield chunk({"content": line})
        yield chunk({}, "stop", session_id=session_id)
        if include_usage:
            yield _sse({**base, "choices": [], "usage": self._usage(text, result.reply)})
        yield "data: [DONE]\n\n"

    def turn_events(self, session_id: str, text: str, model: str | None = None) -> Iterator[tuple[str, object]]:
        """The turn as it happens: ("picks", TurnResult with explanations empty), ("explanation", Recommendation)
        per pick, then ("done", TurnResult), or ("error", (exception, whether the picks were stored)) at any point.
        The turn runs in its own thread, so it finishes (and stores its explanations) even when nobody reads on."""
        events: queue.Queue = queue.Queue()
        picks_stored = False

        def on_picks(result: TurnResult) -> None:
            nonlocal picks_stored
            picks_stored = True
            events.put(("picks", result))

        def run() -> None:
            try:
                result = self.run_turn(session_id, text, model, on_picks=on_picks,
                                       on_explanation=lambda r: events.put(("explanation", r)))
            except Exception as error:
                log.exception("a turn failed")
                events.put(("error", (error, picks_stored)))
            else:
                events.put(("done", result))

        threading.Thread(target=run, daemon=True, name=f"turn-{session_id}").start()
        while True:
            kind, value = events.get()
            yield kind, value
            if kind in ("done", "error"):
                return

    def run_turn(self, session_id: str, text: str, model: str | None = None, **callbacks) -> TurnResult:
        """The turn with `model`; `callbacks` (on_picks, on_explanation) go to `Recommender.run_turn`."""
        log.debug("turn of %s: %r", session_id, text)  # user text is logged only with `convrec serve --debug`
        if self.experiment is not None:
            arm = self.experiment.arm_of(session_id)
            recommender = self.arms[arm]
        else:
            recommender = self.recommenders[model or self.model_names()[0]]
        try:
            result = recommender.run_turn(session_id, text, **callbacks)
        except Exception:
            if self.experiment is not None:  # the error-rate guardrail counts it
                try:
                    self.recommender.sessions.record_failed_trial(session_id, self.experiment.name, arm)
                except Exception:  # the turn's own error is the one to report
                    log.exception("a failed trial could not be recorded")
            raise
        finally:
            give_back()  # a turn's activations are freed memory now: back to the system (ui/api/allocator.py)
        self.metrics.observe_turn(result.trace)
        return result

    # -- sessions and feedback -----------------------------------------------------------------------------------
    def claim(self, session_id: str, owner: str | None) -> None:
        """Create the session for this key, or check the key owns it (another key's session is a 404)."""
        if self.recommender.sessions.claim(session_id, owner) != owner:
            raise _no_session(session_id)

    def create_session(self, session_id: str | None, owner: str | None) -> dict:
        """Create a session before its first message (e.g. to send feedback events first); an existing one of this
        key is left as it is."""
        session_id = session_id or f"s-{uuid.uuid4().hex[:16]}"
        try:
            check_session_id(session_id)
        except InputError as error:
            raise ApiError(400, str(error), param="session_id") from None
        existed, _ = self.recommender.sessions.owner(session_id)
        self.claim(session_id, owner)
        state = self.recommender.sessions.load(session_id)
        if state is None:  # forgotten in between
            raise _no_session(session_id)
        return {"session_id": session_id, "created": not existed, "memory": state.to_dict()}

    def check_access(self, session_id: str, owner: str | None) -> None:
        exists, stored_owner = self.recommender.sessions.owner(session_id)
        if not exists or stored_owner != owner:
            raise _no_session(session_id)

    def get_session(self, session_id: str, owner: str | None) -> dict:
        self.check_access(session_id, owner)
        state = self.recommender.sessions.load(session_id)
        if state is None:  # forgotten in between
            raise _no_session(session_id)
        return {"session_id": session_id, "memory": state.to_dict(),
                "turns": len(self.recommender.sessions.history(session_id)),
                "events": len(self.recommender.sessions.events(session_id))}

    def delete_session(self, session_id: str, owner: str | None) -> dict:
        self.check_access(session_id, owner)
        self.recommender.sessions.forget(session_id)  # after a running turn of the session, never before it
        return {"session_id": session_id, "deleted": True}

    def apply_events(self, session_id: str, events: list[FeedbackEvent], owner: str | None) -> dict:
        """Apply a batch of feedback events atomically: all are validated first, then stored in one transaction. An
        event whose `event_id` the session already has (a client's retry), or that comes twice in the batch, is
        acknowledged and not applied again."""
        self.check_access(session_id, owner)
        unknown = [e.item_id for e in events if e.item_id not in self.recommender.catalog]
        if unknown:
            raise ApiError(400, f"unknown item_id {unknown[0]!r}: not in the catalog", param="item_id",
                           code="unknown_item")
        sessions = self.recommender.sessions
        with sessions.locked(session_id):
            state = sessions.load(session_id)
            if state is None:  # forgotten in between
                raise _no_session(session_id)
            seen = sessions.known_events(session_id, [e.event_id for e in events if e.event_id])
            fresh = []
            for event in events:
                if event.event_id not in seen:
                    fresh.append(event)
                    if event.event_id is not None:
                        seen.add(event.event_id)
            for event in fresh:
                state = memory.apply_feedback(state, event.type, event.item_id)
            sessions.save(state, events=[(e.type, e.item_id, e.event_id) for e in fresh])
        for event in fresh:
            self.metrics.events.labels(type=event.type).inc()
        return {"session_id": session_id, "applied": len(fresh), "duplicates": len(events) - len(fresh),
                "memory": state.to_dict()}

    def remove_entry(self, session_id: str, entry: str, owner: str | None) -> dict:
        """Remove one memory entry ("liked:<id>", "genre:Comedy", "min_year", ...: agent.memory.ENTRY_KINDS)."""
        self.check_access(session_id, owner)
        sessions = self.recommender.sessions
        with sessions.locked(session_id):
            state = sessions.load(session_id)
            if state is None:  # forgotten in between
                raise _no_session(session_id)
            try:
                state = memory.remove_entry(state, entry)
            except ValueError as error:
                raise ApiError(404, str(error), param="entry", code="entry_not_found") from None
            sessions.save(state, events=[("remove", entry)])
        self.metrics.events.labels(type="remove").inc()
        return {"session_id": session_id, "removed": entry, "memory": state.to_dict()}

    # -- experiments ---------------------------------------------------------------------------------------------
    def list_experiments(self) -> dict:
        """Every experiment the store knows, with its per-arm report (eval/experiments.py)."""
        from eval.experiments import experiment_report

        sessions = self.recommender.sessions
        return {"object": "list", "data": [experiment_report(sessions.experiment_rows(name))
                                           for name in sessions.experiment_names()]}

    # -- helpers -------------------------------------------------------------------------------------------------
    def _envelope(self, kind: str, model: str) -> dict:
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": model}

    def _usage(self, prompt: str, completion: str) -> dict:
        tokenizer = getattr(self.recommender.engine, "tokenizer", None)

        def count(text: str) -> int:
            return len(tokenizer(text)["input_ids"]) if tokenizer else len(text.split())

        prompt_tokens, completion_tokens = count(prompt), count(completion)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}


def recommendation_dicts(recommendations: Sequence[Recommendation], catalog) -> list[dict]:
    """The Recommendation fields plus the item's headline facts (genres, directors, cast) for a card."""
    out = []
    for r in recommendations:
        item = catalog[r.item_id]
        out.append({**asdict(r), "genres": list(item.genres[:3]), "directors": list(item.directors[:2]),
                    "cast": list(item.cast[:3])})
    return out


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _no_session(session_id: str) -> ApiError:
    return ApiError(404, f"no session {session_id!r}", param="session_id", code="session_not_found")
