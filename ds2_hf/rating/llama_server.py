"""Start a local llama.cpp server (``llama-cpp-python[server]``) for a GGUF model, on a free port.

    >>> from ds2_hf.assets import smollm2_gguf
    >>> with LlamaCppServer(smollm2_gguf(), alias="smollm2-135m") as server:
    ...     rated = ds.map(ds2_hf.rate(model=server.alias, base_url=server.base_url), batched=True)

It is the offline rater of the demo and the tests. Install the server with ``make serve`` (it builds
llama-cpp-python without native CPU tuning, which crashes on some CPUs). llama.cpp uses
``n_threads`` cores; on a shared machine keep it at 1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["LlamaCppServer", "free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaCppServer:
    """A ``python -m llama_cpp.server`` subprocess serving one GGUF file on 127.0.0.1."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        alias: str = "local-model",
        port: int | None = None,
        n_ctx: int = 2048,
        n_threads: int = 1,
        startup_timeout: float = 120.0,
        extra_args: list[str] | None = None,
        log_path: str | os.PathLike | None = None,
    ):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"GGUF model not found: {self.model_path}")
        self.alias = alias
        self.port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args or [])
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible root, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self) -> "LlamaCppServer":
        try:
            import llama_cpp.server  # noqa: F401  (checked here for a clear message, run in a subprocess)
        except ImportError as err:
            raise RuntimeError(
                "llama-cpp-python[server] is not installed. Run `make serve` (builds it without native CPU "
                "tuning) or `pip install 'llama-cpp-python[server]'`."
            ) from err
        if self.port is None:
            self.port = free_port()
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            *self.extra_args,
        ]  # fmt: skip
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(self.n_threads))
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"llama.cpp server exited with code {self.process.returncode} while starting; its log "
                    f"({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"llama.cpp server not ready after {self.startup_timeout:.0f}s; log: {self.log_path}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> "LlamaCppServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
