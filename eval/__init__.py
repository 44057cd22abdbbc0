"""Offline evaluation. Now: turn latency (latency.py). Next: accuracy, grounding and faithfulness reports."""
