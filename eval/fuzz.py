"""Schema fuzzing: schemathesis against a real `convrec serve` on loopback, from the server's own OpenAPI document.

    python -m eval.fuzz --max-examples 500 --min-requests 10000 --out fuzz-out     # make fuzz (~30 min, 2 cores)
    python -m eval.fuzz --max-examples 15                                           # the CI slice (tests/test_fuzz.py)

The server runs in its fuzzing configuration: explanations composed from facts (no generation), 4 candidates for
the LLM to rank, no rate limit, a fresh SQLite file; the model, index and catalog are the real ones. One
schemathesis run of 500 examples per operation makes about 2,000 requests (Hypothesis stops early on small
inputs), so `--min-requests` runs it again with the next seed, against the same server and store, until enough.
Schemathesis runs every phase (the schema's examples, coverage, random fuzzing in positive and negative mode,
and stateful sequences that follow the document's links: a chat completion's session -> read it, post events,
remove a memory entry, forget it) with these checks:
    not_a_server_error            no 5xx
    status_code_conformance       every status is documented for its operation
    content_type_conformance      the documented media type
    response_schema_conformance   2xx bodies (and SSE events) match their schema; errors match the OpenAI envelope
    negative_data_rejection       a request that breaks the schema gets a 4xx
    unsupported_method            other methods get 405
Then every recorded exchange (the HAR file) is read again here: any response with a traceback in it, any error
response that is not {"error": {"message", "type", "param", "code"}}, and any traceback in the server's log fail the
run. The summary (requests, status histogram per operation, time) is printed as JSON and written to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from deploy.servers import free_port, start_server

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
          "negative_data_rejection", "unsupported_method")
SERVER_ARGS = ("--no-llm-explanations", "--candidates", "4", "--rate-limit", "0")
TRACEBACK_MARKS = ("Traceback (most recent call last)", 'File "/')


def run_fuzz(out: Path, *, max_examples: int, seed: int = 0, min_requests: int = 0,
             env: dict[str, str] | None = None) -> dict:
    """Start a server and fuzz it: schemathesis runs with seeds `seed`, `seed` + 1, ... until `min_requests` requests
    were made (one run when 0) or a run fails; stop the server. The summary (see `summarize`) of all runs, with
    schemathesis' worst exit code, the seeds and the time."""
    out.mkdir(parents=True, exist_ok=True)
    env = dict(env or os.environ)
    env.setdefault("CONVREC_DB", str(Path(tempfile.mkdtemp(prefix="convrec-fuzz-")) / "sessions.sqlite3"))
    port, log_path = free_port(), out / "server.log"
    log_path.unlink(missing_ok=True)
    started = time.perf_counter()
    server = start_server(port, env, *SERVER_ARGS, log_path=log_path)
    entries, exit_code, seeds, report = [], 0, [], ""
    try:
        while not seeds or (len(entries) < min_requests and exit_code == 0):
            run_seed = seed + len(seeds)
            har = out / f"exchanges-seed{run_seed}.har.json"
            command = [sys.executable, "-m", "schemathesis.cli", "run", f"http://127.0.0.1:{port}/openapi.json",
                       "--max-examples", str(max_examples), "--seed", str(run_seed), "--checks", ",".join(CHECKS),
                       "--workers", "1",  # CPython 3.11's ast is not thread-safe under schemathesis' workers
                       "--no-shrink", "--request-timeout", "120", "--report", "har", "--report-har-path", str(har)]
            finished = subprocess.run(command, capture_output=True, text=True, env=env)
            report += f"# seed {run_seed}\n{finished.stdout}{finished.stderr}\n"
            exit_code = max(exit_code, finished.returncode)
            entries += json.loads(har.read_text(encoding="utf-8"))["log"]["entries"]
            seeds.append(run_seed)
    finally:
        server.terminate()
        server.wait(timeout=60)
    (out / "schemathesis.txt").write_text(report, encoding="utf-8")
    summary = summarize({"log": {"entries": entries}}, log_path.read_text(errors="replace"))
    summary.update(schemathesis_exit_code=exit_code, seconds=round(time.perf_counter() - started, 1),
                   max_examples=max_examples, seeds=seeds, server_args=list(SERVER_ARGS))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def summarize(har: dict, server_log: str) -> dict:
    """Requests, statuses (all and per operation), and what this module checks beyond schemathesis."""
    statuses, per_operation = Counter(), Counter()
    tracebacks, bad_envelopes = [], []
    for entry in har["log"]["entries"]:
        request, response = entry["request"], entry["response"]
        status, text = response["status"], response.get("content", {}).get("text") or ""
        statuses[str(status)] += 1
        per_operation[f"{request['method']} {_route(request['url'])} {status}"] += 1
        where = f"{request['method']} {request['url'][:120]} -> {status}"
        if any(mark in text for mark in TRACEBACK_MARKS):
            tracebacks.append(where)
        if status >= 400 and not _is_envelope(text) and not (_route(request["url"]) == "/health" and status == 503):
            bad_envelopes.append(f"{where}: {text[:200]!r}")
    server_tracebacks = server_log.count("Traceback (most recent call last)")
    return {"requests": sum(statuses.values()), "statuses": dict(sorted(statuses.items())),
            "per_operation": dict(sorted(per_operation.items())), "tracebacks_in_responses": tracebacks[:20],
            "errors_outside_the_envelope": bad_envelopes[:20], "tracebacks_in_server_log": server_tracebacks}


def passed(summary: dict, min_requests: int = 0) -> bool:
    return (summary["schemathesis_exit_code"] == 0 and summary["requests"] >= min_requests
            and not summary["tracebacks_in_responses"] and not summary["errors_outside_the_envelope"]
            and summary["tracebacks_in_server_log"] == 0
            and not any(status.startswith("5") for status in summary["statuses"]))


def _is_envelope(text: str) -> bool:
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}


def _route(url: str) -> str:
    """The operation's path template: session ids and memory entries replaced."""
    path = "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
    parts = path.split("/")
    if len(parts) > 3 and parts[1:3] == ["v1", "sessions"]:
        parts[3] = "{session_id}"
        if len(parts) > 5 and parts[4] == "memory":
            parts[5:] = ["{entry}"]
    return "/".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=400, help="test cases per operation and phase")
    parser.add_argument("--min-requests", type=int, default=0,
                        help="run again with the next seed until this many requests were made")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-out"))
    args = parser.parse_args()
    summary = run_fuzz(args.out, max_examples=args.max_examples, seed=args.seed, min_requests=args.min_requests)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_operation"}, indent=2))
    ok = passed(summary, args.min_requests)
    if not ok:
        print(f"fuzzing failed: see {args.out}/schemathesis.txt, summary.json and server.log", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
