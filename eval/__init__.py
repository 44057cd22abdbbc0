"""Offline evaluation: the ReDial benchmark (accuracy with intervals, grounding, explanation faithfulness, memory,
beyond-accuracy, latency) and its report; turn latency, load, soak, native memory, crash, schema-fuzzing and serving
benchmarks; the online-learning replay; A/B experiment reports, simulated users and rehearsals."""
