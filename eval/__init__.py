"""Offline evaluation (see the "Offline evaluation" issue; not built yet)."""
