"""`convrec eval` as a user runs it: real dev dialogues, the real models and index, a LoRA adapter, the report.

Slow (two runs of a few dialogues with generation); the full-size numbers come from the same command (README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import REPO_ROOT, Settings
from agent.models import resolve_llm
from tests.conftest import DATA_DIR, needs_data

pytestmark = [pytest.mark.slow, needs_data]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A freshly initialised rank-2 LoRA adapter on the real model (its B matrices start at zero, so it ranks like
    the base model: this proves the adapter path loads and runs, not that training helped)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    settings = Settings.from_env()
    model = AutoModelForCausalLM.from_pretrained(resolve_llm(settings.model, settings.cache_dir))
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(folder)
    return folder


def run_eval(out: Path, index_dir: Path, *extra: str) -> dict:
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(index_dir),
           "CONVREC_CACHE_DIR": os.environ.get("CONVREC_CACHE_DIR", str(Path.home() / ".cache" / "convrec"))}
    done = subprocess.run([sys.executable, "-m", "ui.cli", "eval", "--limit", "2", "--explain-dialogues", "1",
                           "--no-progress", "--out", str(out), *extra], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def without_timings(results: dict) -> dict:
    stripped = {k: v for k, v in results.items() if k not in ("run_seconds", "config")}
    stripped["systems"] = {name: {k: v for k, v in r.items() if k not in ("latency", "seconds")}
                           for name, r in results["systems"].items()}
    return stripped


def test_eval_writes_every_number_and_the_report_and_reruns_agree(tmp_path, redial_index_dir, adapter):
    systems = "popularity,dense,cooccurrence,hybrid,llm"
    first = run_eval(tmp_path / "a", redial_index_dir, "--systems", systems, "--adapter", str(adapter))
    assert list(first["systems"]) == [*systems.split(","), "lora"]
    assert first["dialogues"] == 2 and first["turns"] > 0 and first["explained_dialogues"] == 1
    for name, result in first["systems"].items():
        assert result["grounding"]["out_of_catalog"] == 0 and result["grounding"]["repeats"] == 0
        assert set(result["seen_removed"]) >= {"Recall@1", "Recall@10", "Recall@50", "NDCG@10", "MRR"}
        assert result["latency"]["total"]["p50"] > 0
        if name in ("llm", "lora"):
            assert result["grounding"]["out_of_candidates"] == 0
            assert result["latency"]["rank"]["turns"] == first["turns"] and result["latency"]["explain"]["turns"] > 0
            shown = result["explanations"]["shown"]
            assert shown["explanations"] > 0 and shown["citing_a_fact"] == 1.0
            assert result["explanations"]["generated"]["explanations"] == shown["explanations"]
    assert first["systems"]["lora"]["engine"]["adapter"] == str(adapter)
    assert first["memory"]["dialogues"] == 2
    out = tmp_path / "a"
    report = (out / "report.md").read_text()
    for heading in ("Accuracy (seen removed)", "Grounding", "Explanation faithfulness", "Memory accuracy",
                    "Beyond accuracy", "Latency", "GPT-4 zero-shot"):
        assert heading in report
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and 'src="recall_at_k.png"' in page and "<script" not in page
    for plot in ("recall_at_k.png", "latency.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "turns.jsonl").read_text().splitlines()) == first["turns"]

    second = run_eval(tmp_path / "b", redial_index_dir, "--systems", systems, "--adapter", str(adapter))
    assert without_timings(second) == without_timings(first)


def test_answerable_only_gives_exactly_the_accuracy_of_a_full_run(tmp_path, redial_index_dir):
    """--answerable-only skips the LLM on turns whose answers are not among its candidates: every accuracy number,
    and every turn's scores, equal those of the run that scores every turn (the committed adapter and ranker)."""
    committed = str(REPO_ROOT / "finetune" / "adapters" / "convrec-redial-lora")
    args = ("--systems", "hybrid", "--adapter", committed, "--accuracy-only", "--limit", "5")
    full = run_eval(tmp_path / "full", redial_index_dir, *args)
    fast = run_eval(tmp_path / "fast", redial_index_dir, *args, "--answerable-only")
    counted = fast["systems"]["lora"]["answerable_only"]
    assert counted["scored_turns"] > 0 and counted["unscored_turns"] > 0
    assert counted["scored_turns"] + counted["unscored_turns"] <= full["turns"]  # no candidates: nothing asked
    for name in ("hybrid", "lora"):
        for setting in ("raw", "seen_removed"):
            assert fast["systems"][name][setting] == full["systems"][name][setting]
    records = [(tmp_path / run / "turns.jsonl").read_text().splitlines() for run in ("full", "fast")]
    assert [json.loads(r)["scores"] for r in records[0]] == [json.loads(r)["scores"] for r in records[1]]
    assert full["paired"] == fast["paired"]


def test_bad_arguments_get_one_line_errors(tmp_path, redial_index_dir):
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir)}
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"hello": 1}\n')
    for args, message in ((["--systems", "magic"], "unknown system 'magic'"),
                          (["--systems", "lora"], "needs --adapter"),
                          (["--adapter", str(tmp_path)], "no adapter_config.json"),
                          (["--dialogues", str(broken)], "neither the official ReDial format"),
                          (["--answerable-only"], "needs --accuracy-only")):
        done = subprocess.run([sys.executable, "-m", "ui.cli", "eval", "--out", str(tmp_path / "o"), *args],
                              env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
