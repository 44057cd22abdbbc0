"""Versioned prompt templates (files in templates/, not f-strings in code) and the one function that renders them.

A template file has `[system]`, `[user]` and `[assistant]` sections; lines starting with `#` before the first
section are comments. Variables use `{name}` (literal braces are doubled). Templates become LangChain
`ChatPromptTemplate`s, so the messages at the LLM boundary are LangChain `BaseMessage`s.

`TEMPLATE_VERSION` is a hash of every template: a fine-tuned adapter records it, and a test fails if the templates
changed since the adapter was trained.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate

TEMPLATE_DIR = Path(__file__).parent / "templates"
_SECTION = re.compile(r"^\[(system|user|assistant)\]\s*$")
_ROLES = {"system": "system", "user": "human", "assistant": "ai"}


@cache
def load_template(name: str) -> ChatPromptTemplate:
    """Parse templates/<name>.txt into a ChatPromptTemplate."""
    path = TEMPLATE_DIR / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {name!r} in {TEMPLATE_DIR}")
    sections: list[tuple[str, list[str]]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _SECTION.match(line)
        if match:
            sections.append((_ROLES[match.group(1)], []))
        elif sections:
            sections[-1][1].append(line)
    if not sections:
        raise ValueError(f"prompt template {path} has no [system]/[user]/[assistant] section")
    return ChatPromptTemplate.from_messages([(role, "\n".join(lines).strip()) for role, lines in sections])


def render_prompt(name: str, **variables: object) -> list[BaseMessage]:
    """The messages of template `name` with `variables` filled in (values are inserted verbatim)."""
    return load_template(name).format_messages(**{k: str(v) for k, v in variables.items()})


def _template_version() -> str:
    digest = hashlib.sha256()
    for path in sorted(TEMPLATE_DIR.glob("*.txt")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


TEMPLATE_VERSION = _template_version()
