"""LoRA fine-tuning: the recipe's checks, examples rendered with the live prompts, a few real training steps that
lower the loss, an adapter that reloads to the same greedy output, the CLI with checkpoints and resume, and the
committed adapter (trained on today's prompt templates, served by name)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from agent.config import REPO_ROOT, Settings
from agent.models import adapter_name, resolve_llm
from finetune.config import FinetuneConfig
from prompts import TEMPLATE_VERSION
from retrieval.collaborative import Cooccurrence
from tests.conftest import DATA_DIR, needs_data

COMMITTED = REPO_ROOT / "finetune" / "adapters" / "convrec-redial-lora"
VALID = DATA_DIR / "redial" / "train_sample" / "valid_data.jsonl"


# -- the recipe -------------------------------------------------------------------------------------------------------

def test_config_reads_a_file_and_flags_override_it(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"rank": 4, "max_steps": 9}))
    config = FinetuneConfig.load(path, max_steps=3, batch_size=None)
    assert (config.rank, config.max_steps, config.batch_size) == (4, 3, FinetuneConfig().batch_size)
    assert config.to_dict()["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('["rank"]', "JSON object"),
    ('{"rnak": 4}', "unknown finetune config field 'rnak'"),
    ('{"rank": 32}', "rank must be 1-16"),
    ('{"on_miss": "guess"}', "on_miss must be one of"),
    ('{"rank_loss": "pairs"}', "rank_loss must be one of"),
    ('{"max_steps": 0}', "max_steps must be at least 1"),
    ('{"calibrate_dialogues": -1}', "calibrate_dialogues is a count"),
])
def test_bad_configs_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        FinetuneConfig.load(path)


def test_leaving_a_dialogue_out_removes_exactly_its_counts_and_restores_them():
    cooccurrence = Cooccurrence([["a", "b", "c"], ["a", "b"], ["b", "d"]])
    before = cooccurrence.scores(["a"])
    with cooccurrence.leaving_out(["a", "b", "c", "a"]):
        assert cooccurrence.scores(["a"]) == Cooccurrence([["a", "b"], ["b", "d"]]).scores(["a"])
        assert "c" not in cooccurrence.scores(["a"])
    assert cooccurrence.scores(["a"]) == before


def test_a_bad_adapter_folder_is_refused_and_an_old_one_warns(tmp_path, capsys):
    with pytest.raises(ValueError, match="no adapter_config.json"):
        adapter_name(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "training.json").write_text(json.dumps({"adapter_name": "x", "template_version": "old"}))
    assert adapter_name(tmp_path) == "x"
    assert "retrain it" in capsys.readouterr().err


def test_the_committed_adapter_was_trained_on_these_prompt_templates():
    training = json.loads((COMMITTED / "training.json").read_text())
    assert training["template_version"] == TEMPLATE_VERSION, (
        "prompts/templates changed since the committed adapter was trained: retrain it with "
        "`convrec finetune --out finetune/adapters/convrec-redial-lora` and rerun `convrec eval --adapter`")
    config = json.loads((COMMITTED / "adapter_config.json").read_text())
    assert config["r"] <= 16 and not config.get("modules_to_save")
    assert config["base_model_name_or_path"] == "smollm2-135m-instruct"  # no path of the machine it was made on
    assert set(config["target_modules"]) >= {"q_proj", "v_proj", "up_proj", "down_proj"}
    assert (COMMITTED / "README.md").read_text().count(TEMPLATE_VERSION) == 1
    assert (COMMITTED / "adapter_model.safetensors").stat().st_size < 8_000_000


# -- examples ---------------------------------------------------------------------------------------------------------

class Recording:
    """Wraps the real engine and keeps the messages of every call (to compare with the training examples)."""

    def __init__(self, engine) -> None:
        self.engine, self.name, self.model_name = engine, engine.name, engine.model_name
        self.scored, self.generated, self.choices = [], [], []

    def generate(self, conversations, max_new_tokens, stop=()):
        self.generated += [list(c) for c in conversations]
        return self.engine.generate(conversations, max_new_tokens, stop)

    def score_choices(self, messages, prefix, choices):
        self.scored.append(list(messages))
        self.choices.append((prefix, tuple(choices)))
        return self.engine.score_choices(messages, prefix, choices)


@pytest.mark.slow
@needs_data
def test_examples_render_exactly_the_prompts_of_a_live_turn(redial_recommender):
    import dataclasses

    from agent.types import Trace
    from eval.datasets import load_benchmark
    from finetune.examples import build_examples

    examples, counts = build_examples(redial_recommender, VALID, FinetuneConfig(shuffle_candidates=False), limit=6)
    ranks = [e for e in examples if e.kind == "rank"]
    explains = [e for e in examples if e.kind == "explain"]
    assert ranks and counts["rank: suggested movie retrieved"] == len(ranks) and len(explains) == len(ranks)
    turns = load_benchmark(VALID, redial_recommender.catalog, redial_recommender.matcher, DATA_DIR, 6).turns
    recording = Recording(redial_recommender.engine)
    live = dataclasses.replace(redial_recommender, engine=recording)
    matched = 0
    for turn in turns:  # the live turn's own rank and explain steps, on the same memory
        trace = Trace()
        live.rank(turn.state, turn.text, trace)
        for rank, explain in zip(ranks, explains, strict=True):  # built in pairs: a rank example, its explanation
            if list(rank.messages) != recording.scored[-1]:
                continue
            matched += 1  # the same rank prompt: memory, conversation, candidates
            letters = json.loads(rank.answer)["ranking"]
            shown = trace.candidate_ids  # the live turn's candidates, in prompt order
            listed = rank.messages[-1].content.split("Candidates (letter: title, year, genres, director, star):\n")[1]
            assert [line.split(":")[0] for line in listed.split("\n")[: len(shown)]] == list(rank.choices)
            answer = [shown[rank.choices.index(letter)] for letter in letters]
            assert len(answer) == 5 and answer[0] in turn.relevant
            assert rank.answer_parts[0] == '{"ranking": ["' and rank.answer_parts[1] == letters[0]
            assert recording.choices[-1] == (rank.answer_parts[0], rank.choices)  # what the ranking scores
            assert {shown[k] for k in rank.targets} == set(turn.relevant) & set(shown)
            recording.generated.clear()
            live.explain(turn.state, (answer[0],), Trace())
            assert list(explain.messages) == recording.generated[0]  # the same explanation prompt
    assert matched == len(ranks)
    assert all(e.answer.endswith(".") for e in explains)


@pytest.mark.slow
@needs_data
def test_shuffled_examples_show_the_same_candidates_in_another_order_with_the_same_answers(redial_recommender):
    from finetune.examples import build_examples

    ordered, _ = build_examples(redial_recommender, VALID, FinetuneConfig(shuffle_candidates=False), limit=8)
    shuffled, _ = build_examples(redial_recommender, VALID, FinetuneConfig(), limit=8)
    pairs = list(zip([e for e in ordered if e.kind == "rank"], [e for e in shuffled if e.kind == "rank"], strict=True))
    assert pairs

    def listed(example) -> dict[str, str]:
        """letter -> the candidate's line, as the prompt lists them"""
        text = example.messages[-1].content.split("Candidates (letter: title, year, genres, director, star):\n")[1]
        return dict(line.split(": ", 1) for line in text.split("\n\n")[0].split("\n"))

    for plain, mixed in pairs:
        shown, moved = listed(plain), listed(mixed)
        assert list(shown) == list(plain.choices) and list(moved) == list(mixed.choices)
        assert sorted(shown.values()) == sorted(moved.values())
        assert {shown[plain.choices[k]] for k in plain.targets} == {moved[mixed.choices[k]] for k in mixed.targets}
        assert mixed.messages[-1].content != plain.messages[-1].content or len(shown) < 3
    assert any(list(listed(plain).values()) != list(listed(mixed).values()) for plain, mixed in pairs)


