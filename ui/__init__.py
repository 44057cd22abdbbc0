"""The edges people touch: the command line (cli.py, commands/), the OpenAI-compatible HTTP API (api/) and the web
chat (web.py)."""
