"""Native memory of a long-running server, which grows for hours without a Python leak:

- glibc's allocator gives each request thread an arena of its own (up to 8 per core), and the model's activations,
  of a different size every turn, leave each arena holding freed memory it never returns;
- torch's CPU kernels for bfloat16 matrix products (oneDNN, and ideep above it) each keep a compiled kernel per
  matrix shape, up to 1,024 of them, and every prompt length is a new shape: scoring 70 prompts of random lengths
  after the first 10, the heap grew 165 MB with both caches at their default, 81 MB with oneDNN's at 64, 11 MB with
  both at 64, in the same time (`python -m eval.native_memory`; docs/hardening/native-memory-prompts.json);
- the prefix cache kept cropped views of whole prompts' key-value caches (fixed: agent/engines.py, PrefixCache).

`convrec serve` caps the arenas at two and both kernel caches at 64 before the model loads, and hands freed memory back
to the system after each turn (`make load` watches the resident memory: eval/soak.py). No-ops where libc is not glibc.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena cap (glibc's malloc.h)."""


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


GLIBC = _glibc()


KERNEL_CACHE = 64
"""Compiled kernels kept by oneDNN and by ideep (their default: 1,024 each)."""
KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
"""oneDNN's and ideep's environment variables for it, read once per process at the first matrix product."""


def limit_native_caches(arenas: int = 2, kernels: int = KERNEL_CACHE) -> None:
    """Cap glibc's arenas and the kernel caches (call before the threads start and the first matrix product); a
    capacity already set in the environment is kept."""
    for variable in KERNEL_CACHE_VARIABLES:
        os.environ.setdefault(variable, str(kernels))
    if GLIBC is not None:
        GLIBC.mallopt(M_ARENA_MAX, arenas)


def give_back() -> None:
    """Return the free memory at the top of every arena to the system."""
    if GLIBC is not None:
        GLIBC.malloc_trim(0)
