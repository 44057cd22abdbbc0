"""LLM engines behind one small interface, so the turn never knows which one runs.

    ChatEngine
      generate(conversations, max_new_tokens, stop) -> texts  one batch, greedy; each text ends at a stop string
      score_choices(messages, prefix, choices) -> log-probs   optional: rank by the model's own likelihood

`TransformersEngine` runs the model on the CPU (or a GPU) with transformers, optionally with a PEFT LoRA adapter, in
bfloat16 where the hardware computes it natively (2-3x faster than float32 on this CPU, platform-notes) else float32.
Scoring gives a ranking that can only contain the candidates: each candidate's id is scored as the continuation of
the answer prefix, on one shared prefill. Engines without `score_choices` generate the answer and the turn
validates it (see agent/ranking.py).

Errors: `EngineError` (the engine failed or is unavailable) is the one exception the turn turns into a fallback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage


class EngineError(RuntimeError):
    """The engine could not produce an answer (not loaded, out of memory, remote down)."""


@runtime_checkable
class ChatEngine(Protocol):
    name: str
    model_name: str

    def generate(self, conversations: Sequence[Sequence[BaseMessage]], max_new_tokens: int,
                 stop: Sequence[str] = ()) -> list[str]: ...


@runtime_checkable
class ScoringEngine(ChatEngine, Protocol):
    def score_choices(self, messages: Sequence[BaseMessage], prefix: str, choices: Sequence[str]) -> list[float]:
        ...


@contextmanager
def _as_engine_error(what: str) -> Iterator[None]:
    """Failures inside the model (out of memory, bad shapes) become EngineError, which the turn falls back on."""
    try:
        yield
    except (RuntimeError, ValueError, IndexError, MemoryError) as error:
        raise EngineError(f"{what} failed: {error}") from error


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages -> the role/content dicts of a chat template."""
    roles = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}
    out = []
    for message in messages:
        role = next((r for cls, r in roles.items() if isinstance(message, cls)), None)
        if role is None:
            raise EngineError(f"unsupported message type {type(message).__name__}")
        out.append({"role": role, "content": str(message.content)})
    return out


DTYPES = ("auto", "bfloat16", "float32")


def pick_dtype(requested: str = "auto") -> str:
    """"auto": bfloat16 on a GPU or a CPU with native bf16 (AVX512-BF16/AMX), else float32."""
    import torch

    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {requested!r}")
    if requested != "auto":
        return requested
    native = torch.cuda.is_available() or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bfloat16" if native else "float32"


class TransformersEngine:
    """A causal LM loaded with transformers; greedy decoding; thread-safe (one forward at a time)."""

    name = "transformers"

    def __init__(self, model_path: str, *, adapter: str | None = None, threads: int | None = None,
                 model_name: str | None = None, dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.dtype = pick_dtype(dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, self.dtype))
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
        self.model = model.eval()
        self.model_name = model_name or model_path
        self.adapter = adapter
        self._lock = threading.Lock()

    def _encode_prompt(self, messages: Sequence[BaseMessage]) -> list[int]:
        return self.tokenizer.apply_chat_template(to_chat_dicts(messages), add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"]

    def generate(self, conversations: Sequence[Sequence[BaseMessage]], max_new_tokens: int = 64,
                 stop: Sequence[str] = ()) -> list[str]:
        """Greedy continuations; a sequence ends at its first stop string (kept) or after max_new_tokens."""
        torch = self._torch
        prompts = [self._encode_prompt(c) for c in conversations]
        batch = self.tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
        stopping = {"stop_strings": list(stop), "tokenizer": self.tokenizer} if stop else {}
        with self._lock, torch.inference_mode(), _as_engine_error("generate"):
            output = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id, **stopping)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def score_choices(self, messages: Sequence[BaseMessage], prefix: str, choices: Sequence[str]) -> list[float]:
        """Log-probability of each choice (e.g. an item id plus its closing quote) after prompt + prefix.

        Two forward passes whatever the number of choices: one prefill of the shared context, then every choice at
        once, packed into one sequence whose attention mask lets each choice see the context and itself only.
        Fine-tuning scores its ranking examples the same way, in one pass (finetune.train.choices_loss).
        """
        torch = self._torch
        context = self._encode_prompt(messages) + self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        encoded = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        packed, positions, mask = pack_choices(len(context), encoded, torch)
        with self._lock, torch.inference_mode(), _as_engine_error("score"):
            out = self.model(torch.tensor([context]), use_cache=True)
            follow = self.model(torch.tensor([packed]), past_key_values=out.past_key_values, attention_mask=mask,
                                position_ids=torch.tensor([positions]), use_cache=False)
            scores = choice_logprobs(out.logits[0, -1], follow.logits[0], encoded, torch)
        return [score.item() for score in scores]


def pack_choices(context_length: int, encoded: Sequence[Sequence[int]], torch) -> tuple[list[int], list[int], object]:
    """Every choice after one shared context, packed into one sequence: (packed token ids, their position ids, the
    boolean attention mask of the packed rows over context + packed: the whole context and the choice itself)."""
    packed = [token for ids in encoded for token in ids]
    mask = torch.zeros(1, 1, len(packed), context_length + len(packed), dtype=torch.bool)
    mask[..., :context_length] = True
    positions, start = [], 0
    for ids in encoded:
        for j in range(len(ids)):
            mask[0, 0, start + j, context_length + start: context_length + start + j + 1] = True
        positions += range(context_length, context_length + len(ids))
        start += len(ids)
    return packed, positions, mask


def choice_logprobs(last_context_logits, packed_logits, encoded: Sequence[Sequence[int]], torch) -> list:
    """Each packed choice's log-probability (a 0-d tensor): its first token from the context's last logits, each
    next one from the logits at the choice's own previous token."""
    first = torch.log_softmax(last_context_logits.float(), dim=-1)
    follow = torch.log_softmax(packed_logits.float(), dim=-1)
    scores, start = [], 0
    for ids in encoded:
        score = first[ids[0]]
        for j in range(1, len(ids)):
            score = score + follow[start + j - 1, ids[j]]
        scores.append(score)
        start += len(ids)
    return scores
