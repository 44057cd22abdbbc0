"""The API's OpenAPI document: what each route reads and answers, for clients and for schema fuzzing (`make fuzz`).

The routes parse their JSON bodies themselves (so every error is the OpenAI envelope, never FastAPI's 422), so
FastAPI cannot see the request and response shapes; this module writes them in: request bodies from the pydantic
models of ui/api/protocol.py, each status a route can answer with its schema (errors: `ErrorResponse`), and the
links a stateful client follows (a chat completion's session -> read it, post events, remove an entry, forget it).

    app.openapi = lambda: openapi_document(app, example_item)
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from agent.turn import SESSION_ID
from ui.api import protocol

JSON = "application/json"
ERRORS = {
    "400": "the request is malformed or names something unknown (model, item, memory entry)",
    "401": "missing or invalid API key (when the server has keys)",
    "404": "no such session (or it belongs to another key), entry or path",
    "405": "method not allowed on this path",
    "413": "request body over 1,000,000 bytes",
    "429": "rate limit reached (Retry-After says when to retry)",
    "500": "a turn failed; nothing half-done is stored",
    "503": "the model is loading or the engine is unavailable (Retry-After)",
}
SESSION_PARAMETER = {"name": "session_id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": SESSION_ID.pattern, "maxLength": 128}}
SESSION_LINKS = {
    "GetSession": {"operationId": "get_session", "parameters": {"session_id": "$response.header.X-Session-Id"}},
    "PostEvents": {"operationId": "post_events", "parameters": {"session_id": "$response.header.X-Session-Id"}},
    "RemoveMemoryEntry": {"operationId": "remove_memory_entry",
                          "parameters": {"session_id": "$response.header.X-Session-Id"}},
    "DeleteSession": {"operationId": "delete_session", "parameters": {"session_id": "$response.header.X-Session-Id"}},
}


def openapi_document(app: FastAPI, example_item: str | None = None, models: list[str] | None = None) -> dict:
    """The whole document (a few milliseconds; made anew each time). Once the recommender is loaded, `example_item`
    (a catalog id) gives the events an example and `models` the names a request may ask for."""
    document = get_openapi(title=app.title, version=app.version, routes=app.routes,
                           description="convrec's OpenAI-compatible chat API with session memory and feedback events.")
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)

    def ref(model: type[BaseModel]) -> dict:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    def answers(ok: dict, *statuses: str, media: str = JSON) -> dict:
        out = {"200": {"description": "OK", "content": {media: {"schema": ok}}}}
        error = ref(protocol.ErrorResponse)
        for status in statuses:
            out[status] = {"description": ERRORS[status], "content": {JSON: {"schema": error}}}
        return out

    routes = document["paths"]
    routes["/health"]["get"].update(operationId="health", responses={
        "200": {"description": "the model is loaded", "content": {JSON: {"schema": ref(protocol.Health)}}},
        "503": {"description": "the model is loading, or failed to load (`error`)",
                "content": {JSON: {"schema": ref(protocol.Health)}}}})
    routes["/metrics"]["get"].update(operationId="metrics", responses={
        "200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}})
    routes["/v1/models"]["get"].update(operationId="list_models",
                                       responses=answers(ref(protocol.ModelList), "401", "429", "503"))

    chat = routes["/v1/chat/completions"]["post"]
    chat_request = ref(protocol.ChatCompletionRequest)
    components["UserMessage"]["properties"]["content"]["anyOf"][0]["pattern"] = r"\S"
    if models:
        components["ChatCompletionRequest"]["properties"]["model"] = {"anyOf": [{"enum": models}, {"type": "null"}]}
    components["ChatCompletionRequest"]["properties"]["messages"]["contains"] = {
        "type": "object", "properties": {"role": {"const": "user"}}, "required": ["role"]}
    chat.update(operationId="create_chat_completion", parameters=[
        {"name": "X-Session-Id", "in": "header", "required": False,
         "description": "the session; else the body's `user`; else a new one (returned in this header)",
         "schema": {"type": "string", "pattern": SESSION_ID.pattern, "maxLength": 128}}],
        requestBody={"required": True, "content": {JSON: {"schema": chat_request}}},
        responses=answers(ref(protocol.ChatCompletion), "400", "401", "404", "413", "429", "500", "503"))
    chat["responses"]["200"]["content"]["text/event-stream"] = {  # with `stream: true`: each event is JSON or [DONE]
        "schema": {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}}
    chat["responses"]["200"]["headers"] = {"X-Session-Id": {"schema": {"type": "string"}}}
    chat["responses"]["200"]["links"] = SESSION_LINKS

    routes["/v1/experiments"]["get"].update(operationId="list_experiments",
                                            responses=answers(ref(protocol.ExperimentList), "401", "429", "503"))
    create = routes["/v1/sessions"]["post"]
    create_request = ref(protocol.SessionCreate)
    components["SessionCreate"]["properties"]["session_id"]["anyOf"][0]["pattern"] = SESSION_ID.pattern
    create.update(operationId="create_session",
                  requestBody={"required": True, "content": {JSON: {"schema": create_request}}},
                  responses=answers(ref(protocol.SessionCreated), "400", "401", "404", "413", "429", "503"))
    create["responses"]["200"]["links"] = {
        name: {**link, "parameters": {"session_id": "$response.body#/session_id"}}
        for name, link in SESSION_LINKS.items()}

    event = ref(protocol.FeedbackEvent)
    batch = ref(protocol.FeedbackBatch)
    if example_item:
        components["FeedbackEvent"]["examples"] = [{"type": "like", "item_id": example_item}]
    events = routes["/v1/sessions/{session_id}/events"]["post"]
    events.update(operationId="post_events", parameters=[SESSION_PARAMETER],
                  requestBody={"required": True, "content": {JSON: {"schema": {
                      "oneOf": [event, {"type": "array", "items": event, "minItems": 1, "maxItems": 1000}, batch]}}}},
                  responses=answers(ref(protocol.EventsApplied), "400", "401", "404", "413", "429", "503"))
    entry = routes["/v1/sessions/{session_id}/memory/{entry}"]["delete"]
    entry.update(operationId="remove_memory_entry", parameters=[
        SESSION_PARAMETER, {"name": "entry", "in": "path", "required": True,
                            "description": 'e.g. "liked:<item id>", "genre:Comedy", "min_year"',
                            "schema": {"type": "string", "examples": ["min_year", "genre:Comedy"]}}],
        responses=answers(ref(protocol.EntryRemoved), "401", "404", "429", "503"))
    session = routes["/v1/sessions/{session_id}"]
    session["get"].update(operationId="get_session", parameters=[SESSION_PARAMETER],
                          responses=answers(ref(protocol.SessionView), "401", "404", "429", "503"))
    session["delete"].update(operationId="delete_session", parameters=[SESSION_PARAMETER],
                             responses=answers(ref(protocol.SessionDeleted), "401", "404", "429", "503"))
    for path in routes.values():
        for operation in path.values():
            operation.pop("summary", None)
    return document
