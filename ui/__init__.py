"""The edges people touch: command line (and later the HTTP API and the web app)."""
