"""LoRA fine-tuning (see the "LoRA fine-tuning" issue; not built yet)."""
