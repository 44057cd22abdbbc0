"""The fine-tuning recipe as one dataclass: every field says what it does. `convrec finetune --config FILE` reads a
JSON file of some of these fields; flags override the file; the defaults are the recipe of the committed adapter.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

ON_MISS = ("insert", "skip")
SPLIT_A = "split-a"
"""`train_file` value: the training dialogues (train_sample + train_extra) outside the ranker's split B."""
RANK_LOSSES = ("choices", "tokens")
TRAINING_FILE = "training.json"
"""What `convrec finetune` writes beside the adapter: the config, the data mix, the losses; calibrate.py adds to it."""


@dataclass
class FinetuneConfig:
    # -- data ------------------------------------------------------------------------------------------------------
    train_file: str = SPLIT_A
    """Training conversations: "split-a" (the default: train_sample and train_extra without split B, the dialogues
    the learned ranker's stage two learns the adapter's score on; finetune/crossfit.py), or a file in the official
    ReDial format, relative to the data dir unless absolute."""
    valid_file: str = "redial/train_sample/valid_data.jsonl"
    """Validation conversations: their loss decides early stopping and the kept checkpoint."""
    max_dialogues: int = 0
    """Use only the first N training dialogues (0 = all). Tests use a handful."""
    on_miss: str = "skip"
    """When retrieval misses the suggested movie: "skip" drops the turn (the default: at serving time the order of
    the candidates matters only when the right movie is among them, and inserting it at a random place would teach
    the model to ignore a retrieval order that is informative exactly then); "insert" puts it into the candidate
    list at a random position (the last candidates make room)."""
    shuffle_candidates: bool = True
    """Show a rank example's candidates in a seeded random order, not retrieval order: the model must find the
    suggested movie from what the prompt says of each candidate, so its score is evidence beside the ranker's order
    (stage two combines both) rather than an echo of it."""
    explain_per_turn: int = 1
    """Explanation examples per rank example: the suggested movies (then the top candidates), each with a
    sentence composed from facts it truly shares with what the user liked (agent.grounding.compose_explanation)."""
    valid_examples: int = 24
    """Validation examples scored at each evaluation (the first N, both kinds, fixed)."""
    calibrate_dialogues: int = 30
    """Validation dialogues the adapter's retrieval weight is chosen on after training (0 = all: ~10 min on a 2-core
    CPU in float32; finetune/calibrate.py). The weight serves only where no learned ranker's stage two was trained
    on this adapter's scores (that stage has a weight of its own)."""

    rank_loss: str = "choices"
    """How rank examples are learned. "choices" (the default): every candidate letter is scored after `{"ranking": ["`
    exactly as `TransformersEngine.score_choices` scores it at serving time, and the loss is the cross-entropy of
    the suggested movie among them, so all of the example's signal goes to the decision the ranking uses. "tokens":
    the plain language-model loss on the whole answer (the suggested id is ~3 of its ~40 tokens; on ReDial
    validation that adapter ranked no better than the base model)."""

    # -- LoRA ------------------------------------------------------------------------------------------------------
    rank: int = 8
    """LoRA rank r (vLLM loads adapters up to its --max-lora-rank, 16 by default)."""
    alpha: int = 16
    """LoRA alpha: the update is scaled by alpha / r."""
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Attention and MLP projections of the Llama architecture (no modules_to_save, no new tokens)."""

    # -- optimisation ----------------------------------------------------------------------------------------------
    max_steps: int = 60
    """Optimizer steps (each `batch_size` examples). The default recipe fits in an hour on a 2-core CPU: a step of 8
    (half rank examples of ~980 tokens, half explanations) takes ~25 s with a bfloat16 base, ~39 s in float32 (CPUs
    without native bfloat16), after ~10 min of building the examples of 2,526 dialogues."""
    batch_size: int = 8
    """Examples per optimizer step (gradients accumulated one example at a time: no padding on a CPU)."""
    learning_rate: float = 5e-4
    warmup_steps: int = 5
    weight_decay: float = 0.0
    max_tokens: int = 1536
    """Longer examples are dropped (the prompt of a turn is about 700-900 tokens)."""
    eval_every: int = 30
    """Validation loss every N steps; the best adapter so far is kept."""
    patience: int = 2
    """Stop after this many evaluations without a better validation loss (0 = never stop early)."""
    save_every: int = 10
    """Checkpoint (adapter, optimizer, position in the data) every N steps; `--resume` continues from the latest."""
    seed: int = 0
    dtype: str = "auto"
    """Frozen base weights: "auto" (bfloat16 where the CPU or GPU computes it natively), "bfloat16" or "float32".
    The LoRA weights are always trained in float32 and saved in bfloat16."""

    # -- bookkeeping -----------------------------------------------------------------------------------------------
    adapter_name: str = "convrec-redial-lora"
    """The name the API lists in /v1/models."""
    notes: dict[str, object] = field(default_factory=dict)
    """Free-form notes copied into the model card."""

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        if self.rank_loss not in RANK_LOSSES:
            raise ValueError(f"rank_loss must be one of {', '.join(RANK_LOSSES)}, not {self.rank_loss!r}")
        if self.on_miss not in ON_MISS:
            raise ValueError(f"on_miss must be one of {', '.join(ON_MISS)}, not {self.on_miss!r}")
        if not 1 <= self.rank <= 16:
            raise ValueError(f"rank must be 1-16 (vLLM's default --max-lora-rank is 16), not {self.rank}")
        for name in ("max_steps", "batch_size", "eval_every", "save_every", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_dialogues", "calibrate_dialogues"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is a count of dialogues (0 = all), not {getattr(self, name)}")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> FinetuneConfig:
        """Defaults, then the JSON file's fields, then the given overrides (None means "not given")."""
        values: dict[str, object] = {}
        if path:
            try:
                values = json.loads(Path(path).read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: not valid JSON ({error})") from None
            if not isinstance(values, dict):
                raise ValueError(f"{path}: expected a JSON object of config fields")
        values |= {k: v for k, v in overrides.items() if v is not None}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown finetune config field {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


def data_path(settings, name: str) -> Path | str:
    """A config's `train_file` / `valid_file` as a path (relative ones under `settings.data_dir`); SPLIT_A as is."""
    if name == SPLIT_A:
        return name
    path = Path(name)
    path = path if path.is_absolute() else Path(settings.data_dir) / path
    if not path.is_file():
        raise FileNotFoundError(f"no dialogue file {path} (set --data-dir or the config's train_file/valid_file)")
    return path
