"""The real servers a scaled-out convrec runs on, started on loopback and stopped cleanly: PostgreSQL (Debian's
`postgresql`), Chroma's server (`chroma run`, from the chromadb wheel), `convrec serve` replicas and nginx (Debian's
`nginx`) with deploy/nginx.conf. `cluster()` brings the whole topology up; `make cluster` (deploy/cluster.py), the
failover check (eval/failover.py) and the tests use it.

Each server is a child process with its own temporary folder (data, logs), removed when it stops. PostgreSQL
refuses to run as root: as root, its folder belongs to the `postgres` user and the server runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
NGINX_CONF = Path(__file__).resolve().parent / "nginx.conf"
START_SECONDS = 60.0
"""How long PostgreSQL, Chroma's server or nginx may take to answer after starting."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, env: dict[str, str], *extra: str, log_path: Path | None = None) -> subprocess.Popen:
    """`convrec serve` as a subprocess on loopback; waits until /health says ok (raises after 300 s)."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    process = subprocess.Popen([sys.executable, "-m", "ui.cli", "serve", "--port", str(port), *extra],
                               cwd=REPO, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"convrec serve exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError("convrec serve did not become healthy in 300 s")


@dataclass
class Server:
    """A started server: its process, where to reach it, its log and the folder removed when it stops."""

    name: str
    process: subprocess.Popen
    url: str
    log: Path
    folder: Path | None = None
    stop_signal: int = signal.SIGTERM

    def stop(self, timeout: float = 30.0, keep: bool = False) -> int | None:
        """Ask it to stop, wait, then kill it; remove its folder unless `keep`. Its exit status (None: it had to be
        killed)."""
        status: int | None = None
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                status = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        else:
            status = self.process.returncode
        if self.folder is not None and not keep:
            shutil.rmtree(self.folder, ignore_errors=True)
        return status


def _wait_until(server: Server, ready: Callable[[], bool], seconds: float = START_SECONDS) -> Server:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            said = _tail(server.log)
            server.stop()
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}: {said}")
        try:
            if ready():
                return server
        except Exception:  # not answering yet  # noqa: BLE001
            pass
        time.sleep(0.2)
    said = _tail(server.log)
    server.stop()
    raise RuntimeError(f"{server.name} did not answer at {server.url} in {seconds:.0f} s: {said}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-1500:]
    except OSError:
        return "(no log)"


def _folder(prefix: str) -> Path:
    """A new folder directly in the system's temporary folder (other users, e.g. `postgres`, can reach it)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


def postgres_bin() -> Path:
    """PostgreSQL's server programs: $CONVREC_PG_BIN, else Debian's newest /usr/lib/postgresql/<version>/bin."""
    found = [os.environ["CONVREC_PG_BIN"]] if os.environ.get("CONVREC_PG_BIN") else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
    if not found or not (Path(found[-1]) / "initdb").exists():
        raise FileNotFoundError("PostgreSQL's server is not installed: `make servers` installs Debian's postgresql "
                                "(or set CONVREC_PG_BIN to the folder holding initdb and postgres)")
    return Path(found[-1])


def start_postgres(port: int | None = None, folder: Path | None = None) -> Server:
    """PostgreSQL on loopback only; connect as `convrec` (no password) to the database `postgres` at the returned
    server's url. A new cluster in a temporary folder, or the one in `folder` (a server stopped with keep=True)
    started again."""
    import psycopg

    binaries, port = postgres_bin(), port or free_port()
    as_owner: dict = {}
    if os.geteuid() == 0:  # PostgreSQL refuses root: its own user owns the folder and runs the server
        owner = pwd.getpwnam("postgres")
        as_owner = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    if folder is None:
        folder = _folder("convrec-pg-")
        if as_owner:
            os.chown(folder, as_owner["user"], as_owner["group"])
        subprocess.run([binaries / "initdb", "-D", folder / "data", "-U", "convrec", "--auth=trust",
                        "--encoding=UTF8", "--locale=C", "--no-sync"],
                       cwd=folder, check=True, capture_output=True, **as_owner)
    log = folder / "postgres.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([binaries / "postgres", "-D", folder / "data", "-p", str(port), "-k", folder,
                                    "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
                                   cwd=folder, stdout=out, stderr=subprocess.STDOUT, **as_owner)
    server = Server("PostgreSQL", process, f"postgresql://convrec@127.0.0.1:{port}/postgres", log, folder,
                    stop_signal=signal.SIGINT)  # a fast shutdown: open sessions are ended, nothing is lost
    return _wait_until(server, lambda: psycopg.connect(server.url, connect_timeout=2).close() is None)


def start_chroma(port: int | None = None) -> Server:
    """Chroma's server (`chroma run`, installed with chromadb) over a temporary folder, on loopback."""
    folder, port = _folder("convrec-chroma-"), port or free_port()
    log = folder / "chroma.log"
    with open(log, "ab") as out:
        process = subprocess.Popen([Path(sys.executable).parent / "chroma", "run", "--path", folder / "data",
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "ANONYMIZED_TELEMETRY": "False"})
    server = Server("Chroma's server", process, f"http://127.0.0.1:{port}", log, folder)
    return _wait_until(server, lambda: httpx.get(f"{server.url}/api/v2/heartbeat", timeout=2).status_code == 200)


