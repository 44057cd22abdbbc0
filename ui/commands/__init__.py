"""One module per command family; ui/cli.py only wires them (new commands start here)."""
