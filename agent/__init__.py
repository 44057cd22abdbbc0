"""The chat turn: value types, session memory and its store, understanding the user, LLM engines, parsing, A/B
experiments' arms."""
