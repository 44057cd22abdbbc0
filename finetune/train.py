"""LoRA fine-tuning with peft and a plain PyTorch loop: loss on the assistant answer only, validation loss for early
stopping, checkpoints to resume from, and an adapter vLLM and transformers + peft both load.

    finetune(settings, config, out_dir) -> summary
      1. examples   = build_examples(train) + build_examples(valid)     finetune/examples.py (the live prompts)
      2. tokenized  = chat template of the prompt, then: rank examples: every candidate letter as score_choices scores
                      it (loss: cross-entropy of the suggested movie among the candidates); explain examples: the
                      answer + <|im_end|> (loss: the answer's tokens; labels -100 on the prompt)
      3. model      = base model (bfloat16 where native, frozen) + LoRA (float32) on attention and MLP projections
      4. loop       = batch_size examples per step, one at a time (no padding); AdamW, warmup then linear decay;
                      validation loss every eval_every steps (best kept), checkpoint every save_every steps
      5. save       = the best LoRA weights, rounded to bfloat16, + training.json + README.md (the model card)
      6. calibrate  = the adapter's retrieval weight, chosen on the validation dialogues (finetune/calibrate.py)

The data order is a seeded permutation per epoch, so a resumed run sees exactly the examples the interrupted one
would have seen.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import Settings
from agent.engines import pick_dtype, to_chat_dicts
from finetune.calibrate import calibrate_adapter
from finetune.card import write_card
from finetune.config import TRAINING_FILE, FinetuneConfig, data_path
from finetune.examples import Example, build_examples, describe_mix
from prompts import TEMPLATE_VERSION

CHECKPOINTS = "checkpoints"
def end_token(tokenizer) -> int:
    """The token that closes an assistant message in the chat template (<|im_end|> for SmolLM2)."""
    token = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return token if isinstance(token, int) and token != tokenizer.unk_token_id else tokenizer.eos_token_id


@dataclass(frozen=True)
class Tokenized:
    """One example as token ids. Token loss: `input_ids` = prompt + answer, `labels` -100 on the prompt. Choices
    loss (rank examples): `input_ids` = prompt + ANSWER_PREFIX, then every candidate's `choices` ids."""

    input_ids: list[int]
    labels: list[int] = field(default_factory=list)
    choices: tuple[tuple[int, ...], ...] = ()
    targets: tuple[int, ...] = ()

    @property
    def length(self) -> int:
        return len(self.input_ids) + sum(len(c) for c in self.choices)


def tokenize(example: Example, tokenizer, rank_loss: str = "choices") -> Tokenized:
    """The prompt exactly as the engine encodes it, then the answer (token loss) or the candidates (choices loss)."""
    prompt = tokenizer.apply_chat_template(to_chat_dicts(example.messages), add_generation_prompt=True,
                                           tokenize=True, return_dict=True)["input_ids"]
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    if example.choices and rank_loss == "choices":
        context = list(prompt) + encode(example.answer_parts[0])
        return Tokenized(context, choices=tuple(tuple(encode(c)) for c in example.choices), targets=example.targets)
    answer = [t for part in example.answer_parts for t in encode(part)]
    answer.append(end_token(tokenizer))
    return Tokenized(list(prompt) + answer, [-100] * len(prompt) + answer)


