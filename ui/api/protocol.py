"""Request and response shapes of the OpenAI-compatible API (pydantic), and the error envelope.

Unknown OpenAI fields in a request (temperature, max_tokens, tools, ...) are accepted and ignored: convrec decodes
greedily and answers with recommendations.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.memory import FEEDBACK_KINDS


class ApiError(Exception):
    """An error answered in the OpenAI envelope: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The text of the message; for a list of content blocks, the text blocks joined."""
        if isinstance(self.content, list):
            return "\n".join(str(b.get("text", "")) for b in self.content if b.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int = Field(default=1, ge=1, le=1)


class FeedbackEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal[FEEDBACK_KINDS]  # type: ignore[valid-type]
    item_id: str = Field(min_length=1, max_length=128)


class FeedbackBatch(BaseModel):
    events: list[FeedbackEvent] = Field(min_length=1, max_length=1000)
