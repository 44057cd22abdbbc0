"""The learned parts: LoRA fine-tuning of the LLM (train.py, calibrate.py) and the learned ranker (ranker.py), both
trained on the ReDial training dialogues with cross-fitted features (crossfit.py)."""