def load_for_training(model_path: str, config: FinetuneConfig):
    """(tokenizer, peft model): the frozen base in `config.dtype`, LoRA weights in float32."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, pick_dtype(config.dtype)))
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    return tokenizer, get_peft_model(base, lora)


def example_loss(model, example: Tokenized):
    """Token loss: mean cross-entropy of the answer tokens. Choices loss: cross-entropy of the suggested movies
    among all candidates, each scored as `TransformersEngine.score_choices` scores it at serving time."""
    import torch

    if example.choices:
        return choices_loss(model, example.input_ids, example.choices, example.targets)
    return model(input_ids=torch.tensor([example.input_ids]), labels=torch.tensor([example.labels])).loss


def choices_loss(model, context: list[int], choices, targets):
    """-log of the probability mass the model puts on the targets among the choices (their log-probabilities after
    the context, softmaxed): one forward pass over the context and every choice, packed as in `score_choices`."""
    import torch

    from agent.engines import choice_logprobs, pack_choices

    packed, positions, packed_rows = pack_choices(len(context), choices, torch)
    n = len(context)
    context_rows = torch.zeros(1, 1, n, n + len(packed), dtype=torch.bool)
    context_rows[0, 0, :, :n] = torch.ones(n, n, dtype=torch.bool).tril()
    mask = torch.cat([context_rows, packed_rows], dim=2)
    logits = model(input_ids=torch.tensor([context + packed]), attention_mask=mask,
                   position_ids=torch.tensor([[*range(n), *positions]]), logits_to_keep=len(packed) + 1).logits[0]
    scores = torch.stack(choice_logprobs(logits[0], logits[1:], choices, torch))
    return torch.logsumexp(scores, 0) - torch.logsumexp(scores[list(targets)], 0)


def validation_loss(model, examples: list[Tokenized]) -> float:
    import torch

    model.eval()
    with torch.inference_mode():
        losses = [example_loss(model, example).item() for example in examples]
    model.train()
    return sum(losses) / len(losses)


def finetune(settings: Settings, config: FinetuneConfig, out_dir: Path, *, resume: bool = False,
             progress: bool = True) -> dict:
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from tqdm import tqdm

    from agent.build import build_recommender
    from agent.models import resolve_llm

    started = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    out_dir = Path(out_dir)
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if resume and checkpoint is None:
        print(f"no checkpoint in {out_dir / CHECKPOINTS}: starting from the beginning", file=sys.stderr)

    recommender, _ = build_recommender(settings, progress=progress)
    train, train_counts = build_examples(recommender, data_path(settings, config.train_file), config,
                                         limit=config.max_dialogues)
    valid, _ = build_examples(recommender, data_path(settings, config.valid_file), config)
    mix = describe_mix(train_counts, train)
    print("training examples: " + ", ".join(f"{k} {v}" for k, v in mix.items()), file=sys.stderr)
    model_path = resolve_llm(settings.model, settings.cache_dir)
    tokenizer, model = load_for_training(model_path, config)
    train_set = [t for t in (tokenize(e, tokenizer, config.rank_loss) for e in train) if t.length <= config.max_tokens]
    valid_set = [t for t in (tokenize(e, tokenizer, config.rank_loss) for e in valid[: config.valid_examples])
                 if t.length <= config.max_tokens]
    if not train_set or not valid_set:
        raise ValueError("no training or validation examples: check --data-dir and the dialogue files")
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    state = {"step": 0, "best_loss": math.inf, "best_step": 0, "stale": 0, "history": [], "seconds": 0.0}
    best_weights = None
    if checkpoint is not None:
        state, best_weights = _load_checkpoint(checkpoint, model, optimizer, scheduler)
        print(f"resuming from {checkpoint.name} (step {state['step']})", file=sys.stderr)
    initial_loss = state["history"][0]["valid_loss"] if state["history"] else validation_loss(model, valid_set)
    if not state["history"]:
        state["history"].append({"step": 0, "train_loss": None, "valid_loss": round(initial_loss, 4)})

    model.train()
    session_started = time.perf_counter() - state["seconds"]
    bar = tqdm(total=config.max_steps, initial=state["step"], desc="finetune", unit="step", disable=not progress)
    running: list[float] = []
    while state["step"] < config.max_steps and not _stopped_early(state, config):
        batch = _batch(len(train_set), state["step"], config)
        for index in batch:
            loss = example_loss(model, train_set[index]) / len(batch)
            loss.backward()
            running.append(loss.item() * len(batch))
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{sum(running[-len(batch):]) / len(batch):.3f}")
        if state["step"] % config.eval_every == 0 or state["step"] == config.max_steps:
            valid_loss = validation_loss(model, valid_set)
            train_loss = sum(running) / len(running)
            running = []
            state["history"].append({"step": state["step"], "train_loss": round(train_loss, 4),
                                     "valid_loss": round(valid_loss, 4)})
            if valid_loss < state["best_loss"]:
                state.update(best_loss=valid_loss, best_step=state["step"], stale=0)
                best_weights = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
            else:
                state["stale"] += 1
            bar.write(f"step {state['step']}: train loss {train_loss:.4f}, validation loss {valid_loss:.4f}"
                      f"{' (best)' if state['best_step'] == state['step'] else ''}")
        if state["step"] % config.save_every == 0:
            state["seconds"] = time.perf_counter() - session_started
            _save_checkpoint(out_dir, model, optimizer, scheduler, state, best_weights)
    bar.close()
    state["seconds"] = time.perf_counter() - session_started

    if best_weights is not None:
        set_peft_model_state_dict(model, best_weights)
    round_to_bfloat16(model)
    summary = {
        "adapter_name": config.adapter_name, "base_model": settings.model, "base_model_path": model_path,
        "template_version": TEMPLATE_VERSION, "config": config.to_dict(), "mix": mix,
        "examples": {"train": len(train_set), "valid_scored": len(valid_set), "valid_built": len(valid)},
        "steps": state["step"], "best_step": state["best_step"],
        "initial_valid_loss": round(initial_loss, 4), "best_valid_loss": round(state["best_loss"], 4),
        "history": state["history"], "stopped_early": _stopped_early(state, config),
        "train_seconds": round(state["seconds"], 1), "total_seconds": round(time.perf_counter() - started, 1),
        "device": _device_name(), "torch_threads": torch.get_num_threads(),
        "dtype": pick_dtype(config.dtype),
    }
    save_adapter(model, out_dir, base_name=settings.model)
    (out_dir / TRAINING_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_card(out_dir)
    del model, optimizer, best_weights  # the calibration loads the saved adapter as serving does
    summary["calibration"] = calibrate_adapter(settings, out_dir, recommender=recommender, progress=progress)
    return summary


def round_to_bfloat16(model) -> None:
    """The adapter is saved in bfloat16 (half the size); round the in-memory weights the same way, so the model in
    memory and the adapter loaded from disk (peft upcasts it to float32) compute exactly the same thing."""
    import torch

    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.to(torch.bfloat16).float()


def save_adapter(model, out_dir: Path, base_name: str | None = None) -> None:
    """adapter_config.json + adapter_model.safetensors (bfloat16); no tokenizer changes, no modules_to_save.
    `base_name` replaces this machine's path to the base model in the config (the adapter is portable)."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    if base_name:
        model.peft_config["default"].base_model_name_or_path = base_name
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in lora:
        p.data = p.data.to(torch.bfloat16)
    try:
        model.save_pretrained(out_dir)
    finally:
        for p in lora:
            p.data = p.data.float()


