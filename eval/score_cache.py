"""Memoised `score_choices` for long evaluations: `convrec eval --score-cache FILE`.

Scoring a turn's candidates is deterministic (greedy, fixed weights), so its log-probabilities can be kept in a JSONL
file keyed by (model, its adapter's weights, prompt, prefix, choices) and reused by a later run over the same turns:
e.g. when only the ranker's second stage changed, or when two processes share the work of one run (each appends what
it computed; lines are written whole, with O_APPEND). Accuracy numbers are the same with or without the cache; the
rank stage's latency is not (results.json records how many scorings came from the cache).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

from langchain_core.messages import BaseMessage


class ScoreCachingEngine:
    """An engine whose `score_choices` answers from FILE when it can; everything else goes to the engine."""

    def __init__(self, engine, path: Path) -> None:
        self._engine, self._path = engine, Path(path)
        self._lock = threading.Lock()
        self.hits = self.misses = self._offset = 0
        self._scores: dict[str, list[float]] = {}
        self._weights = {name: _fingerprint(Path(path)) for name, path in getattr(engine, "adapters", {}).items()}
        self._read()

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def using(self, model_name: str) -> ScoreCachingEngine:
        view = ScoreCachingEngine.__new__(ScoreCachingEngine)
        view.__dict__.update(self.__dict__)
        view._engine = self._engine.using(model_name)
        return view

    def generate(self, conversations, max_new_tokens: int = 64, stop: Sequence[str] = ()) -> list[str]:
        return self._engine.generate(conversations, max_new_tokens, stop)

    def score_choices(self, messages: Sequence[BaseMessage], prefix: str, choices: Sequence[str]) -> list[float]:
        key = self._key(messages, prefix, choices)
        self._read()  # another process may have added it
        if key in self._scores:
            self.hits += 1
            return list(self._scores[key])
        scores = self._engine.score_choices(messages, prefix, choices)
        self.misses += 1
        with self._lock, self._path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "scores": scores}) + "\n")
        self._scores[key] = scores
        return scores

    def _key(self, messages, prefix: str, choices: Sequence[str]) -> str:
        model = self._engine.model_name
        numerics = getattr(self._engine, "numerics", "")  # bfloat16 / merged weights move the last bits
        text = json.dumps([model, self._weights.get(model, ""), numerics,
                           [[type(m).__name__, str(m.content)] for m in messages], prefix, list(choices)])
        return hashlib.sha256(text.encode()).hexdigest()

    def _read(self) -> None:
        if not self._path.exists():
            return
        with self._lock, self._path.open(encoding="utf-8") as handle:
            handle.seek(self._offset)
            while (line := handle.readline()).endswith("\n"):  # a line without its newline is still being written
                record = json.loads(line)
                self._scores[record["key"]] = record["scores"]
                self._offset = handle.tell()


def _fingerprint(adapter_dir: Path) -> str:
    """A hash of an adapter's weights: a retrained adapter under the same name never reuses old scores."""
    digest = hashlib.sha256()
    for weights in sorted(adapter_dir.glob("*.safetensors")):
        digest.update(weights.read_bytes())
    return digest.hexdigest()[:16]