# -- training ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_examples(redial_recommender):
    from finetune.examples import build_examples

    examples, _ = build_examples(redial_recommender, VALID, FinetuneConfig(), limit=8)
    ranks = [e for e in examples if e.kind == "rank"][:2]
    explains = [e for e in examples if e.kind == "explain"][:2]
    return ranks + explains


@pytest.mark.slow
@needs_data
def test_a_few_steps_lower_the_loss_change_the_lora_weights_and_the_saved_adapter_reloads_the_same(
        tiny_examples, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.train import example_loss, load_for_training, round_to_bfloat16, save_adapter, tokenize

    torch.manual_seed(0)
    config = FinetuneConfig(dtype="float32", dropout=0.0)
    path = resolve_llm(Settings.from_env().model, Settings.from_env().cache_dir)
    tokenizer, model = load_for_training(path, config)
    data = [tokenize(e, tokenizer) for e in tiny_examples]
    ranks, explains = data[:2], data[2:]
    for example in ranks:  # rank examples: every candidate scored, the suggested movie's position as the target
        assert len(example.choices) == 20 and example.targets and not example.labels
    for example in explains:  # explanations: loss on the answer only, which ends with <|im_end|>
        ids, labels = example.input_ids, example.labels
        answer = [t for t in labels if t != -100]
        assert answer and labels[: len(ids) - len(answer)] == [-100] * (len(ids) - len(answer))
        assert tokenizer.decode(answer[-1:]) == "<|im_end|>"

    def mean_loss() -> float:
        with torch.no_grad():
            return sum(example_loss(model, example).item() for example in data) / len(data)

    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert all(not p.any() for p in lora_b.values())  # B starts at zero: the adapter starts as the base model
    before = mean_loss()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for _ in range(4):
        for example in data:
            (example_loss(model, example) / len(data)).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    after = mean_loss()
    assert after < before * 0.9, (before, after)
    assert any(p.detach().ne(lora_b[n]).any() for n, p in model.named_parameters() if n in lora_b)

    round_to_bfloat16(model)
    save_adapter(model, tmp_path)
    assert not json.loads((tmp_path / "adapter_config.json").read_text()).get("modules_to_save")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tmp_path)
    explain = explains[0]
    prompt = torch.tensor([explain.input_ids[: explain.labels.index(next(t for t in explain.labels if t != -100))]])
    kwargs = {"max_new_tokens": 24, "do_sample": False, "pad_token_id": tokenizer.eos_token_id}
    with torch.inference_mode():
        ours = model.generate(input_ids=prompt, **kwargs)
        theirs = reloaded.eval().generate(input_ids=prompt, **kwargs)
    assert ours.tolist() == theirs.tolist()


