"""`RemoteEngine`: a model behind any OpenAI-compatible chat-completions server, such as `vllm serve`.

    RemoteEngine("http://gpu-host:8000/v1")         the models it lists (GET /v1/models); the first is the default
      .generate(conversations, ...)                 one request per conversation, sent concurrently
      .generate_structured(messages, schema, ...)   response_format={"type": "json_schema", ...}, which vLLM enforces
      .using("convrec-redial-lora")                 the `model` field of each request (vLLM: a LoRA module's name)

Greedy (temperature 0). The server's own chat template renders the messages. Errors (server down, non-200, timeout)
become `EngineError`, which the turn falls back on.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
from langchain_core.messages import BaseMessage

from agent.engines import EngineError, engine_view, to_chat_dicts


class RemoteEngine:
    name = "remote"

    def __init__(self, url: str, *, model_name: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, max_parallel: int = 8) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout)
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="remote-engine")
        models = self._get("/models").get("data", [])
        listed = [m["id"] for m in models]
        if not listed:
            raise EngineError(f"{self.url}/models lists no model")
        if model_name and model_name not in listed:
            raise EngineError(f"{self.url} does not serve {model_name!r}; it has {', '.join(listed)}")
        self.base_name = next((m["id"] for m in models if not m.get("parent")), listed[0])  # vLLM: LoRAs have one
        self.model_names = tuple(sorted(listed, key=lambda m: m != model_name))  # the asked-for model first
        self.model_name = self.model_names[0]

    def using(self, model_name: str) -> RemoteEngine:
        return engine_view(self, model_name)

    def generate(self, conversations: Sequence[Sequence[BaseMessage]], max_new_tokens: int = 64,
                 stop: Sequence[str] = ()) -> list[str]:
        """Greedy continuations. OpenAI servers drop the stop string; it is put back, as the other engines keep it."""
        def one(messages: Sequence[BaseMessage]) -> str:
            choice = self._chat(messages, max_new_tokens, stop=list(stop) or None)
            text = choice["message"].get("content") or ""
            matched = choice.get("stop_reason")  # vLLM says which stop string ended the text
            return (text + matched if isinstance(matched, str) and matched in stop else text).strip()

        return list(self._pool.map(one, conversations))

    def generate_structured(self, messages: Sequence[BaseMessage], schema: dict, max_new_tokens: int) -> str:
        response_format = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
        return (self._chat(messages, max_new_tokens, response_format=response_format)["message"].get("content")
                or "").strip()

    def _chat(self, messages: Sequence[BaseMessage], max_new_tokens: int, **extra) -> dict:
        body = {"model": self.model_name, "messages": to_chat_dicts(messages), "max_tokens": max_new_tokens,
                "temperature": 0.0, **{k: v for k, v in extra.items() if v is not None}}
        try:
            response = self._client.post(f"{self.url}/chat/completions", json=body)
        except httpx.HTTPError as error:
            raise EngineError(f"{self.url} unreachable: {error}") from None
        if response.status_code != 200:
            raise EngineError(f"{self.url} answered {response.status_code}: {response.text[:300]}")
        try:
            return response.json()["choices"][0]
        except (ValueError, KeyError, IndexError) as error:
            raise EngineError(f"{self.url} sent a malformed completion ({error})") from None

    def _get(self, path: str) -> dict:
        try:
            response = self._client.get(f"{self.url}{path}")
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise EngineError(f"{self.url}{path}: {error}") from None
