"""`convrec ranker --out DIR`: train the learned ranker (finetune/ranker.py) and write its folder and card."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from agent.config import Settings

DEFAULT_ADAPTER = "finetune/adapters/convrec-redial-lora"


def add_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--out", default="finetune/rankers/convrec-ranker", help="ranker folder (default: the "
                     "committed one, finetune/rankers/convrec-ranker)")
    sub.add_argument("--adapter", default=DEFAULT_ADAPTER,
                     help=f"the adapter whose scores stage two learns (default {DEFAULT_ADAPTER})")
    sub.add_argument("--no-model", action="store_true", help="stage one only (no LLM scoring; minutes)")
    sub.add_argument("--stage-two", action="store_true",
                     help="keep the stage one in --out, (re)train stage two only (e.g. for a new --adapter)")
    sub.add_argument("--model-turns", type=int, help="split-B turns scored by the LLM for stage two (default 300)")
    sub.add_argument("--max-dialogues", type=int, help="first N training dialogues only (default all)")
    sub.add_argument("--valid-dialogues", type=int, help="first N validation dialogues only (default all)")
    sub.add_argument("--score-cache", metavar="FILE", help="keep the LLM's candidate scores in FILE and reuse them "
                     "(a later stage-two variant then costs seconds, not half an hour; eval/score_cache.py)")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--no-progress", action="store_true", help="no progress lines")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agent.build import build_recommender
    from finetune.ranker import RankerConfig, train_ranker

    overrides = {"model_turns": args.model_turns, "max_dialogues": args.max_dialogues,
                 "valid_dialogues": args.valid_dialogues}
    config = RankerConfig(seed=args.seed, with_model=not args.no_model, stage_two_only=args.stage_two,
                          **{k: v for k, v in overrides.items() if v is not None})
    settings = dataclasses.replace(settings, ranker="none", engine="transformers",
                                   adapters=() if args.no_model else (args.adapter,))
    settings.db = settings.cache_dir / "ranker-sessions.sqlite3"
    recommender, _ = build_recommender(settings, progress=not args.no_progress)
    if args.score_cache:
        from eval.score_cache import ScoreCachingEngine

        recommender = dataclasses.replace(recommender, engine=ScoreCachingEngine(recommender.engine,
                                                                                 Path(args.score_cache)))
    card = train_ranker(recommender, config, Path(args.out), progress=not args.no_progress)
    validation = "; ".join(f"{name}: R@10 {r['Recall@10']}" for name, r in card["validation"].items())
    print(f"ranker in {args.out}: collaborative model {card['collaborative']}; validation {validation}; "
          f"stage two {json.dumps(card.get('stage_two'))}", file=sys.stderr)
    return 0
