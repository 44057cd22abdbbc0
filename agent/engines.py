"""LLM engines behind one small interface, so the turn never knows which one runs.

    ChatEngine
      model_names, base_name                                  each LoRA adapter it serves and the base model
      using(model_name) -> ChatEngine                         the same engine answering with that model/adapter
      generate(conversations, max_new_tokens, stop) -> texts  one batch, greedy; each text ends at a stop string
    ScoringEngine (optional)
      score_choices(messages, prefix, choices) -> log-probs   rank by the model's own likelihood of each candidate
    StructuredEngine (optional)
      generate_structured(messages, schema, max_new_tokens)   greedy text that the engine forces to fit a JSON schema

Implementations: `TransformersEngine` (here: in-process transformers, each PEFT adapter merged into a copy of the
weights, one forward at a time, explanations decoded as a batch with prompt lookup: agent/decoding.py),
`agent.vllm_engine.VLLMEngine` (in-process vLLM: continuous batching across sessions, LoRA per request, structured
outputs) and `agent.remote_engine.RemoteEngine` (any OpenAI-compatible server, e.g. `vllm serve`).

`TransformersEngine` runs in bfloat16 where the hardware computes it natively (2-3x faster than float32 on this CPU,
platform-notes) else float32. Scoring gives a ranking that can only contain the candidates: each candidate's id is
scored as the continuation of the answer prefix, on one shared prefill. Structured engines generate the answer under
a schema whose ids are an enum of the candidates; the turn validates every answer anyway (see agent/ranking.py).

Errors: `EngineError` (the engine failed or is unavailable) is the one exception the turn turns into a fallback.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agent.decoding import decode, last_position


class EngineError(RuntimeError):
    """The engine could not produce an answer (not loaded, out of memory, remote down)."""


@runtime_checkable
class ChatEngine(Protocol):
    name: str
    model_name: str
    """The model (or adapter) this engine answers with."""
    model_names: tuple[str, ...]
    """Every model it can answer with: the default first; the base model is always there."""
    base_name: str
    """The base model's name (the one without an adapter)."""

    def using(self, model_name: str) -> ChatEngine: ...

    def generate(self, conversations: Sequence[Sequence[BaseMessage]], max_new_tokens: int,
                 stop: Sequence[str] = ()) -> list[str]: ...


@runtime_checkable
class ScoringEngine(Protocol):
    """An engine that can also score candidates (checked with isinstance: only this method counts)."""

    def score_choices(self, messages: Sequence[BaseMessage], prefix: str, choices: Sequence[str]) -> list[float]:
        ...


@runtime_checkable
class StructuredEngine(Protocol):
    """An engine that can also force its answer to fit a JSON schema (checked with isinstance, like ScoringEngine)."""

    def generate_structured(self, messages: Sequence[BaseMessage], schema: dict, max_new_tokens: int) -> str: ...


def engine_view(engine, model_name: str):
    """`engine` answering with `model_name` (an adapter's name, or the base model's): a shallow copy that shares the
    loaded model, its lock, loop or connection pool with the original. Every engine's `using` is this."""
    if model_name not in engine.model_names:
        raise ValueError(f"unknown model {model_name!r}; this engine has {', '.join(engine.model_names)}")
    view = copy.copy(engine)
    view.model_name = model_name
    return view


