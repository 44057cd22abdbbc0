"""Online learning on data: the training dialogues replayed through the API as a stream of sessions, and dev
Recall@10 as the stream grows, against the batch-trained models.

    python -m eval.online_replay --out docs/eval/online-replay          (about 10 minutes on 2 cores)

1. A real `convrec serve` (online learning on, a fresh SQLite file, nothing learned yet) on loopback.
2. The stream: every training dialogue (train_sample, then train_extra: 3,358), in file order, becomes a session:
   `POST /v1/sessions`, then its seeker's liked movies (the seeker's form says liked; in the catalog) as one batch
   of `like` events with event ids. The server writes them to its `likes` table (agent/store.py).
3. At each checkpoint (sessions replayed), the dev dialogues' recommender turns are ranked by the retrieval step
   the collaborative model feeds (reciprocal-rank fusion of the collaborative list, weight 1.5, and the popularity
   list, weight 1; no dense retrieval, no learned ranker, no LLM: what online learning changes and nothing else),
   with the online model read from the server's SQLite file (retrieval/online.py). Recall@10 with seen items
   removed, and its 95% bootstrap interval over dialogues (eval/redial_bench.py's setting). The memory before each
   dev turn is the same for every model (eval/datasets.py, read once).
4. The batch models on the same turns: co-occurrence fitted at once on the stream's likes, and on every movie the
   training dialogues mention (the data of the co-occurrence model `convrec serve` ships).
Nothing is chosen on the dev dialogues: the checkpoints and settings are fixed above. The replay takes minutes,
so the 14-day half life barely acts here; tests/test_online.py checks the decay with a clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from agent.config import Settings
from agent.store import SqliteSessionStore
from deploy.servers import free_port, start_server
from eval.metrics import Recall, remove_seen
from eval.redial_bench import mean_with_interval, memory_truth
from retrieval.candidates import FusionConfig
from retrieval.collaborative import Cooccurrence
from retrieval.online import Blended, OnlineSignal
from retrieval.redial import dialogue_items, load_training_dialogues

CHECKPOINTS = (0, 50, 100, 200, 400, 800, 1600, 2400)
"""Sessions replayed when dev is scored (and at the end of the stream)."""
FUSION = FusionConfig(dense=0, cooccurrence=1.5, popularity=1.0, constraints=0)
RECALL = Recall(10)


def score(retriever, turns, seed: int) -> dict:
    """Recall@10 (seen removed) of `retriever` on the dev turns, with its interval."""
    from agent.turn import query_from

    values = []
    for turn in turns:
        ranked = [c.item_id for c in retriever.candidates(query_from(turn.state, turn.text), 50)]
        values.append(RECALL(*remove_seen(ranked, turn.relevant, turn.seen)))
    return mean_with_interval(values, [t.dialogue_id for t in turns], seed)


def run(settings: Settings, out: Path, *, limit: int = 0, seed: int = 0) -> dict:
    from agent.build import build_recommender
    from eval.datasets import load_benchmark

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="convrec-replay-"))
    offline = dataclasses.replace(settings, ranker="none", online_learning=False, db=work / "offline.sqlite3",
                                  explain_with_llm=False)
    recommender, _ = build_recommender(offline)
    catalog = recommender.catalog
    dev = load_benchmark(settings.data_dir / "redial" / "test_dev.jsonl", catalog, recommender.matcher,
                         settings.data_dir, limit, read=recommender.read)
    base = dataclasses.replace(recommender.retriever, index=None, config=FUSION, ranker=None, collaborative=None,
                               online=None)
    dialogues = load_training_dialogues(settings.data_dir)
    stream = [(d, sorted(memory_truth(d, catalog)[0])) for d in dialogues]
    batch = {"likes": score(dataclasses.replace(base, collaborative=Cooccurrence([likes for _, likes in stream])),
                            dev.turns, seed),
             "mentions": score(dataclasses.replace(base, collaborative=Cooccurrence(
                 [dialogue_items(d) for d in dialogues])), dev.turns, seed)}
    print(f"batch: {json.dumps(batch)}", file=sys.stderr)

    db = work / "served.sqlite3"
    env = {**os.environ, "CONVREC_DATA_DIR": str(settings.data_dir), "CONVREC_INDEX_DIR": str(settings.index_dir),
           "CONVREC_DB": str(db), "CONVREC_ONLINE": "1"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port, env, "--no-llm-explanations", "--rate-limit", "0", log_path=work / "server.log")
    checkpoints, events_sent, replay_seconds = [], 0, 0.0
    reader = SqliteSessionStore(db, learn=False)

    def checkpoint(sessions: int) -> None:
        online = OnlineSignal(reader.likes_since, refresh_seconds=0)
        result = score(dataclasses.replace(base, collaborative=Blended(None, online), online=online), dev.turns,
                       seed)
        checkpoints.append({"sessions": sessions, "likes": reader.likes_since(0)[1], "recall_at_10": result})
        print(json.dumps(checkpoints[-1]), file=sys.stderr, flush=True)

    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            checkpoint(0)
            for k, (dialogue, likes) in enumerate(stream, start=1):
                tick = time.perf_counter()
                session_id = f"replay-{dialogue.dialogue_id}"
                client.post("/v1/sessions", json={"session_id": session_id}).raise_for_status()
                if likes:
                    events = [{"type": "like", "item_id": i, "event_id": f"{session_id}-{i}"} for i in likes]
                    client.post(f"/v1/sessions/{session_id}/events", json=events).raise_for_status()
                    events_sent += len(events)
                replay_seconds += time.perf_counter() - tick
                if k in CHECKPOINTS or k == len(stream):
                    checkpoint(k)
    finally:
        server.terminate()
        server.wait(timeout=60)
    final = checkpoints[-1]["recall_at_10"]
    low, high = batch["mentions"]["ci95"]
    results = {"dev_turns": len(dev.turns), "dev_dialogues": dev.dialogues, "stream_sessions": len(stream),
               "like_events": events_sent, "replay_seconds": round(replay_seconds, 1),
               "events_per_second": round(events_sent / max(replay_seconds, 1e-9), 1),
               "fusion": dataclasses.asdict(FUSION), "seed": seed, "batch": batch, "checkpoints": checkpoints,
               "popularity_baseline": checkpoints[0]["recall_at_10"],
               "ends_inside_batch_interval": low <= final["mean"] <= high,
               "seconds": round(time.perf_counter() - started, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot(results, out / "recall.png")
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = results["checkpoints"]
    x = [max(p["sessions"], 10) for p in points]  # a log axis: the empty model is drawn at 10
    means = [p["recall_at_10"]["mean"] for p in points]
    lows = [p["recall_at_10"]["ci95"][0] for p in points]
    highs = [p["recall_at_10"]["ci95"][1] for p in points]
    figure, axes = plt.subplots(figsize=(7, 4.2))
    axes.fill_between(x, lows, highs, alpha=0.25, color="tab:blue")
    axes.plot(x, means, "o-", color="tab:blue", label="online: replayed sessions' likes, via the API")
    for key, colour, label in (("mentions", "tab:green", "batch: all training mentions (shipped data)"),
                               ("likes", "tab:orange", "batch: the same likes, fitted at once")):
        value = results["batch"][key]
        axes.axhline(value["mean"], color=colour, label=label)
        axes.axhspan(*value["ci95"], color=colour, alpha=0.12)
    axes.set_xscale("log")
    axes.set_xlabel("training sessions replayed (0 drawn at 10)")
    axes.set_ylabel("dev Recall@10 (seen removed)")
    axes.set_title("Online learning approaches the batch model (95% intervals)")
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("online-replay-out"))
    parser.add_argument("--limit", type=int, default=0, help="dev dialogues scored (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(Settings.from_env(), args.out, limit=args.limit, seed=args.seed)
    summary = {k: results[k] for k in ("stream_sessions", "like_events", "events_per_second",
                                       "popularity_baseline", "batch", "ends_inside_batch_interval")}
    summary["online_end"] = results["checkpoints"][-1]["recall_at_10"]
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
