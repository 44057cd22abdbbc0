"""`convrec experiments list|report NAME` (an A/B experiment's report from the session store, eval/experiments.py)
and `convrec simulate` (simulated users against a running server, eval/simulate.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.config import Settings


def add_report_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("action", choices=("list", "report"), help="list the store's experiments, or report one")
    sub.add_argument("name", nargs="?", help="the experiment (with report)")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_argument("--html", metavar="FILE", help="also write the report as an HTML page with plots")
    sub.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the permutations")


def run_report(args: argparse.Namespace, settings: Settings) -> int:
    from agent.store import is_database_url, open_store
    from eval.experiments import experiment_report, format_report, html_report

    if not is_database_url(settings.db) and not settings.db.exists():
        raise FileNotFoundError(f"no session store at {settings.db} (--db names another)")
    store = open_store(settings.db, learn=False)
    if args.action == "list":
        print("\n".join(store.experiment_names()) or "no experiments in this store")
        return 0
    if not args.name:
        raise ValueError("`convrec experiments report` needs the experiment's name (`convrec experiments list`)")
    rows = store.experiment_rows(args.name)
    if rows is None:
        raise ValueError(f"no experiment {args.name!r} in {store}; `convrec experiments list` names them")
    report = experiment_report(rows, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if args.html:
        Path(args.html).write_text(html_report(report, rows), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    return 0


def add_simulate_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--url", default="http://127.0.0.1:8000", help="the running `convrec serve`")
    sub.add_argument("--users", type=int, default=200, help="simulated users (sessions), default 200")
    sub.add_argument("--turns", type=int, default=3, choices=range(1, 11), metavar="1-10",
                     help="turns per user (default 3)")
    sub.add_argument("--splits", default="train,valid", help="dialogues the users come from: train, valid or both "
                     "(never the dev set)")
    sub.add_argument("--clients", type=int, default=4, help="users served at once (default 4)")
    sub.add_argument("--key", help="Bearer key, if the server has keys")
    sub.add_argument("--seed", type=int, default=0, help="which users, in which order")
    sub.add_argument("--json", action="store_true", help="print the counts and the experiments as JSON")


def run_simulate(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from agent.build import load_settings_catalog
    from eval.experiments import format_report
    from eval.simulate import SPLITS, load_users, simulate

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    if not splits or set(splits) - set(SPLITS):
        raise ValueError(f"--splits takes {' and '.join(SPLITS)} (comma-separated), not {args.splits!r}")
    catalog = load_settings_catalog(settings)
    users = load_users(settings.data_dir, catalog, splits, count=args.users, seed=args.seed)
    counts = simulate(args.url, users, catalog, turns=args.turns, clients=args.clients, api_key=args.key)
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    experiments = httpx.get(f"{args.url}/v1/experiments", headers=headers, timeout=120).json()["data"]
    if args.json:
        print(json.dumps({"simulation": counts, "experiments": experiments}, indent=2))
    else:
        print(f"simulated {counts['users']} users ({counts['failed_users']} cut short by errors), {counts['turns']} "
              f"turns ({counts['failed_turns']} failed), "
              f"{counts['picks']} picks: {counts['likes']} liked, {counts['dislikes']} rejected, "
              f"in {counts['seconds']} s")
        for report in experiments:
            print()
            print(format_report(report))
    return 0 if counts["failed_turns"] == 0 and counts["failed_users"] == 0 else 1
