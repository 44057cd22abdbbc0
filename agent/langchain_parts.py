"""convrec's parts in LangChain's vocabulary, so they drop into LangChain apps.

- `CatalogRetriever`: the hybrid candidate generator as a `BaseRetriever` (query text -> Documents with item metadata).
- `SessionChatHistory`: a session's stored turns as a read-only `BaseChatMessageHistory`.

Prompts and messages at the LLM boundary are already LangChain types (see prompts/ and agent/engines.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from agent.store import SessionStore
from retrieval.candidates import CandidateQuery
from retrieval.index import item_document


class CatalogRetriever(BaseRetriever):
    """Candidates for a free-text query; each Document carries item_id, title, year, score and sources."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    retriever: Any  # a HybridRetriever; typed loosely because pydantic cannot build a schema for its Protocols
    n: int = 10

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        catalog = self.retriever.catalog
        documents = []
        for candidate in self.retriever.candidates(CandidateQuery(text=query), self.n):
            item = catalog[candidate.item_id]
            documents.append(Document(
                page_content=item_document(item), id=item.item_id,
                metadata={"item_id": item.item_id, "title": item.title, "year": item.year,
                          "score": candidate.score, "sources": list(candidate.sources)}))
        return documents


class SessionChatHistory(BaseChatMessageHistory):
    """The turns stored for one session, oldest first, as Human/AI message pairs."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id

    @property
    def messages(self) -> list[BaseMessage]:
        out: list[BaseMessage] = []
        for turn in self.store.history(self.session_id):
            out += [HumanMessage(turn["user"]), AIMessage(turn["reply"])]
        return out

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        raise NotImplementedError("convrec writes a session's history itself: call Recommender.run_turn")

    def clear(self) -> None:
        self.store.forget(self.session_id)