@pytest.mark.slow
@needs_data
def test_training_scores_the_candidates_exactly_as_serving_does(tiny_examples):
    """The choices loss sees each candidate's log-probability as TransformersEngine.score_choices computes it."""
    import torch

    from agent.engines import TransformersEngine
    from finetune.train import choices_loss, load_for_training, tokenize

    path = resolve_llm(Settings.from_env().model, Settings.from_env().cache_dir)
    engine = TransformersEngine(path, dtype="float32")
    _, model = load_for_training(path, FinetuneConfig(dtype="float32"))
    model.eval()
    rank = tiny_examples[0]
    example = tokenize(rank, engine.tokenizer)
    served = torch.tensor(engine.score_choices(list(rank.messages), rank.answer_parts[0], rank.choices))
    with torch.inference_mode():
        loss = choices_loss(model, example.input_ids, example.choices, example.targets).item()
    expected = (torch.logsumexp(served, 0) - torch.logsumexp(served[list(example.targets)], 0)).item()
    assert loss == pytest.approx(expected, abs=1e-3)


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ui.cli", *args], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
@needs_data
def test_finetune_command_checkpoints_resumes_and_writes_a_card(tmp_path, redial_index_dir):
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir)}
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"max_dialogues": 4, "batch_size": 2, "eval_every": 1, "save_every": 1,
                                  "valid_examples": 2, "calibrate_dialogues": 5, "adapter_name": "tiny-test"}))
    out = tmp_path / "adapter"
    first = run_cli("finetune", "--config", str(config), "--max-steps", "2", "--no-progress", "--out", str(out),
                    env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    second = run_cli("finetune", "--config", str(config), "--max-steps", "3", "--resume", "--no-progress",
                     "--out", str(out), env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming from step-000002 (step 2)" in second.stderr
    training = json.loads((out / "training.json").read_text())
    assert training["steps"] == 3 and [h["step"] for h in training["history"]] == [0, 1, 2, 3]
    assert training["template_version"] == TEMPLATE_VERSION and training["mix"]["rank examples"] > 0
    calibration = training["calibration"]  # the retrieval weight, chosen on the first 5 validation dialogues
    assert calibration["dialogues"] == 5 and calibration["retrieval_weight"] in calibration["weights"]
    assert len(calibration["recall@10"]["adapter"]) == len(calibration["recall@10"]["base"]) == 8
    card = (out / "README.md").read_text()
    assert "# tiny-test" in card and TEMPLATE_VERSION in card and "| 3 |" in card and "Retrieval weight" in card
    assert adapter_name(out) == "tiny-test"

    bad = run_cli("finetune", "--config", str(tmp_path / "missing.json"), "--out", str(out), env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing.json" in bad.stderr
    ask = run_cli("ask", "--session", "t1", "--adapter", str(tmp_path), "hello", env=env)
    assert ask.returncode == 2 and "no adapter_config.json" in ask.stderr


@pytest.mark.slow
@needs_data
def test_serve_with_the_adapter_lists_it_by_name_and_answers_with_it(tmp_path, redial_index_dir):
    from deploy.servers import free_port, start_server

    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR), "CONVREC_INDEX_DIR": str(redial_index_dir),
           "CONVREC_DB": str(tmp_path / "sessions.sqlite3")}
    port = free_port()
    server = start_server(port, env, "--adapter", str(COMMITTED), "--candidates", "10",
                          log_path=tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}/v1"
        models = [m["id"] for m in httpx.get(f"{url}/models", timeout=30).json()["data"]]
        assert models == ["convrec-redial-lora", "smollm2-135m-instruct"]  # the adapter by default, the base too
        reply = httpx.post(f"{url}/chat/completions", timeout=300, json={
            "model": "convrec-redial-lora", "messages": [{"role": "user", "content": "I loved The Matrix"}]})
        assert reply.status_code == 200, reply.text
        assert len(reply.json()["recommendations"]) == 5
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_card_carries_the_numbers_of_the_committed_dev_runs(tmp_path):
    import shutil

    from finetune.card import add_evaluation

    adapter = tmp_path / "adapter"
    shutil.copytree(COMMITTED, adapter)
    runs = [REPO_ROOT / "docs" / "eval" / name / "results.json" for name in ("redial-dev", "redial-dev-lora")]
    card = add_evaluation(adapter, runs).read_text(encoding="utf-8")
    lora = json.loads(runs[1].read_text())["systems"]["lora"]
    recall = lora["seen_removed"]["Recall@10"]["mean"]
    supported = lora["explanations"]["generated"]["supported_claim_rate"]
    weight = lora["engine"]["retrieval_weight"]  # the adapter's calibrated weight, recorded by the run
    row = next(line for line in card.splitlines() if f"| lora (retrieval weight {weight:g}) |" in line)
    assert f"{recall:.4f}" in row and f"{100 * supported:.1f}%" in row
    assert sum("| llm |" in line for line in card.splitlines()) == 1


def test_an_adapter_serves_with_its_calibrated_retrieval_weight_unless_one_is_given(tmp_path):
    from agent.build import calibrated_weights
    from agent.config import DEFAULT_RETRIEVAL_WEIGHT
    from agent.turn import Recommender

    class Named:
        def __init__(self, model_name):
            self.model_name = model_name

    committed = json.loads((COMMITTED / "training.json").read_text())["calibration"]["retrieval_weight"]
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "training.json").write_text("{broken")
    weights = calibrated_weights({"convrec-redial-lora": str(COMMITTED), "broken": str(tmp_path)})
    assert weights == {"convrec-redial-lora": committed}  # no weight for a broken file: the default applies

    def weight(model: str, setting: float | None = None) -> float:
        settings = Settings.from_env(retrieval_weight=setting)
        return Recommender(settings, None, None, None, Named(model), None, None, weights).retrieval_weight

    assert weight("convrec-redial-lora") == committed
    assert weight("smollm2-135m-instruct") == weight("broken") == DEFAULT_RETRIEVAL_WEIGHT
    assert weight("convrec-redial-lora", 0.5) == weight("smollm2-135m-instruct", 0.5) == 0.5


