"""Offline evaluation: the ReDial benchmark (accuracy with intervals, grounding, explanation faithfulness, memory,
beyond-accuracy, latency) and its report; turn latency, load, soak, crash, schema-fuzzing and serving benchmarks."""
