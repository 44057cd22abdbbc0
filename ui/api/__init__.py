"""The OpenAI-compatible HTTP API: protocol (shapes), serving (logic), app (routes), metrics."""