@pytest.mark.slow
@needs_data
def test_calibration_replays_validation_as_the_evaluation_does(redial_recommender):
    """A model that orders the candidates exactly as retrieval does changes nothing at any weight, and then every
    recall equals the evaluation's Recall@10 of the LLM system on the same turns (the same replay and metric)."""
    import dataclasses

    from agent.types import Trace
    from eval.datasets import load_benchmark
    from eval.metrics import Recall, mean, remove_seen
    from eval.redial_bench import DEPTH
    from finetune.calibrate import WEIGHTS, calibrate

    class RetrievalOrder:  # scores that repeat the retrieval order (first candidate best)
        name, model_name, base_name, model_names = "fake", "fake-adapter", "fake-base", ("fake-adapter", "fake-base")

        def using(self, model_name):
            return self

        def score_choices(self, messages, prefix, choices):
            return [-float(k) for k in range(len(choices))]

    recommender = dataclasses.replace(redial_recommender, engine=RetrievalOrder())
    result = calibrate(recommender, "fake-adapter", VALID, limit=6)
    assert result["dialogues"] == 6 and result["weights"] == list(WEIGHTS)
    recall = result["recall@10"]
    assert len(set(recall["adapter"])) == 1 and recall["adapter"] == recall["base"]
    assert result["retrieval_weight"] == 0.0  # a tie: the smallest weight, the model counts most

    benchmark = load_benchmark(VALID, recommender.catalog, recommender.matcher, DATA_DIR, 6)
    recalls = []
    for turn in benchmark.turns:
        ranked = recommender.rank(turn.state, turn.text, Trace(), depth=DEPTH)
        recalls.append(Recall(10)(*remove_seen(ranked, turn.relevant, turn.seen)))
    assert recall["adapter"][0] == round(mean(recalls)[0], 4)


def test_calibrate_and_add_eval_refuse_a_folder_without_an_adapter(tmp_path):
    env = {**os.environ, "CONVREC_DATA_DIR": str(DATA_DIR)}
    for flag in (["--calibrate"], ["--add-eval", str(tmp_path / "results.json")]):
        done = run_cli("finetune", *flag, "--out", str(tmp_path), env=env)
        assert done.returncode == 2 and "no training.json there" in done.stderr, done.stderr[-2000:]
