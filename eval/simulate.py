"""Simulated users for rehearsing an experiment offline: each is a ReDial seeker of the training or validation
dialogues (never the dev set), who likes the movies their form says they liked and rejects every other pick.

    convrec simulate --url http://127.0.0.1:8000 --users 200 --turns 3

A user, in three turns (each through `POST /v1/chat/completions` on their own session):
    1. "I loved <their first liked movie (year)>. What should I watch?"
    2. "I also liked <their second liked movie (year)>. Anything else?"
    3. "Something else please."
After each turn they answer every pick with an event (`POST /v1/sessions/{id}/events`, with event ids): `like`
when the seeker liked it, `dislike` otherwise. Users are the dialogues with at least three liked movies in the
catalog (two to say, at least one left to find), shuffled with the seed. Why these messages: they carry what a
person says first in ReDial (a movie they loved), no words that favour one ranking over another, and leave the
movies still to be found unnamed; the outcome is the seeker's own opinion, not anything the system wrote.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from eval.redial_bench import memory_truth
from retrieval.catalog import Catalog
from retrieval.redial import VALIDATION_FILE, load_redial_dialogues, training_paths

SPLITS = ("train", "valid")


@dataclass(frozen=True)
class SimulatedUser:
    user_id: str
    """The dialogue it comes from."""
    liked: tuple[str, ...]
    """The seeker's liked movies (in the catalog), in the order of the dialogue's mention list."""

    def messages(self, catalog: Catalog, turns: int) -> list[str]:
        first, second = (catalog[i] for i in self.liked[:2])
        script = [f"I loved {_label(first)}. What should I watch?", f"I also liked {_label(second)}. Anything else?"]
        return (script + ["Something else please."] * turns)[:turns]


def _label(item) -> str:
    return f"{item.title} ({item.year})" if item.year else item.title


def load_users(data_dir: Path, catalog: Catalog, splits: tuple[str, ...] = ("train", "valid"), *, count: int,
               seed: int = 0) -> list[SimulatedUser]:
    paths = {"train": training_paths(data_dir), "valid": [Path(data_dir) / VALIDATION_FILE]}
    users = []
    for dialogue in (d for split in splits for path in paths[split] for d in load_redial_dialogues(path)):
        liked = memory_truth(dialogue, catalog)[0]
        order = list(dict.fromkeys(i for i in dialogue.mentions if i in liked))
        order += sorted(liked - set(order))
        if len(order) >= 3:
            users.append(SimulatedUser(dialogue.dialogue_id, tuple(order)))
    random.Random(seed).shuffle(users)
    return users[:count]


def simulate(url: str, users: list[SimulatedUser], catalog: Catalog, *, turns: int = 3, clients: int = 4,
             api_key: str | None = None, timeout: float = 600.0) -> dict:
    """Run every user against the server, `clients` at a time; the counts of what happened (a user whose requests
    failed is a failed user; a turn answered with an error a failed turn)."""
    run_id = uuid.uuid4().hex[:6]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    counts = {"users": len(users), "turns": 0, "failed_turns": 0, "failed_users": 0, "picks": 0, "likes": 0}
    lock = threading.Lock()
    queue = list(reversed(users))

    def one_user(client: httpx.Client, user: SimulatedUser) -> None:
        session_id = f"sim-{run_id}-{user.user_id}"
        liked = set(user.liked)
        for turn, text in enumerate(user.messages(catalog, turns)):
            response = client.post("/v1/chat/completions", headers={**headers, "X-Session-Id": session_id},
                                   json={"messages": [{"role": "user", "content": text}]})
            with lock:
                counts["turns"] += 1
                counts["failed_turns"] += response.status_code != 200
            if response.status_code != 200:
                continue
            picks = [r["item_id"] for r in response.json()["recommendations"]]
            events = [{"type": "like" if i in liked else "dislike", "item_id": i,
                       "event_id": f"{session_id}-{turn}-{i}"} for i in picks]
            if events:
                client.post(f"/v1/sessions/{session_id}/events", headers=headers, json=events).raise_for_status()
            with lock:
                counts["picks"] += len(picks)
                counts["likes"] += sum(i in liked for i in picks)

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    user = queue.pop()
                try:
                    one_user(client, user)
                except httpx.HTTPError as error:  # counted, never silent: the run then fails
                    with lock:
                        counts["failed_users"] += 1
                        counts.setdefault("errors", []).append(f"{user.user_id}: {type(error).__name__}: {error}")

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts["dislikes"] = counts["picks"] - counts["likes"]
    counts["seconds"] = round(time.perf_counter() - started, 1)
    return counts
