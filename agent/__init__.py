"""The chat turn: value types, session memory, understanding the user, LLM engines, parsing."""
