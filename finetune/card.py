"""The adapter's model card (README.md next to the weights), rendered from training.json and, once the adapter has
been evaluated, eval.json (`convrec finetune --add-eval eval-out/results.json --out DIR`)."""

from __future__ import annotations

import json
from pathlib import Path

from finetune.config import TRAINING_FILE

EVAL_FILE = "eval.json"
_LOSSES = {
    "choices": "rank examples: cross-entropy of the suggested movie among the prompt's candidates, each scored as the "
               "ranking scores it at serving time; explanation examples: the answer's tokens.",
    "tokens": "the answer's tokens (rank and explanation examples).",
}
_ROWS = ("Recall@1", "Recall@10", "Recall@50", "NDCG@10", "MRR")


def write_card(adapter_dir: Path) -> Path:
    adapter_dir = Path(adapter_dir)
    training = json.loads((adapter_dir / TRAINING_FILE).read_text(encoding="utf-8"))
    evaluation = _read(adapter_dir / EVAL_FILE)
    config = training["config"]
    lines = [
        f"# {training['adapter_name']}",
        "",
        f"A LoRA adapter for **{training['base_model']}** that ranks convrec's retrieved candidates and explains each "
        "pick from the movie's facts. Made by `convrec finetune`; load it with `--adapter` (convrec), "
        "`PeftModel.from_pretrained` (transformers + peft) or vLLM's `LoRARequest` (no added tokens, no "
        "modules_to_save).",
        "",
        "## Training",
        "",
        f"- Base model: `{training['base_model']}`; frozen weights in {training['dtype']}, LoRA weights trained in "
        "float32, saved in bfloat16.",
        f"- Prompt template version: `{training['template_version']}` (prompts/templates; convrec warns when the "
        "templates have changed since).",
        f"- Data: ReDial {_data(config['train_file'])} (validation: `{config['valid_file']}`), examples rendered "
        "with the live turn's prompts (candidates from the served retrieval and ranker, popularity and "
        "collaborative model cross-fitted; "
        f"{'shown in a seeded random order' if config.get('shuffle_candidates') else 'in retrieval order'}): "
        + ", ".join(f"{k} {v}" for k, v in training["mix"].items()) + ".",
        f"- LoRA: r={config['rank']}, alpha={config['alpha']}, dropout={config['dropout']}, on "
        f"{', '.join(config['target_modules'])}.",
        f"- Optimisation: {training['steps']} steps × {config['batch_size']} examples, AdamW lr "
        f"{config['learning_rate']} (warmup {config['warmup_steps']}, linear decay), seed {config['seed']}; best "
        f"validation loss at step {training['best_step']}"
        f"{' (stopped early)' if training['stopped_early'] else ''}.",
        f"- Loss: {_LOSSES[config.get('rank_loss', 'tokens')]}",
        f"- Validation loss: {training['initial_valid_loss']} before, {training['best_valid_loss']} after.",
        f"- Training time: {training['train_seconds'] / 60:.1f} min on {training['device']} "
        f"({training['total_seconds'] / 60:.1f} min with example building and loading).",
        *_calibration_lines(training.get("calibration")),
        "",
        "| step | train loss | validation loss |",
        "|---|---|---|",
        *(f"| {h['step']} | {h['train_loss'] if h['train_loss'] is not None else ''} | {h['valid_loss']} |"
          for h in training["history"]),
    ]
    if evaluation:
        lines += ["", "## Evaluation", "",
                  "`convrec eval` on ReDial dev dialogues, seen items removed (He et al.'s setting); supported claims "
                  "= share of the explanations' claims that are true of the item (generated: the model's own "
                  "sentences; shown: after the fact check).", "",
                  "| run | system | " + " | ".join(_ROWS)
                  + " | supported claims (generated) | supported claims (shown) |",
                  "|---|---|" + "---|" * (len(_ROWS) + 2)]
        for run in evaluation["runs"]:
            where = (f"{run['dialogues']} dialogues / {run['turns']} turns, explanations on "
                     f"{run['explained_dialogues']} dialogues, commit {run['commit']}, "
                     f"{run['run_seconds'] / 60:.0f} min")
            for name, system in run["systems"].items():
                accuracy = [f"{_mean(system['seen_removed'].get(row)):.4f}" for row in _ROWS]
                explanations = system.get("explanations") or {}
                claims = [_percent((explanations.get(kind) or {}).get("supported_claim_rate"))
                          for kind in ("generated", "shown")]
                weight = (system.get("engine") or {}).get("retrieval_weight")
                label = name if weight is None else f"{name} (retrieval weight {weight:g})"
                lines.append(f"| {where} | {label} | " + " | ".join([*accuracy, *claims]) + " |")
    lines += ["", "## Licence", "",
              "Trained on ReDial (CC BY 4.0, Li et al. 2018) with DBpedia facts (CC BY-SA 3.0); base model Apache-2.0.",
              ""]
    path = adapter_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def add_evaluation(adapter_dir: Path, results_paths: list[Path]) -> Path:
    """Copy the key numbers of `convrec eval` runs (results.json files) into the adapter folder; re-render the card."""
    runs = []
    for path in results_paths:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
        runs.append({"path": results["path"], "dialogues": results["dialogues"], "turns": results["turns"],
                     "explained_dialogues": results["explained_dialogues"],
                     "commit": results.get("config", {}).get("commit"), "run_seconds": results.get("run_seconds", 0),
                     "systems": {name: {"seen_removed": s["seen_removed"], "explanations": s.get("explanations"),
                                        "engine": s.get("engine")}
                                 for name, s in results["systems"].items() if name in ("hybrid", "llm", "lora")}})
    (Path(adapter_dir) / EVAL_FILE).write_text(json.dumps({"runs": runs}, indent=2) + "\n", encoding="utf-8")
    return write_card(adapter_dir)


def _data(train_file: str) -> str:
    if train_file == "split-a":
        return ("split A: train_sample + train_extra without the learned ranker's split B (finetune/crossfit.py), "
                "so stage two learns the adapter's score on dialogues it never saw")
    return f"`{train_file}`"


def _calibration_lines(calibration: dict | None) -> list[str]:
    if not calibration:
        return []
    weights = ", ".join(f"{w:g}" for w in calibration["weights"])
    return [f"- Retrieval weight: **{calibration['retrieval_weight']:g}**, chosen on `{calibration['file']}` "
            f"({calibration['dialogues']} dialogues, {calibration['turns']} turns): {calibration['metric']} of the "
            f"fused order for weights {weights}: adapter "
            f"{', '.join(f'{v:.4f}' for v in calibration['recall@10']['adapter'])}; base model "
            f"{', '.join(f'{v:.4f}' for v in calibration['recall@10']['base'])}. `--adapter` serves it with this "
            "weight (`--retrieval-weight` overrides)."]


def _mean(metric: dict | float | None) -> float:
    """A metric of results.json: {"mean": ..., ...} (or a bare number)."""
    return float(metric["mean"] if isinstance(metric, dict) else metric or 0.0)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
