"""glibc's allocator in a threaded server: many request threads each get an arena of their own (up to 8 per core),
and the model's activations, of a different size every turn, leave each arena holding freed memory it never returns:
the process grows for hours without a leak. `convrec serve` caps the arenas at two and hands freed memory back to
the system after each turn (`make load` watches the resident memory: eval/soak.py). No-ops where libc is not glibc.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8
"""mallopt's parameter number for the arena cap (glibc's malloc.h)."""


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


GLIBC = _glibc()


def limit_arenas(arenas: int = 2) -> None:
    """Cap glibc's arenas (call before the threads start)."""
    if GLIBC is not None:
        GLIBC.mallopt(M_ARENA_MAX, arenas)


def give_back() -> None:
    """Return the free memory at the top of every arena to the system."""
    if GLIBC is not None:
        GLIBC.malloc_trim(0)
