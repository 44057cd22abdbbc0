"""Request and response shapes of the OpenAI-compatible API (pydantic), and the error envelope.

Unknown OpenAI fields in a request (temperature, max_tokens, tools, ...) are accepted and ignored: convrec decodes
greedily and answers with recommendations. Known fields are strict: `"stream": 0` or `"n": "1"` is a 400, as the
OpenAPI document (ui/api/openapi.py) says.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.memory import FEEDBACK_KINDS

MAX_BODY_BYTES = 1_000_000
ROLES = ("system", "developer", "user", "assistant", "tool", "function")


class ApiError(Exception):
    """An error answered in the OpenAI envelope: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ContentBlock(BaseModel):
    """One part of a message's content; convrec reads the "text" ones."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """A system, developer, assistant, tool or function message: taken and not read (the session's memory holds
    the history)."""

    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "developer", "assistant", "tool", "function"]
    content: str | list[ContentBlock] | None = None

    def text(self) -> str:
        """The text of the message; for a list of content blocks, the text blocks joined."""
        if isinstance(self.content, list):
            return "\n".join(b.text or "" for b in self.content if b.type == "text")
        return self.content or ""


class UserMessage(ChatMessage):
    """A user message has text; the last one is the turn's (1 to `max_message_chars`, 4000, characters)."""

    role: Literal["user"]
    content: str | Annotated[list[ContentBlock], Field(min_length=1)]
    """Never empty or blank (checked with a friendly message when the request is served; documented as a pattern)."""


Message = Annotated[UserMessage | ChatMessage, Field(discriminator="role")]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int = Field(default=1, ge=1, le=1)


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal[FEEDBACK_KINDS]  # type: ignore[valid-type]
    item_id: str = Field(min_length=1, max_length=128)
    event_id: str | None = Field(default=None, min_length=1, max_length=128)
    """The client's id for this event: one sent again (a retry) is acknowledged and applied once."""


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    session_id: str | None = Field(default=None, min_length=1, max_length=128)
    """The id to create (letters, digits and ._:@-); none: a new one is made up."""


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    events: list[FeedbackEvent] = Field(min_length=1, max_length=1000)


# -- responses: documentation only (the OpenAPI document, ui/api/openapi.py); the routes build plain dicts ----------

class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error: the OpenAI envelope."""

    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok", "loading", "error"]
    model: str | None = None
    error: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class RecommendationCard(BaseModel):
    item_id: str
    title: str
    year: int | None
    rank: int
    explanation: str
    facts: dict[str, list[str]]
    genres: list[str]
    directors: list[str]
    cast: list[str]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    recommendations: list[RecommendationCard]
    session_id: str


class SessionCreated(BaseModel):
    session_id: str
    created: bool
    """False when the session was there already (this key's): nothing changed."""
    memory: dict[str, Any]


class ExperimentList(BaseModel):
    object: Literal["list"]
    data: list[dict[str, Any]]
    """Each experiment's report: per-arm like rate with its 95% interval, the test against the control arm and the
    guardrails (eval/experiments.py)."""


class SessionView(BaseModel):
    session_id: str
    memory: dict[str, Any]
    turns: int
    events: int


class EventsApplied(BaseModel):
    session_id: str
    applied: int
    duplicates: int
    """Events whose `event_id` the session had already (or that came twice in the batch): acknowledged, not applied."""
    memory: dict[str, Any]


class EntryRemoved(BaseModel):
    session_id: str
    removed: str
    memory: dict[str, Any]


class SessionDeleted(BaseModel):
    session_id: str
    deleted: Literal[True]
