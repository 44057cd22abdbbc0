"""The server's native-memory settings (ui/api/allocator.py): kernel caches capped unless the environment says
otherwise. `python -m eval.native_memory` measures what they are worth; `make load` checks the server stays flat."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ui.api.allocator import KERNEL_CACHE, KERNEL_CACHE_VARIABLES

SHOW = ("from ui.api.allocator import KERNEL_CACHE_VARIABLES, limit_native_caches; import os, json; "
        "limit_native_caches(); print(json.dumps({v: os.environ.get(v) for v in KERNEL_CACHE_VARIABLES}))")


def capacities(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARIABLES}
    out = subprocess.run([sys.executable, "-c", SHOW], env={**clean, **env}, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_both_kernel_caches_are_capped_before_the_model_loads():
    assert capacities() == {v: str(KERNEL_CACHE) for v in KERNEL_CACHE_VARIABLES}


def test_a_capacity_set_by_the_operator_is_kept():
    assert capacities(LRU_CACHE_CAPACITY="512")["LRU_CACHE_CAPACITY"] == "512"
