"""Faster LoRA for vLLM's CPU build: one matrix product per adapter in the batch instead of a weight copy per token.

vLLM on a CPU applies LoRA with its PyTorch-native punica ops (`vllm.lora.ops.torch_ops`). Each op gathers the
adapter's weights once per token (`lora_b_weights[lora_indices_tensor]`: a [tokens, out, rank] copy) and multiplies
token by token. For a 1,000-token prompt of SmolLM2-135M that is gigabytes of copies per forward pass, and the LoRA
took many times longer than the layers' own linear maps; with these ops `make bench` went from 0.43x the transformers
engine's turns/s to 3.06x (`VLLM_PLUGINS=lora_filesystem_resolver make bench` runs without them). A token with no
adapter (index -1) also picked up the last adapter slot's weights there (why `VLLMEngine` keeps one slot free).

    register()   vLLM calls it in every process it starts (entry point "vllm.general_plugins" in pyproject.toml);
                 it swaps the bgmv ops of the CPU punica wrapper for the grouped ones below (same signatures and
                 results; the sgmv ops call them). GPU builds use Triton kernels and are left alone.

tests/test_vllm_engine.py checks these ops token by token against the definition, and the engine's greedy
text against transformers + peft.
"""

from __future__ import annotations

import torch


def _by_adapter(indices: torch.Tensor):
    """(adapter slot, rows) for each slot the tokens use; a slot of -1 means "no adapter"."""
    if indices.numel() == 0:
        return
    first = int(indices[0])
    if bool((indices == first).all()):  # the usual batch: every token on one adapter
        yield first, slice(None)
        return
    for slot in torch.unique(indices).tolist():
        yield int(slot), (indices == slot).nonzero().squeeze(1)


def _lora_product(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype) -> torch.Tensor:
    """inputs [tokens, in] times each token's adapter matrix (weights [slots, (1,) out, in]) -> [tokens, out]."""
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    result = torch.zeros(inputs.shape[0], weights.shape[1], dtype=dtype, device=inputs.device)
    for slot, rows in _by_adapter(indices):
        if slot >= 0:
            result[rows] = inputs[rows].to(dtype) @ weights[slot].to(dtype).T
    return result


def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling: float = 1.0):
    outputs = _lora_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs: bool = True):
    outputs = _lora_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(outputs.shape[1], output_tensor.shape[1])  # the adapter and the model may pad differently
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset: int,
                      slice_size: int, add_inputs: bool = True):
    outputs = _lora_product(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs


def register() -> None:
    """Install the grouped ops into vLLM's CPU LoRA path (idempotent; a no-op where vLLM lacks that path)."""
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:
        return
    for module in (lora_ops, punica_cpu):  # lora_ops' sgmv ops call its bgmv ops; punica_cpu imported them by name
        for op in (bgmv_shrink, bgmv_expand, bgmv_expand_slice):
            if hasattr(module, op.__name__):
                setattr(module, op.__name__, op)
