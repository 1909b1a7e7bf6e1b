"""Which Ray cluster the driver uses and how it authenticates, settled before `import ray`.

Ray reads RAY_AUTH_MODE when it is imported, so `prepare(address)` must run before the first
`import ray` (orchestrator.scheduling imports it); `api` calls it first. The default address is "local":
always a new in-process cluster, never whatever /tmp/ray/ray_current_cluster or RAY_ADDRESS names (a
stale file there made default runs retry a dead GCS for minutes); "auto" attaches to that cluster on
purpose. An existing cluster is probed over TCP before `ray.init` so an unreachable one fails in seconds
(ClusterError, exit 2), before anything is recorded. This module imports no ray.
"""

import os
import socket
import sys
import tempfile
from pathlib import Path

LOCAL = "local"
PROBE_TIMEOUT_S = 5.0
CONNECT_RETRIES = 6  # seconds of Ray's GCS lookup retries, see prepare()
TOKEN_HINT = "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or write ~/.ray/auth_token) to the cluster's token"


class ClusterError(RuntimeError):
    """The Ray cluster cannot be used (unreachable, no cluster for "auto", token refused)."""


def resolve(address: str | None) -> str:
    """The address to pass to ray.init: "local" unless one was given."""
    return address or LOCAL


def has_token() -> bool:
    """A token is configured the ways Ray looks for one: RAY_AUTH_TOKEN[_PATH] or ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").is_file()


def ray_env(address: str | None) -> dict[str, str]:
    """Environment to set before `import ray`. A local cluster uses Ray's default (token auth, Ray makes
    the token); RAY_AUTH_MODE from the environment (tests: "disabled") wins. An existing cluster is
    reached in token mode when a token is configured (`has_token`) and RAY_AUTH_MODE is unset: Ray itself
    never turns token mode on for an explicit address."""
    if os.environ.get("RAY_AUTH_MODE") or resolve(address) == LOCAL:
        return {}
    return {"RAY_AUTH_MODE": "token"} if has_token() else {}


def prepare(address: str | None) -> None:
    """Set the auth environment for `address`. When ray was imported already (a library caller, a test
    process), refresh Ray's cached config the way Ray itself does when it enables token mode.

    For an existing cluster, Ray's GCS lookup retries once a second (RAY_NUM_REDIS_GET_RETRIES, read at
    import, default 20): a host that accepts TCP but is no Ray head would hold `run` for 20 s. A running
    head answers at once, so CONNECT_RETRIES keeps the failure within ~15 s (a user's value wins)."""
    if resolve(address) != LOCAL:
        os.environ.setdefault("RAY_NUM_REDIS_GET_RETRIES", str(CONNECT_RETRIES))
    if not (sys.stdout.isatty() and sys.stderr.isatty()):  # worker lines echoed into a pipe or log file:
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no ANSI colour around "(pid=...)" (read per line)
    env = ray_env(address)
    if not env:
        return
    os.environ.update(env)
    if "ray" in sys.modules:
        from ray._raylet import Config  # noqa: PLC0415 - only when ray is already loaded

        Config.initialize("")


def _auto_address() -> str:
    """What Ray's "auto" attaches to: RAY_ADDRESS, else the address in <ray temp dir>/ray_current_cluster."""
    env = os.environ.get("RAY_ADDRESS")
    if env and env not in ("auto", LOCAL):
        return env
    temp = Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    try:
        found = temp.read_text().strip()
    except OSError:
        found = ""
    if not found:
        raise ClusterError(
            "--address auto: no running Ray cluster on this machine (no RAY_ADDRESS, no "
            f"{temp}); start one with `ray start --head` or omit --address for a local in-process cluster"
        )
    return found


def host_port(address: str) -> tuple[str, int]:
    """(host, port) of "host:port" or "ray://host:port" (the Ray client's default port is 10001)."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep:
        return rest, 10001 if "://" in address else 6379
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ClusterError(f"--address {address!r}: the port {port!r} is not a number") from None


def check_reachable(address: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Raise ClusterError unless the cluster at `address` accepts a TCP connection within timeout_s;
    returns the concrete address probed ("local" needs no probe)."""
    address = resolve(address)
    if address == LOCAL:
        return address
    target = _auto_address() if address == "auto" else address
    host, port = host_port(target)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        origin = f" (found by --address auto: {target})" if address == "auto" else ""
        raise ClusterError(
            f"Ray cluster at {address}{origin} is unreachable: {host}:{port}: {err.strerror or err}. "
            "Is the head running (`ray status --address HOST:PORT`)? Omit --address to run on a local "
            "in-process cluster."
        ) from None
    return target