def nginx_config(listen: int, replicas: list[str]) -> str:
    """deploy/nginx.conf with its listening port and its replicas (host:port) replaced."""
    text = NGINX_CONF.read_text()
    text = re.sub(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{listen};", text)
    servers = "".join(f"        server {r} max_fails=1 fail_timeout=10s;\n" for r in replicas)
    return re.sub(r"(        server 127\.0\.0\.1:\d+ [^\n]*\n)+", servers, text)


def nginx_bin() -> Path:
    """nginx: on the PATH or Debian's /usr/sbin/nginx."""
    executable = Path(shutil.which("nginx") or "/usr/sbin/nginx")
    if not executable.exists():
        raise FileNotFoundError("nginx is not installed: `make servers` installs Debian's nginx")
    return executable


def routed_requests(access_log: Path) -> list[tuple[str, str, str]]:
    """(path, replica host:port, session key) of each request nginx passed on, from its access log (the `routed`
    format of deploy/nginx.conf; a request nginx sent on to a second replica names both, comma-separated)."""
    rows = []
    for line in Path(access_log).read_text().splitlines():
        before, key, _ = line.split('"', 2)
        _, _, path, _, replica = before.split(" ", 4)
        rows.append((path, replica.strip(), key))
    return rows


def start_nginx(replicas: list[str], port: int | None = None) -> Server:
    """nginx (Debian's) with deploy/nginx.conf in front of `replicas` (host:port), on loopback; its access log
    (logs/access.log in its folder) names the replica that answered each request."""
    executable = nginx_bin()
    folder, port = _folder("convrec-nginx-"), port or free_port()
    (folder / "logs").mkdir()
    (folder / "tmp").mkdir()
    config = folder / "nginx.conf"
    config.write_text(nginx_config(port, replicas))  # as root, its workers run as nobody (the folder is 0755)
    log = folder / "logs" / "error.log"
    process = subprocess.Popen([executable, "-p", f"{folder}/", "-c", config, "-e", log, "-g", "daemon off;"],
                               cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server("nginx", process, f"http://127.0.0.1:{port}", log, folder, stop_signal=signal.SIGQUIT)
    return _wait_until(server, lambda: httpx.get(f"{server.url}/health", timeout=5).status_code < 500)


@dataclass
class Cluster:
    """The topology `cluster()` started: clients talk to `router`."""

    postgres: Server
    chroma: Server
    replicas: list[Server]
    router: Server

    def describe(self) -> dict:
        return {"router": self.router.url, "replicas": [{"url": r.url, "pid": r.process.pid} for r in self.replicas],
                "postgres": self.postgres.url, "chroma": self.chroma.url,
                "pids": [s.process.pid for s in (self.postgres, self.chroma, *self.replicas, self.router)],
                "router_access_log": str(self.router.folder / "logs" / "access.log"),
                "replica_logs": [str(r.log) for r in self.replicas]}


def start_replica(port: int, env: dict[str, str], serve_args: tuple[str, ...], log: Path) -> Server:
    """`convrec serve` on loopback, ready (its /health says ok)."""
    process = start_server(port, env, *serve_args, log_path=log)
    return Server(f"convrec serve :{port}", process, f"http://127.0.0.1:{port}", log)


@contextmanager
def cluster(*, replicas: int = 2, router_port: int | None = None, serve_args: tuple[str, ...] = (),
            env: dict[str, str] | None = None, logs: Path | None = None) -> Iterator[Cluster]:
    """PostgreSQL, Chroma's server (the catalog indexed into it by `convrec index --index-url`), `replicas` x
    `convrec serve --db postgresql://... --index-url ...` and nginx in front; everything stopped on the way out,
    in the reverse order. `router_port` None: any free port (replicas on free ports too); else the router there and
    the replicas on the ports after it."""
    logs = Path(logs or _folder("convrec-cluster-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        postgres = start_postgres()
        stack.callback(postgres.stop)
        chroma = start_chroma()
        stack.callback(chroma.stop)
        env = {**(env or os.environ), "CONVREC_DB": postgres.url, "CONVREC_INDEX_URL": chroma.url}
        index = subprocess.run([sys.executable, "-m", "ui.cli", "index"], cwd=REPO, env=env, capture_output=True,
                               text=True)
        if index.returncode != 0:
            raise RuntimeError(f"convrec index --index-url {chroma.url} failed: {index.stderr[-1500:]}")
        ports = ([free_port() for _ in range(replicas)] if router_port is None
                 else [router_port + 1 + k for k in range(replicas)])
        with ThreadPoolExecutor(replicas) as pool:  # the replicas load their models side by side
            starting = [pool.submit(start_replica, p, env, serve_args, logs / f"replica-{p}.log") for p in ports]
        started, failed = [], []
        for future in starting:
            try:
                started.append(future.result())
                stack.callback(started[-1].stop)
            except RuntimeError as error:
                failed.append(error)
        if failed:
            raise failed[0]
        router = start_nginx([f"127.0.0.1:{p}" for p in ports], router_port)
        stack.callback(router.stop)
        yield Cluster(postgres, chroma, started, router)