def encode_chat(tokenizer, messages: Sequence[BaseMessage]) -> list[int]:
    """The prompt token ids of a chat, ending with the assistant turn's opening (the same for every engine)."""
    return tokenizer.apply_chat_template(to_chat_dicts(messages), add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]


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
MIN_SHARED_PREFIX = 32
"""A prompt start that recurs is kept in the prefix cache from this many tokens on (a template's fixed part)."""
RECENT_PROMPTS = 4
"""Single prompts remembered per model to find recurring starts: a turn alternates between templates (rank,
explain), so the previous prompt alone is usually another template's."""


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
    """A causal LM loaded with transformers; greedy decoding; thread-safe (one forward at a time).

    `adapters` (name -> PEFT folder) are all loaded; the first is the default, the base model (`model_name`) is
    always available too (the adapters are switched off for it)."""

    name = "transformers"

    def __init__(self, model_path: str, *, adapters: Mapping[str, str] | None = None, threads: int | None = None,
                 model_name: str | None = None, dtype: str = "auto", prefix_caching: bool = True,
                 merge_adapters: bool = True, prompt_lookup: bool = True) -> None:
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
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        adapters = dict(adapters or {})
        self.merged = merge_adapters and bool(adapters)
        """Each adapter served merged into its own copy of the weights: a fifth less compute per token than the
        adapter beside them (eval/engine_profile.py), one more copy of the model in memory per adapter."""
        self._merged_models = {name: merged_model(model_path, path, self.dtype).to(self.device).eval()
                               for name, path in adapters.items()} if self.merged else {}
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, self.dtype))
        for position, (name, path) in enumerate(adapters.items() if not self.merged else ()):
            from peft import PeftModel

            if position == 0:
                model = PeftModel.from_pretrained(model, path, adapter_name=name)
            else:
                model.load_adapter(path, adapter_name=name)
        self.model = model.to(self.device).eval()
        self.base_name = model_name or model_path
        self.model_names = (*adapters, self.base_name)
        self.model_name = self.model_names[0]
        self.adapters = adapters
        self._lock = threading.Lock()
        self.prefix_caching = prefix_caching
        """Reuse the key-value cache of recurring prompt starts (`_shared_prefix`); off, every prompt is prefilled
        whole (the reference path the tests compare against)."""
        self.prompt_lookup = prompt_lookup
        """Decoding checks the tokens that followed the row's latest tokens in its own prompt (agent/decoding.py);
        off, one token per step (the reference path)."""
        self._prefixes = PrefixCache()
        self._recent: dict[str, list[list[int]]] = {}
        """model name -> its last few prompts, to see which starts recur."""

    @property
    def numerics(self) -> str:
        """How the scores are computed (dtype, adapters merged or beside the weights): they differ in the last bits."""
        return f"{self.dtype}{' merged' if self.merged else ''}"

    def using(self, model_name: str) -> TransformersEngine:
        return engine_view(self, model_name)

    @contextmanager
    def _active_model(self) -> Iterator[object]:
        """Inside the lock: the module that answers as `model_name`: its merged copy, or the model with its adapter
        switched on, or with every adapter off for the base model."""
        if self.model_name in self._merged_models:
            yield self._merged_models[self.model_name]
        elif not self.adapters or self.merged:
            yield self.model
        elif self.model_name in self.adapters:
            self.model.set_adapter(self.model_name)
            yield self.model
        else:
            with self.model.disable_adapter():
                yield self.model

    def _encode_prompt(self, messages: Sequence[BaseMessage]) -> list[int]:
        return encode_chat(self.tokenizer, messages)

    def generate(self, conversations: Sequence[Sequence[BaseMessage]], max_new_tokens: int = 64,
                 stop: Sequence[str] = ()) -> list[str]:
        """Greedy continuations, one batch; a sequence ends at its first stop string (kept) or after max_new_tokens.

        The prompts' common start is prefilled once (or comes from the prefix cache), then each row runs as
        [common start][padding][its own rest]: the padding is masked and the positions skip it, so every row
        computes what it would alone. Decoding checks the tokens each row's own prompt proposes (agent/decoding.py)."""
        torch = self._torch
        prompts = [self._encode_prompt(c) for c in conversations]
        pad = self.tokenizer.pad_token_id
        with self._lock, self._active_model() as model, torch.inference_mode(), _as_engine_error("generate"):
            shared, cache, recurring = self._shared_prefix(model, prompts)
            self._keep(prompts[0], recurring, cache)
            self._keep(prompts[0], shared, cache)
            rests = [ids[shared:] for ids in prompts]
            width = max(len(rest) for rest in rests)
            rows = [prompts[0][:shared] + [pad] * (width - len(rest)) + rest for rest in rests]
            mask = [[1] * shared + [0] * (width - len(rest)) + [1] * len(rest) for rest in rests]
            texts = decode(model, torch, rows, mask, cache, skip=shared, max_new_tokens=max_new_tokens,
                           finished=self._end_of_text(model, tuple(stop)), lookup=self.prompt_lookup)
        return [t.strip() for t in self.tokenizer.batch_decode(texts, skip_special_tokens=True)]

    def _end_of_text(self, model, stop: tuple[str, ...]) -> Callable[[list[int]], int | None]:
        """How many of a row's new tokens to keep once it is done: up to its end token (dropped), or to the first
        token that completes a stop string (kept); None while it goes on."""
        ends = model.generation_config.eos_token_id
        ends = set(ends if isinstance(ends, list) else [ends]) | {self.tokenizer.eos_token_id}

        def finished(tokens: list[int]) -> int | None:
            end = next((i for i, token in enumerate(tokens) if token in ends), None)
            text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True)
            if stop and any(s in text for s in stop):
                return next(n for n in range(1, len(tokens) + 1)
                            if any(s in self.tokenizer.decode(tokens[:n], skip_special_tokens=True) for s in stop))
            return end

        return finished

    def score_choices(self, messages: Sequence[BaseMessage], prefix: str, choices: Sequence[str]) -> list[float]:
        """Log-probability of each choice (e.g. a candidate's letter, agent/ranking.py) after prompt + prefix.

        At most two forward passes whatever the number of choices: one prefill of the shared context (its start
        from the prefix cache when it recurs), then every choice of more than one token at once, packed into one
        sequence whose attention mask lets each choice see the context and itself only.
        Fine-tuning scores its ranking examples the same way, in one pass (finetune.train.choices_loss).
        """
        torch = self._torch
        context = self._encode_prompt(messages) + self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        encoded = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        packed, positions, mask = pack_choices(len(context), encoded, torch)
        with self._lock, self._active_model() as model, torch.inference_mode(), _as_engine_error("score"):
            device = self.device
            shared, cache, recurring = self._shared_prefix(model, [context])
            out = model(torch.tensor([context[shared:]], device=device), past_key_values=cache, use_cache=True,
                        logits_to_keep=last_position(torch, len(context) - shared, device))
            self._keep(context, recurring, out.past_key_values)  # before the choices are appended to it
            follow = out.logits[0, :0]  # one-token choices (the rank prompt's letters) need no second pass
            if packed:
                follow = model(torch.tensor([packed], device=device), past_key_values=out.past_key_values,
                               attention_mask=mask.to(device), position_ids=torch.tensor([positions], device=device),
                               use_cache=False).logits[0]
            scores = choice_logprobs(out.logits[0, -1], follow, encoded, torch)
        return [score.item() for score in scores]

    def _shared_prefix(self, model, prompts: list[list[int]]):
        """(length, key-value cache, recurring): the start that every prompt of the call shares, as far as the
        prefix cache holds it; for a batch, the rest of the shared start is prefilled now, once for every row.
        `recurring` is how far the call's start recurs (shared with one of this model's last few prompts: a
        template's fixed part); the caller keeps that much with `_keep` once its cache covers it.
        (0, None, 0) when prefix caching is off. Every prompt keeps its last token to compute."""
        if not self.prefix_caching:
            return 0, None, 0
        common = min(len(ids) - 1 for ids in prompts)
        for other in prompts[1:]:
            common = min(common, common_length(prompts[0], other))
        recent = self._recent.setdefault(self.model_name, [])
        recurring = min(common, max((common_length(prompts[0], other) for other in recent), default=0))
        recent.insert(0, prompts[0])
        del recent[RECENT_PROMPTS:]
        known, cache = self._prefixes.longest(self.model_name, prompts[0][:common])
        if len(prompts) > 1 and common > known and common >= MIN_SHARED_PREFIX:
            ids = self._torch.tensor([prompts[0][known:common]], device=self.device)
            cache = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1).past_key_values
            known = common
        return known, cache, recurring

    def _keep(self, prompt: list[int], end: int, cache) -> None:
        """Keep the cache of `prompt`'s first `end` tokens (`cache` covers at least them) unless too short or kept."""
        if self.prefix_caching and cache is not None and cache.get_seq_length() >= end >= MIN_SHARED_PREFIX:
            if self._prefixes.longest(self.model_name, prompt[:end], copy_cache=False)[0] < end:
                self._prefixes.keep(self.model_name, prompt[:end], cache)