def latest_checkpoint(out_dir: Path) -> Path | None:
    folders = sorted((Path(out_dir) / CHECKPOINTS).glob("step-*"))
    complete = [f for f in folders if (f / "state.pt").is_file()]
    return complete[-1] if complete else None


def _save_checkpoint(out_dir: Path, model, optimizer, scheduler, state: dict, best_weights) -> None:
    """Written to a temporary folder and renamed, so a crash mid-save leaves the previous checkpoint intact."""
    import torch

    final = Path(out_dir) / CHECKPOINTS / f"step-{state['step']:06d}"
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    torch.save({"state": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "best_weights": best_weights, "torch_rng": torch.get_rng_state()}, staging / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    for old in sorted(final.parent.glob("step-*"))[:-2]:  # keep the last two
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(folder: Path, model, optimizer, scheduler) -> tuple[dict, dict | None]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    saved = torch.load(folder / "state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    return saved["state"], saved["best_weights"]


def _batch(size: int, step: int, config: FinetuneConfig) -> list[int]:
    """The example indices of optimizer step `step`: consecutive slices of a seeded permutation per epoch."""
    start = step * config.batch_size
    indices = []
    for position in range(start, start + config.batch_size):
        epoch, offset = divmod(position, size)
        order = list(range(size))
        random.Random(config.seed * 1000 + epoch).shuffle(order)
        indices.append(order[offset])
    return indices


def _lr_factor(step: int, config: FinetuneConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    return max(0.0, (config.max_steps - step) / max(1, config.max_steps - config.warmup_steps))


def _stopped_early(state: dict, config: FinetuneConfig) -> bool:
    return bool(config.patience) and state["stale"] >= config.patience


def _device_name() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
