"""Rehearse an experiment offline: a fresh `convrec serve --experiment FILE` on loopback, simulated users
(eval/simulate.py) through it, then the report as text, JSON and an HTML page with plots.

    python -m eval.rehearse experiments/pipeline-vs-popularity.toml --users 200 --out out/pipeline-vs-popularity
    make experiments                                   # both committed experiments (about 10 minutes on 2 cores)

The server runs with the committed adapter, explanations composed from facts (the simulated users judge the picks,
not the sentences: the model's explanations would cost seconds a turn and change no outcome) and online learning
off (so one arm's users do not change what the other arm ranks: each arm is the system as trained). Users are
served two at a time, in the seed's order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from agent.build import load_settings_catalog
from agent.config import Settings
from agent.experiments import load_experiment
from agent.store import SqliteSessionStore
from deploy.servers import free_port, start_server
from eval.experiments import experiment_report, format_report, html_report
from eval.latency import cpu_description
from eval.simulate import load_users, simulate

ADAPTER = "finetune/adapters/convrec-redial-lora"


def rehearse(experiment_path: Path, out: Path, *, users: int, turns: int, clients: int, seed: int) -> dict:
    experiment = load_experiment(experiment_path)
    settings = Settings.from_env()
    work = Path(tempfile.mkdtemp(prefix="convrec-rehearse-"))
    env = {**os.environ, "CONVREC_DB": str(work / "sessions.sqlite3"), "CONVREC_ONLINE": "0"}
    port = free_port()
    server = start_server(port, env, "--adapter", ADAPTER, "--no-llm-explanations", "--rate-limit", "0",
                          "--experiment", str(experiment_path), log_path=work / "server.log")
    try:
        catalog = load_settings_catalog(settings)
        people = load_users(settings.data_dir, catalog, count=users, seed=seed)
        counts = simulate(f"http://127.0.0.1:{port}", people, catalog, turns=turns, clients=clients)
    finally:
        server.terminate()
        server.wait(timeout=60)
    rows = SqliteSessionStore(work / "sessions.sqlite3", learn=False).experiment_rows(experiment.name)
    report = experiment_report(rows, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    record = {"experiment": experiment.definition(), "simulation": counts, "report": report,
              "server": ["--adapter", ADAPTER, "--no-llm-explanations", "online learning off"],
              "users": {"count": users, "turns": turns, "clients": clients, "seed": seed, "splits": ["train", "valid"]},
              "cpu": cpu_description()}
    (out / "report.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (out / "report.txt").write_text(format_report(report) + "\n", encoding="utf-8")
    (out / "report.html").write_text(html_report(report, rows), encoding="utf-8")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", type=Path, help="the experiment file (TOML)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    record = rehearse(args.experiment, args.out, users=args.users, turns=args.turns, clients=args.clients,
                      seed=args.seed)
    print(json.dumps(record["simulation"]), file=sys.stderr)
    print(format_report(record["report"]))
    failed = record["simulation"]["failed_turns"] + record["simulation"]["failed_users"]
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