def merged_model(model_path: str, adapter_path: str, dtype: str):
    """The base model with a LoRA adapter merged into its weights: merged in float32, then cast to `dtype` (merging in
    bfloat16 would round the adapter's small updates twice)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter_path).merge_and_unload().to(getattr(torch, dtype))


class PrefixCache:
    """Key-value caches of prompt starts that recur (each template's fixed instructions, the lines a batch of
    explanation prompts share), per model; the least recently used goes first. Each is its own copy: `longest`
    hands out a copy (the model appends to the cache it is given), `keep` stores one cut to the start's length."""

    def __init__(self, entries: int = 8) -> None:
        self.entries = entries
        self._caches: OrderedDict[tuple[str, tuple[int, ...]], object] = OrderedDict()

    def longest(self, model_name: str, ids: Sequence[int], copy_cache: bool = True) -> tuple[int, object | None]:
        """(length, a copy of its cache) of the longest kept start of `ids`; (0, None) when none is kept."""
        best = None
        for key in self._caches:
            name, prefix = key
            if name == model_name and len(prefix) <= len(ids) and tuple(ids[:len(prefix)]) == prefix:
                best = key if best is None or len(prefix) > len(best[1]) else best
        if best is None:
            return 0, None
        self._caches.move_to_end(best)
        return len(best[1]), copy.deepcopy(self._caches[best]) if copy_cache else self._caches[best]

    def keep(self, model_name: str, ids: Sequence[int], cache) -> None:
        """Keep the first len(ids) positions of `cache` (which may hold more) as the cache of `ids`."""
        kept = copy.deepcopy(cache)
        if kept.get_seq_length() > len(ids):
            kept.crop(len(ids) - kept.get_seq_length())  # a negative count: drop that many from the end
            for layer in kept.layers:  # crop leaves views of the whole prompt's storage: keep only the start
                layer.keys, layer.values = layer.keys.clone(), layer.values.clone()
        self._caches[(model_name, tuple(ids))] = kept
        while len(self._caches) > self.entries:
            self._caches.popitem(last=False)

    def nbytes(self) -> int:
        """Memory that the kept caches hold (their tensors' whole storage)."""
        return sum(t.untyped_storage().nbytes() for cache in self._caches.values() for layer in cache.layers
                   for t in (layer.keys, layer.values))


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two prompts share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def pack_choices(context_length: int, encoded: Sequence[Sequence[int]], torch) -> tuple[list[int], list[int], object]:
    """Every choice after one shared context, packed into one sequence: (packed token ids, their position ids, the
    boolean attention mask of the packed rows over context + packed: the whole context and the choice itself).
    A choice's last token is not packed: nothing reads the logits after it (one-token choices pack nothing)."""
    inputs = [ids[:-1] for ids in encoded]
    packed = [token for ids in inputs for token in ids]
    mask = torch.zeros(1, 1, len(packed), context_length + len(packed), dtype=torch.bool)
    mask[..., :context_length] = True
    positions, start = [], 0
    for ids in inputs:
        for j in range(len(ids)):
            mask[0, 0, start + j, context_length + start: context_length + start + j + 1] = True
        positions += range(context_length, context_length + len(ids))
        start += len(ids)
    return packed, positions, mask


def choice_logprobs(last_context_logits, packed_logits, encoded: Sequence[Sequence[int]], torch) -> list:
    """Each packed choice's log-probability (a 0-d tensor): its first token from the context's last logits, each
    next one from the logits at the choice's own previous token (`pack_choices` packed all but the last)."""
    first = torch.log_softmax(last_context_logits.float(), dim=-1)
    follow = torch.log_softmax(packed_logits.float(), dim=-1) if len(packed_logits) else None
    scores, start = [], 0
    for ids in encoded:
        score = first[ids[0]]
        for j in range(1, len(ids)):
            score = score + follow[start + j - 1, ids[j]]
        scores.append(score)
        start += len(ids) - 1
    return scores
