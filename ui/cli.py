"""The `convrec` command line: chat, ask, index, serve, ui, bench, load, crashtest, eval, finetune, memory, forget.

Errors become one-line messages here, at the edge (exit status 2 for bad input, 1 for anything else); set
CONVREC_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

from agent.config import ENGINES, Settings


class UsageError(Exception):
    """A request the user can fix (unknown session, bad catalog, ...): printed as `convrec: error: ...`."""


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the edge: every failure becomes a message
        if os.environ.get("CONVREC_DEBUG"):
            raise
        print(f"convrec: error: {_describe(error)}", file=sys.stderr)
        return 2 if _is_users_fault(error) else 1


NO_ONLINE = "rank with the batch-trained models only; learn nothing across sessions (env CONVREC_ONLINE=0)"
SERVING = ("cmd_serve", "cmd_ui", "cmd_chat", "cmd_ask")
"""The commands that serve people: they learn across sessions unless told not to (Settings.online_learning)."""


def _settings(args: argparse.Namespace) -> Settings:
    adapters = getattr(args, "adapter", None) if args.command is not cmd_eval else None  # a list (repeatable)
    online = (args.command.__name__ in SERVING and os.environ.get("CONVREC_ONLINE", "1") != "0"
              and not getattr(args, "no_online_learning", False))  # the offline jobs: never
    return Settings.from_env(data_dir=args.data_dir, cache_dir=args.cache_dir, index_dir=args.index_dir,
                             index_url=args.index_url, db=args.db, catalog=args.catalog, model=args.model,
                             ranker=args.ranker,
                             embedding_model=args.embedding_model, n=getattr(args, "n", None),
                             adapters=tuple(adapters) if adapters else None, engine=getattr(args, "engine", None),
                             engine_url=getattr(args, "engine_url", None),
                             retrieval_weight=getattr(args, "retrieval_weight", None),
                             online_learning=online)


def cmd_index(args: argparse.Namespace) -> int:
    from agent.build import load_embedder, load_settings_catalog
    from retrieval.index import build_index

    settings = _settings(args)
    catalog = load_settings_catalog(settings)
    where = settings.index_location
    _, status = build_index(catalog, load_embedder(settings), where, progress=True, force=args.force)
    verb = "built" if status.rebuilt else "up to date, not rebuilt"
    print(f"index {status.collection}: {status.count} items, {verb} ({status.seconds:.1f}s) in {where}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from agent.build import build_recommender
    from agent.turn import check_message, check_session_id

    settings = _settings(args)
    check_message(args.text, settings.max_message_chars)  # bad input fails before any model loads
    check_session_id(args.session)
    recommender, _ = build_recommender(settings, progress=True)
    if args.json:
        result = recommender.run_turn(args.session, args.text)
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        print_turn(recommender, args.session, args.text)
    return 0


def print_turn(recommender, session_id: str, text: str, prompt: str = ""):
    """Run a turn, printing the picks as soon as they are decided, then each explanation as it is written."""
    def picks(result) -> None:
        print(prompt + result.reply, flush=True)
        if result.recommendations:
            print("Why:", flush=True)

    def explanation(r) -> None:
        print(f"{r.rank}. {r.title}: {r.explanation}", flush=True)

    return recommender.run_turn(session_id, text, on_picks=picks, on_explanation=explanation)


def cmd_chat(args: argparse.Namespace) -> int:
    from agent.build import build_recommender
    from agent.turn import InputError

    sys.stdin.reconfigure(errors="surrogateescape")  # invalid UTF-8 gets a message, not a crash
    session_id = args.session or uuid.uuid4().hex[:12]
    print("loading models ...", file=sys.stderr)
    started = time.perf_counter()
    recommender, _ = build_recommender(_settings(args), progress=True)
    print(f"ready in {time.perf_counter() - started:.1f}s. Session {session_id}. "
          "Tell me what you like; /memory shows what I remember, /quit leaves.", file=sys.stderr)
    while True:
        try:
            text = input("you> ")
        except EOFError:
            return 0
        if text.strip() in ("/quit", "/exit"):
            return 0
        if text.strip() == "/memory":
            state = recommender.sessions.load(session_id)
            print(json.dumps(state.to_dict() if state else {}, indent=2, ensure_ascii=False))
            continue
        try:
            result = print_turn(recommender, session_id, text, prompt="convrec> ")
        except InputError as error:
            print(f"convrec: {error}")
            continue
        timings = result.trace.timings
        print(f"   (picks in {timings['first_pick']:.1f}s, all in {timings['total']:.1f}s)")


def cmd_bench(args: argparse.Namespace) -> int:
    from agent.build import build_recommender
    from eval.latency import format_report, measure_turn_latency, measure_ui_latency

    if args.ui:
        print(json.dumps(measure_ui_latency(args.ui, sessions=args.sessions), indent=2))
        return 0
    settings = _settings(args)
    settings.db = settings.cache_dir / "bench-sessions.sqlite3"  # keep benchmark sessions apart
    settings.prefix_cache = settings.prefix_cache and not args.no_prefix_cache
    settings.merge_adapters = settings.merge_adapters and not args.no_merge
    settings.prompt_lookup = settings.prompt_lookup and not args.no_prompt_lookup
    recommender, _ = build_recommender(settings, progress=True)
    report = measure_turn_latency(recommender, sessions=args.sessions, warmup=args.warmup, turns=args.turns)
    report["prefix_cache"] = getattr(recommender.engine, "prefix_caching", None)
    report["adapters_merged"] = getattr(recommender.engine, "merged", None)
    report["prompt_lookup"] = getattr(recommender.engine, "prompt_lookup", None)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ui.api.allocator import limit_native_caches
    from ui.api.app import ServerConfig, create_app

    limit_native_caches()  # before any thread starts: resident memory stays flat under load (ui/api/allocator.py)
    settings = _settings(args)
    if args.no_llm_explanations:
        settings.explain_with_llm = False
    if args.candidates:
        settings.candidates_in_prompt = args.candidates
    if args.debug:  # the only way user text reaches the log
        import logging

        logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("convrec").setLevel(logging.DEBUG)
    keys = tuple(args.api_key or [k for k in os.environ.get("CONVREC_API_KEYS", "").split(",") if k.strip()])
    experiment = None
    if args.experiment:
        from agent.experiments import load_experiment

        experiment = load_experiment(args.experiment)  # a bad file fails before the model loads
    app = create_app(settings, ServerConfig(api_keys=keys, rate_limit=args.rate_limit, experiment=experiment))
    print(f"convrec API on http://{args.host}:{args.port}/v1 (keys: {'on' if keys else 'off'}); "
          "the model loads in the background, /health says when it is ready", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from ui.web import CSS, ApiBackend, LocalBackend, create_web_app

    if args.api_url:
        backend = ApiBackend(args.api_url, args.key)
    else:
        from agent.build import build_recommender
        from ui.api.allocator import limit_native_caches

        limit_native_caches()  # a long-running process too (ui/api/allocator.py)
        settings = _settings(args)
        backend = LocalBackend(lambda: build_recommender(settings, progress=True)[0])
    app = create_web_app(backend, concurrency_limit=args.concurrency)
    print(f"convrec web chat on http://{args.host}:{args.port} "
          f"({'via ' + args.api_url if args.api_url else 'model loading in the background'})", file=sys.stderr)
    app.queue(default_concurrency_limit=args.concurrency).launch(
        server_name=args.host, server_port=args.port, css=CSS, quiet=True, footer_links=["api"], ssr_mode=False)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    if args.engines:
        return _serving_bench(args)
    from eval.load import run_load

    report = run_load(args.url.rstrip("/"), clients=args.clients, turns=args.turns, api_key=args.key)
    print(json.dumps(report.summary(), indent=2))
    return 0 if report.failures == 0 else 1


def _serving_bench(args: argparse.Namespace) -> int:
    """`convrec load --engines a,b`: start `convrec serve` per engine and put the same load on each (make bench)."""
    import tempfile
    from pathlib import Path

    from agent.config import ENGINES
    from eval.serving_bench import format_bench, run_serving_bench

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or any(e not in ENGINES for e in engines):
        raise UsageError(f"--engines: choose from {', '.join(ENGINES)} (got {args.engines!r})")
    if "remote" in engines and not args.engine_url:
        raise UsageError("--engines remote needs --engine-url (an OpenAI-compatible server, e.g. `vllm serve`)")
    settings = _settings(args)
    server_args = (*(("--model", args.model) if args.model else ()),
                   *(a for adapter in args.adapter or [] for a in ("--adapter", adapter)), *args.serve_arg)
    out, commit = Path(args.out) if args.out else None, _git_commit()
    with tempfile.TemporaryDirectory(prefix="convrec-bench-") as scratch:
        env = {**os.environ, "CONVREC_DATA_DIR": str(settings.data_dir), "CONVREC_CACHE_DIR": str(settings.cache_dir),
               "CONVREC_INDEX_DIR": str(settings.index_dir), "CONVREC_DB": str(Path(scratch) / "sessions.sqlite3")}
        if out:
            out.mkdir(parents=True, exist_ok=True)
        report = run_serving_bench(engines, clients=args.clients, turns=args.turns, server_args=server_args,
                                   engine_url=args.engine_url, env=env, log_dir=out or Path(scratch))
    report["commit"] = commit
    table = format_bench(report)
    print(table)
    if out:
        (out / "bench.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        (out / "bench.md").write_text(table + "\n", encoding="utf-8")
        print(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and the servers' logs", file=sys.stderr)
    return 0 if all(row["failures"] == 0 for row in report["engines"]) else 1


def cmd_crashtest(args: argparse.Namespace) -> int:
    from eval.crash import run_crash_check

    env = {**os.environ}
    for flag, var in ((args.data_dir, "CONVREC_DATA_DIR"), (args.index_dir, "CONVREC_INDEX_DIR")):
        if flag:
            env[var] = str(flag)
    env["CONVREC_DB"] = str(args.db or _settings(args).cache_dir / "crashtest.sqlite3")
    report = run_crash_check(env, clients=args.clients, turns=args.turns, kill_after=args.kill_after,
                             server_args=("--no-llm-explanations", "--candidates", "10"))
    print(json.dumps(report, indent=2))
    return 0 if report["lost"] == report["streamed_turns_lost"] == report["events_lost"] == 0 else 1


def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses
    import time
    from pathlib import Path

    from agent.build import build_recommender
    from agent.models import adapter_name
    from eval.datasets import load_benchmark
    from eval.redial_bench import ALL_SYSTEMS, run_benchmark
    from eval.report import write_report

    settings = _settings(args)
    settings.db = settings.cache_dir / "eval-sessions.sqlite3"  # the evaluation keeps its memory in-process
    settings.seed = args.seed
    systems = tuple(dict.fromkeys(s.strip() for s in args.systems.split(",") if s.strip()))
    unknown = [s for s in systems if s not in ALL_SYSTEMS]
    if unknown:
        raise UsageError(f"unknown system {unknown[0]!r}; choose from {', '.join(ALL_SYSTEMS)}")
    lora_name = adapter_name(args.adapter) if args.adapter else None  # checks the folder before any model loads
    if args.adapter and "lora" not in systems:
        systems += ("lora",)
    if "lora" in systems and not args.adapter:
        raise UsageError("the lora system needs --adapter DIR")
    if args.limit < 0 or args.explain_dialogues < 0:
        raise UsageError("--limit and --explain-dialogues are counts (0 = all / none)")
    if args.answerable_only and not args.accuracy_only:
        raise UsageError("--answerable-only needs --accuracy-only (explanations are generated for every turn)")
    path = Path(args.dialogues or settings.data_dir / "redial" / "test_dev.jsonl")
    started, commit = time.perf_counter(), _git_commit()  # the code that runs, whatever is committed meanwhile
    settings.adapters = (args.adapter,) if "lora" in systems else ()
    settings.merge_adapters &= settings.engine != "vllm"  # vLLM serves the base model only beside a LoRA
    recommender, _ = build_recommender(settings, progress=True)
    benchmark = load_benchmark(path, recommender.catalog, recommender.matcher, settings.data_dir, args.limit,
                               read=recommender.read)
    engine = recommender.engine  # one engine: the base model for llm, the adapter for lora
    if args.score_cache:
        from eval.score_cache import ScoreCachingEngine

        engine = ScoreCachingEngine(engine, Path(args.score_cache))
    recommenders = {"llm": dataclasses.replace(recommender, engine=engine.using(engine.base_name))}
    if "lora" in systems:
        recommenders["lora"] = dataclasses.replace(recommender, engine=engine.using(lora_name))
    explain = 0 if args.accuracy_only else args.explain_dialogues
    print(f"{benchmark.dialogues} dialogues, {len(benchmark.turns)} turns; systems: {', '.join(systems)}; "
          f"explanations on the first {explain} dialogues", file=sys.stderr)
    results, records = run_benchmark(recommenders, benchmark, systems, explain_dialogues=explain,
                                     progress=not args.no_progress, seed=args.seed,
                                     answerable_only=args.answerable_only)
    results["run_seconds"] = round(time.perf_counter() - started, 1)
    results["path"] = _relative_to(path, settings.data_dir)  # a record reads the same on every machine
    results["config"] = {"model": settings.model, "engine": settings.engine,
                         "dtype": getattr(recommender.engine, "dtype", ""),
                         "adapter": args.adapter, "candidates_in_prompt": settings.candidates_in_prompt,
                         "catalog": recommender.catalog.source, "catalog_items": len(recommender.catalog),
                         "seed": args.seed, "commit": commit}
    if args.score_cache:
        results["config"]["score_cache"] = {system: {"hits": r.engine.hits, "computed": r.engine.misses}
                                            for system, r in recommenders.items() if system in systems}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    with (out / "turns.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
    written = write_report(results, out)
    print((out / "report.md").read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in [out / "results.json", out / "turns.jsonl", *written]), file=sys.stderr)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from finetune.card import add_evaluation
    from finetune.config import FinetuneConfig

    out = Path(args.out)
    if (args.add_eval or args.calibrate) and not (out / "training.json").is_file():
        raise UsageError(f"--out {out}: no training.json there (an adapter made by convrec finetune)")
    if args.add_eval:
        print(f"wrote {add_evaluation(out, [Path(p) for p in args.add_eval])}")
        return 0
    if args.calibrate:
        from finetune.calibrate import calibrate_adapter

        calibration = calibrate_adapter(_settings(args), out, progress=not args.no_progress)
        recall = calibration["recall@10"]
        print(f"adapter in {out}: retrieval weight {calibration['retrieval_weight']:g} (validation Recall@10 by "
              f"weight {calibration['weights']}: adapter {recall['adapter']}, base model {recall['base']})")
        return 0
    from finetune.train import finetune

    config = FinetuneConfig.load(args.config, max_steps=args.max_steps, max_dialogues=args.max_dialogues,
                                 batch_size=args.batch_size, learning_rate=args.learning_rate, rank=args.rank,
                                 seed=args.seed, on_miss=args.on_miss, rank_loss=args.rank_loss)
    settings = _settings(args)
    settings.db = settings.cache_dir / "finetune-sessions.sqlite3"
    summary = finetune(settings, config, out, resume=args.resume, progress=not args.no_progress)
    print(f"adapter {summary['adapter_name']} in {out}: {summary['steps']} steps in "
          f"{summary['train_seconds'] / 60:.1f} min (total {summary['total_seconds'] / 60:.1f} min); validation loss "
          f"{summary['initial_valid_loss']} -> {summary['best_valid_loss']} (best at step {summary['best_step']}); "
          f"retrieval weight {summary['calibration']['retrieval_weight']:g}")
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from ui.commands import experiments

    return experiments.run_report(args, _settings(args))


def cmd_simulate(args: argparse.Namespace) -> int:
    from ui.commands import experiments

    return experiments.run_simulate(args, _settings(args))


def cmd_ranker(args: argparse.Namespace) -> int:
    from ui.commands import ranker

    return ranker.run(args, _settings(args))


def _relative_to(path, data_dir) -> str:
    """`path` as `<data>/...` when it lies in the data dir, else as given."""
    from pathlib import Path

    try:
        return "<data>/" + Path(path).resolve().relative_to(Path(data_dir).resolve()).as_posix()
    except ValueError:
        return str(path)


def _git_commit() -> str:
    """The checkout's short commit, recorded with the evaluation results ("" outside a git checkout)."""
    import subprocess
    from pathlib import Path

    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent.parent)
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cmd_memory(args: argparse.Namespace) -> int:
    from agent.store import open_store

    state = open_store(_settings(args).db, learn=False).load(args.session)
    if state is None:
        raise UsageError(f"no session {args.session!r} (it was never used, or was forgotten)")
    print(json.dumps(state.to_dict(), indent=2, ensure_ascii=False))
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from agent.store import open_store

    if not open_store(_settings(args).db, learn=False).forget(args.session):
        raise UsageError(f"no session {args.session!r}: nothing to forget")
    print(f"forgot session {args.session}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convrec", description="An LLM-driven conversational recommender.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="folder with redial/ and movietweetings/ (env CONVREC_DATA_DIR)")
    common.add_argument("--cache-dir", help="models and index cache (env CONVREC_CACHE_DIR)")
    common.add_argument("--index-dir", help="Chroma index folder (env CONVREC_INDEX_DIR)")
    common.add_argument("--db", help="session store: a SQLite file or a PostgreSQL URL, postgresql://user@host:port/db "
                        "(env CONVREC_DB)")
    common.add_argument("--index-url", help="Chroma's server (`chroma run`) instead of --index-dir, e.g. "
                        "http://127.0.0.1:8200 (env CONVREC_INDEX_URL)")
    common.add_argument("--catalog", help='"redial" (default) or a CSV/JSONL catalog file')
    common.add_argument("--model", help="LLM: default smollm2-135m-instruct, a local folder or a hub id")
    common.add_argument("--embedding-model", help="embedder: default all-minilm-l6-v2, a local folder or a hub id")
    common.add_argument("--ranker", help='learned ranker folder (default: finetune/rankers/convrec-ranker with the '
                        'ReDial catalog; env CONVREC_RANKER); "none" orders candidates by fusion alone')
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(command=handler)
        return sub

    chat = command("chat", cmd_chat, "chat interactively")
    chat.add_argument("--session", help="resume this session (default: a new one)")
    chat.add_argument("-n", type=int, help="recommendations per turn (default 5)")
    ask = command("ask", cmd_ask, "one turn, non-interactive")
    ask.add_argument("--session", required=True, help="session id (created when new)")
    ask.add_argument("--json", action="store_true", help="print the whole TurnResult as JSON")
    ask.add_argument("-n", type=int, help="recommendations per turn (default 5)")
    ask.add_argument("text", help="what the user says")
    for sub in (chat, ask):
        sub.add_argument("--no-online-learning", action="store_true", help=NO_ONLINE)
    index = command("index", cmd_index, "build the vector index (skipped when the catalog is unchanged)")
    index.add_argument("--force", action="store_true", help="rebuild even when unchanged")
    bench = command("bench", cmd_bench, "turn latency per stage (p50/p95) over scripted sessions, in-process")
    bench.add_argument("--sessions", type=int, default=3, help="scripted sessions of 6 turns (default 3)")
    bench.add_argument("--warmup", type=int, default=2, help="turns run first and not counted (default 2)")
    bench.add_argument("--turns", type=int, default=6, choices=range(1, 7), metavar="1-6",
                       help="the script's first N messages per session (default all 6)")
    bench.add_argument("--json", action="store_true", help="print the report as one JSON object")
    bench.add_argument("--no-prefix-cache", action="store_true",
                       help="prefill every prompt whole (the transformers engine's reference path, for comparison)")
    bench.add_argument("--no-merge", action="store_true",
                       help="run the adapter beside the weights instead of merged into them (for comparison)")
    bench.add_argument("--no-prompt-lookup", action="store_true",
                       help="decode one token per step, no proposals from the prompt (for comparison)")
    bench.add_argument("--ui", metavar="URL", help="time the script through a running web chat (`convrec ui`) instead")
    serve = command("serve", cmd_serve, "the OpenAI-compatible HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", action="append", help="accepted Bearer key (repeatable; env CONVREC_API_KEYS)")
    serve.add_argument("--rate-limit", type=int, default=600, help="requests per minute per key; 0 = off")
    serve.add_argument("-n", type=int, help="recommendations per turn (default 5)")
    serve.add_argument("--candidates", type=int, choices=range(1, 27), metavar="1-26",
                       help="candidates the LLM ranks per turn (default 20; the prompt names them A-Z)")
    serve.add_argument("--no-llm-explanations", action="store_true",
                       help="compose explanations from facts only (faster; no generation)")
    serve.add_argument("--no-online-learning", action="store_true",
                       help=NO_ONLINE)
    serve.add_argument("--experiment", metavar="FILE",
                       help="run this A/B experiment (a TOML file, agent/experiments.py): each session's arm serves it")
    serve.add_argument("--debug", action="store_true",
                       help="log each turn's text (user messages never reach the log otherwise)")
    web = command("ui", cmd_ui, "the web chat (Gradio): cards, feedback buttons, an editable memory")
    web.add_argument("--host", default="127.0.0.1")
    web.add_argument("--port", type=int, default=7860)
    web.add_argument("--api-url", help="use a running `convrec serve` (e.g. http://127.0.0.1:8000) instead of "
                                       "loading the model in this process")
    web.add_argument("--key", help="Bearer key for --api-url, if the server has keys")
    web.add_argument("--concurrency", type=int, default=4, help="chat turns served at once (default 4)")
    web.add_argument("--no-online-learning", action="store_true",
                     help=NO_ONLINE)
    load = command("load", cmd_load, "concurrent sessions against a running `convrec serve` (p50/p95, failures)")
    load.add_argument("--url", default="http://127.0.0.1:8000")
    load.add_argument("--clients", type=int, default=16)
    load.add_argument("--turns", type=int, default=5)
    load.add_argument("--key", help="Bearer key, if the server has keys")
    load.add_argument("--engines", help="comma-separated (transformers,vllm): start `convrec serve --engine E` for "
                                        "each in turn, put the same load on it, report turns/s and latencies")
    load.add_argument("--adapter", action="append", help="with --engines: serve this LoRA adapter (repeatable)")
    load.add_argument("--out", help="with --engines: folder for bench.json, bench.md and the servers' logs")
    load.add_argument("--engine-url", help="with --engines remote: the OpenAI-compatible server (e.g. `vllm serve`)")
    load.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                      help="with --engines: pass ARG on to each `convrec serve` (repeatable, e.g. "
                           "--serve-arg=--candidates --serve-arg=10)")
    crash = command("crashtest", cmd_crashtest, "kill -9 a loaded server, restart it, count lost turns")
    crash.add_argument("--clients", type=int, default=8)
    crash.add_argument("--turns", type=int, default=6)
    crash.add_argument("--kill-after", type=float, default=20.0, help="seconds of load before kill -9")
    evaluate = command("eval", cmd_eval, "offline evaluation on ReDial: accuracy, grounding, explanation "
                       "faithfulness, memory, beyond-accuracy, latency (results.json, report.md/.html, plots)")
    evaluate.add_argument("--dialogues", help="official ReDial or CRSLab-format JSONL "
                                              "(default <data>/redial/test_dev.jsonl)")
    evaluate.add_argument("--limit", type=int, default=0, help="first N dialogues only (default all)")
    evaluate.add_argument("--systems", default="popularity,dense,cooccurrence,hybrid,llm",
                          help="comma-separated: popularity, dense, cooccurrence, hybrid, llm, lora "
                               "(default all but lora; --adapter adds lora)")
    evaluate.add_argument("--adapter", help="PEFT LoRA adapter folder: adds the lora system")
    evaluate.add_argument("--retrieval-weight", type=float, metavar="W",
                          help="fusion weight of the retrieval order for every model (default: an adapter's "
                               "calibrated weight, else 1.0)")
    evaluate.add_argument("--explain-dialogues", type=int, default=200,
                          help="generate and score explanations for the turns of the first N dialogues (default 200)")
    evaluate.add_argument("--accuracy-only", action="store_true", help="no explanation generation (fastest)")
    evaluate.add_argument("--answerable-only", action="store_true",
                          help="with --accuracy-only: the LLM scores a turn's candidates only when an answer is "
                          "among them (re-ordering the others cannot change any accuracy number; ~4x faster on a "
                          "CPU; no LLM latency then)")
    evaluate.add_argument("--score-cache", metavar="FILE", help="keep the LLM's candidate scores in FILE and reuse "
                          "them (same accuracy, faster reruns; eval/score_cache.py)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.add_argument("--out", default="eval-out", help="folder for results.json, turns.jsonl and the report")
    tune = command("finetune", cmd_finetune, "train a LoRA adapter on the ReDial training dialogues (the prompts "
                   "of a live turn); writes the adapter, training.json and a model card")
    tune.add_argument("--config", help="JSON file of FinetuneConfig fields (finetune/config.py); flags override it")
    tune.add_argument("--out", default="finetune-out/convrec-redial-lora", help="adapter folder (checkpoints inside)")
    tune.add_argument("--calibrate", action="store_true",
                      help="only (re)choose the adapter's retrieval weight in --out on the validation dialogues")
    tune.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    tune.add_argument("--max-steps", type=int, help="optimizer steps (default 60)")
    tune.add_argument("--max-dialogues", type=int, help="first N training dialogues only (default all)")
    tune.add_argument("--batch-size", type=int, help="examples per step (default 8)")
    tune.add_argument("--learning-rate", type=float, help="AdamW learning rate (default 5e-4)")
    tune.add_argument("--rank", type=int, help="LoRA rank, 1-16 (default 8)")
    tune.add_argument("--on-miss", choices=["skip", "insert"], help="turns where retrieval misses the answer")
    tune.add_argument("--rank-loss", choices=["choices", "tokens"],
                      help="rank examples: cross-entropy over the candidates (default) or the answer's tokens")
    tune.add_argument("--seed", type=int)
    tune.add_argument("--no-progress", action="store_true", help="no progress bar")
    tune.add_argument("--add-eval", metavar="RESULTS_JSON", action="append",
                      help="only copy the numbers of a `convrec eval` results.json into the card of the adapter in "
                           "--out (repeatable: e.g. the base model's run and the adapter's)")
    from ui.commands import experiments, ranker

    experiments.add_report_arguments(command("experiments", cmd_experiments, "A/B experiments in the session store: "
                                             "list them, or report one (per-arm like rate, test, guardrails)"))
    experiments.add_simulate_arguments(command("simulate", cmd_simulate, "simulated ReDial users (training and "
                                               "validation seekers) against a running `convrec serve`"))
    ranker.add_arguments(command("ranker", cmd_ranker, "train the learned ranker (LightGBM, two stages) on the "
                                 "ReDial training dialogues; writes its folder and card"))
    for sub in (chat, ask, bench, serve, web):
        sub.add_argument("--adapter", action="append", help="LoRA adapter folder from `convrec finetune` (e.g. "
                         "finetune/adapters/convrec-redial-lora; env CONVREC_ADAPTER); repeatable: the first "
                         "answers by default, each is served by name beside the base model")
    for sub in (chat, ask, bench, serve, web, evaluate):
        sub.add_argument("--engine", choices=ENGINES, help="who runs the LLM: transformers (default; in process), "
                         "vllm (in process, continuous batching) or remote (--engine-url) (env CONVREC_ENGINE)")
        sub.add_argument("--engine-url", help="the remote engine: an OpenAI-compatible server such as `vllm serve`, "
                         "e.g. http://127.0.0.1:8001/v1 (env CONVREC_ENGINE_URL)")
    memory = command("memory", cmd_memory, "show what a session remembers")
    memory.add_argument("--session", required=True)
    forget = command("forget", cmd_forget, "delete everything stored for a session")
    forget.add_argument("--session", required=True)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def _is_users_fault(error: Exception) -> bool:
    from agent.turn import InputError
    from retrieval.catalog import CatalogError

    return isinstance(error, (UsageError, InputError, CatalogError, ValueError, FileNotFoundError))


def _describe(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text.encode("utf-8", "replace").decode("utf-8")


if __name__ == "__main__":
    sys.exit(main())
