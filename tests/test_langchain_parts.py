"""convrec's parts composed in a small LangChain chain: retriever -> prompt -> the real engine."""

from __future__ import annotations

import uuid

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from agent.langchain_parts import CatalogRetriever, SessionChatHistory

pytestmark = pytest.mark.slow


def test_catalog_retriever_returns_documents_with_item_metadata(small_recommender):
    docs = CatalogRetriever(retriever=small_recommender.retriever, n=3).invoke("animated toys come to life")
    assert len(docs) == 3
    assert all(d.metadata["item_id"] in small_recommender.catalog for d in docs)
    assert "Toy Story" in [d.metadata["title"] for d in docs]


def test_parts_compose_into_a_langchain_chain(small_recommender):
    engine = small_recommender.engine
    retriever = CatalogRetriever(retriever=small_recommender.retriever, n=3)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Recommend one of these movies:\n{candidates}"), ("human", "{question}")]
    )
    chain = (
        {
            "candidates": retriever
            | RunnableLambda(lambda docs: "\n".join(d.metadata["title"] for d in docs)),
            "question": RunnablePassthrough(),
        }
        | prompt
        | RunnableLambda(lambda value: engine.generate([value.to_messages()], max_new_tokens=20)[0])
    )
    answer = chain.invoke("a scary movie set in space")
    assert isinstance(answer, str) and answer


def test_session_history_reads_the_stored_turns(small_recommender):
    session = uuid.uuid4().hex[:8]
    small_recommender.run_turn(session, "I loved Alien")
    history = SessionChatHistory(small_recommender.sessions, session)
    messages = history.messages
    assert isinstance(messages[0], HumanMessage) and messages[0].content == "I loved Alien"
    assert isinstance(messages[1], AIMessage) and "Here are my picks" in messages[1].content
    with pytest.raises(NotImplementedError):
        history.add_message(HumanMessage("x"))
    history.clear()
    assert history.messages == []
