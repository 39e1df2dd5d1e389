"""Real Prefect processes for the deployment tests: `prefect server start`, `serve`, a worker.

Each is a child process in its own session, stopped (the whole group) when the
fixture ends; its output goes to a log file that the error messages point at.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The modules the deployable flows may import in the tests (a run parameter may only
# narrow them): PREFECT_INTEGRATIONS_AETHER_CATALOG_MODULES of every test process.
ALLOWED_MODULES = json.dumps(
    [
        "tests.hitl_flows",
        "tests.exec_flows",
        "tests.deploy_flows",
        "tests.crash_flows",
        "tests.sample_flows",
        "tests.guarded_flows",
        "tests.adaptive_flows",
        "flows/pipeline.py",
    ]
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process whose output goes to `log`."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log = log
        self._file = log.open("wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{what}: {' '.join(self.args)} exited with {self.popen.returncode}; "
                    f"see {self.log}:\n{self.tail()}"
                )
            try:
                if ready():
                    return
            except Exception:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{what}: not ready after {timeout} s; see {self.log}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._file.close()


class PrefectServer:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME and SQLite file."""

    def __init__(self, home: Path, *, ui: bool = False, database_url: str | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.ui_url = f"http://127.0.0.1:{self.port}"
        self.storage = home / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": (
                database_url or f"sqlite+aiosqlite:///{home}/prefect.db"
            ),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "true" if ui else "false",
            # The UI calls the API where it is, not on port 4200.
            "PREFECT_UI_API_URL": self.api_url,
            "PREFECT_LOCAL_STORAGE_PATH": str(self.storage),
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "1",
            "PYTHONPATH": str(ROOT),
            "PREFECT_INTEGRATIONS_AETHER_CATALOG_MODULES": ALLOWED_MODULES,
        }
        self.processes: list[Process] = []
        self.runs: Path = home
        self.server = self._start_server()

    def _start_server(self) -> Process:
        server = self.start(
            [
                str(BIN / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            "server",
        )
        server.wait_until(self.healthy, 120, "prefect server start")
        return server

    def stop_server(self) -> None:
        """Stop the API (an outage); `start_server` brings it back on the same port and
        database."""
        self.server.stop()
        self.processes.remove(self.server)

    def start_server(self) -> None:
        self.server = self._start_server()

    def healthy(self) -> bool:
        return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200

    def start(self, args: list[str], name: str, **env: str) -> Process:
        process = Process(args, {**self.env, **env}, self.home / f"{name}.log")
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be installed or started here; the message says why."""


def _postgres_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def apt_install(package: str) -> str | None:
    """Install a Debian package (as root, with apt-get); None, or why it cannot be had."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"not root or no apt-get: cannot install Debian's {package}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", package]):
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
    return None


def _install_postgres() -> None:
    """Install Debian's postgresql package."""
    problem = apt_install("postgresql")
    if problem is not None:
        raise PostgresUnavailable(problem)


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (Debian's packages, installed if missing)."""

    def __init__(self) -> None:
        bindir = _postgres_bindir()
        if bindir is None:
            _install_postgres()
            bindir = _postgres_bindir()
        if bindir is None:
            raise PostgresUnavailable(
                "postgresql installed, but no initdb under /usr/lib/postgresql"
            )
        self.bindir = bindir
        # Under /tmp itself: the postgres user must reach it (pytest's tmp dirs are 0700).
        self.root = Path(tempfile.mkdtemp(prefix="aether-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user_prefix: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root.
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' user"
                ) from None
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self.root.chmod(0o755)
            self.user_prefix = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "aether",
            "--auth=trust",
            "-E",
            "UTF8",
        )
        log = (self.root / "postgres.log").open("wb")
        self.process = subprocess.Popen(
            [
                *self.user_prefix,
                str(bindir / "postgres"),
                "-D",
                str(self.data),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "fsync=off",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"postgresql+asyncpg://aether@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresUnavailable(
                    f"postgres exited with {self.process.returncode}: "
                    f"{(self.root / 'postgres.log').read_text(errors='replace')[-800:]}"
                )
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.3)
        self.stop()
        raise PostgresUnavailable("postgres did not accept connections within 60 s")

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self.user_prefix, *args], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed: {done.stderr.strip()[-500:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGINT is PostgreSQL's fast shutdown; the group includes runuser's child.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)
