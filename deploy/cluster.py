"""`make cluster`: convrec scaled out on loopback, from Debian's packages and the installed Python packages, until
Ctrl-C (or SIGTERM), then every server stopped in the reverse order.

    python -m deploy.cluster --replicas 2 --router-port 8100 --serve-arg=--adapter=finetune/adapters/convrec-redial-lora

    PostgreSQL  <- sessions of every replica (--db postgresql://...)
    Chroma      <- the catalog's index, built once by `convrec index --index-url` (--index-url http://...)
    replicas    <- `convrec serve` x N, on the ports after the router's
    nginx       <- http://127.0.0.1:<router-port>, routing by session (deploy/nginx.conf)

`--state FILE` writes where everything is (router, replicas with their pids, PostgreSQL, Chroma, logs) as JSON once
the cluster answers, and removes it when the cluster has stopped.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from deploy.servers import cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=2, help="`convrec serve` replicas (default 2)")
    parser.add_argument("--router-port", type=int, default=8100,
                        help="nginx's port; the replicas take the next ones (0: free ports for all)")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="passed to each `convrec serve` (repeatable), e.g. --serve-arg=--adapter=DIR")
    parser.add_argument("--state", type=Path, help="write the cluster's addresses and pids here (JSON) once it is up")
    parser.add_argument("--logs", type=Path, help="folder for the replicas' logs (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    for stop in (signal.SIGINT, signal.SIGTERM):  # both stop it cleanly, even where a shell started it ignoring ^C
        signal.signal(stop, signal.default_int_handler)
    try:
        with cluster(replicas=args.replicas, router_port=args.router_port or None,
                     serve_args=tuple(args.serve_arg), logs=args.logs) as running:
            described = running.describe()
            if args.state:
                args.state.with_suffix(".tmp").write_text(json.dumps(described, indent=2))
                args.state.with_suffix(".tmp").replace(args.state)
            print(f"convrec cluster up: {described['router']} -> "
                  f"{', '.join(r['url'] for r in described['replicas'])}; sessions in PostgreSQL "
                  f"({described['postgres']}), index on {described['chroma']}; replicas' logs in "
                  f"{Path(described['replica_logs'][0]).parent}. Ctrl-C stops it.", flush=True)
            signal.pause()
    except KeyboardInterrupt:
        print("convrec cluster: stopping", file=sys.stderr, flush=True)
    except (RuntimeError, OSError) as error:  # a server that would not start (or is not installed): said, all stopped
        print(f"convrec cluster: error: {error}", file=sys.stderr)
        return 1
    finally:
        if args.state:
            args.state.unlink(missing_ok=True)
    print("convrec cluster: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
