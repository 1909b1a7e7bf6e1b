"""Real Ray heads for the cluster tests: `ray start --head --block` on free ports under a short temp dir,
with or without token auth, stopped by the PID of that process (never `ray stop`, which would stop every
Ray cluster on the machine)."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAD_TOKEN = "isosparse-head-token-0123456789abcdef"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any RAY_* variable, with its own HOME (never the real
    ~/.ray/auth_token, which other runs on the machine share) and this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update({"HOME": str(home), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra})
    return env


@dataclass
class Head:
    gcs: str  # HOST:PORT
    client: str  # ray://HOST:PORT
    dashboard: str | None  # http://HOST:PORT when started with one
    home: Path  # the head's HOME (its ISOSPARSE_HOME is home / "iso")


@contextlib.contextmanager
def ray_head(home: Path, *, auth: bool, dashboard: bool = False) -> Iterator[Head]:
    """A Ray head on free ports: token auth (HEAD_TOKEN) or none, optionally with the dashboard (the job
    submission server). Drivers it runs (Ray jobs) see HOME=home, this checkout and the venv's bin."""
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    gcs, client, agent, agent_grpc, runtime_env, metrics, dash = free_ports(7)
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths live under it
    extra = (
        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": HEAD_TOKEN} if auth else {"RAY_AUTH_MODE": "disabled"}
    )
    env = clean_env(home, ISOSPARSE_HOME=str(home / "iso"), **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [ray_bin, "start", "--head", "--block", "--port", str(gcs), "--node-ip-address", "127.0.0.1",
           "--num-cpus", "1", "--disable-usage-stats", "--temp-dir", temp,
           "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
           "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
           "--metrics-export-port", str(metrics)]  # fmt: skip
    cmd += (
        ["--include-dashboard", "true", "--dashboard-port", str(dash)]
        if dashboard
        else ["--include-dashboard", "false"]
    )
    proc = subprocess.Popen(cmd, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        for port in [gcs] + ([dash] if dashboard else []):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("ray start --head did not come up") from None
                    time.sleep(0.5)
        yield Head(f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}",
                   f"http://127.0.0.1:{dash}" if dashboard else None, home)  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)  # --block: the head stops every process it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def noauth_head(tmp_path_factory) -> Iterator[Head]:
    """A plain `ray start --head` (no token auth), with the dashboard for Ray job submission."""
    with ray_head(tmp_path_factory.mktemp("noauth-head"), auth=False, dashboard=True) as head:
        yield head


@pytest.fixture(scope="module")
def token_head(tmp_path_factory) -> Iterator[Head]:
    """A head with token authentication (token HEAD_TOKEN)."""
    with ray_head(tmp_path_factory.mktemp("token-head"), auth=True) as head:
        yield head
