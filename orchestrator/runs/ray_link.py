"""Which Ray cluster the driver uses and how it authenticates, settled before `import ray`.
Details: docs/orchestrator.md#orchestratorrunsray_link.
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
# One cheap unary call per address form; an empty request is a valid (empty) protobuf message.
PROBE_METHOD = {
    "gcs": "/ray.rpc.NodeInfoGcsService/GetClusterId",
    "client": "/ray.rpc.RayletDriver/ClusterInfo",
}


class ClusterError(RuntimeError):
    """The Ray cluster cannot be used (unreachable, no cluster for "auto", token missing or refused)."""


def resolve(address: str | None) -> str:
    """The address to use: the one given, else RAY_ADDRESS, else "local" (a new in-process cluster)."""
    return address or os.environ.get("RAY_ADDRESS", "").strip() or LOCAL


def token() -> str | None:
    """The token the way Ray looks for one: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def auth_probe(target: str, with_token: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the cluster at `target` ("HOST:PORT" GCS or "ray://HOST:PORT" client server) refuses a
    call (without a token, or with `with_token`): True = it wants a (different) token. A server that
    does not answer gRPC raises ClusterError."""
    import grpc  # noqa: PLC0415 - a Ray dependency, needed only for an existing cluster

    host, port = host_port(target)
    method = PROBE_METHOD["client" if "://" in target else "gcs"]
    metadata = (("authorization", f"Bearer {with_token}"),) if with_token else None
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        call = channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
        try:
            call(b"", timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as err:
            code = err.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return True
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ClusterError(
                    f"{target} accepts connections but does not answer as a Ray "
                    f"{'client server' if '://' in target else 'head (GCS)'}: {code.name}. Check the port "
                    "(`ray status --address HOST:PORT`)."
                ) from None
    return False  # answered (or refused the empty request on its merits): no token needed


def ray_env(target: str) -> dict[str, str]:
    """Environment to set before `import ray` for the concrete address `target`. A local cluster uses
    Ray's default (token auth, Ray makes the token). An existing cluster is asked (`auth_probe`): token
    mode when it wants a token (which must be configured and accepted), else auth disabled, so a token
    file left by a local run is never sent to a no-auth head. RAY_AUTH_MODE from the environment wins."""
    if os.environ.get("RAY_AUTH_MODE") or target == LOCAL:
        return {}
    if not auth_probe(target):
        return {"RAY_AUTH_MODE": "disabled"}
    secret = token()
    if secret is None:
        raise ClusterError(
            f"the Ray cluster at {target} uses token authentication and no token is set: {TOKEN_HINT}"
        )
    if auth_probe(target, secret):
        raise ClusterError(f"the Ray cluster at {target} refused the token: {TOKEN_HINT}")
    return {"RAY_AUTH_MODE": "token"}


def prepare(address: str | None) -> str:
    """Resolve `address`, check the cluster is reachable and set the auth environment for it; returns
    the concrete address for `ray.init` ("local", or what "auto" found). When ray was imported already
    (a library caller, a test process), refresh Ray's cached config the way Ray itself does.

    For an existing cluster, Ray's GCS lookup retries once a second (RAY_NUM_REDIS_GET_RETRIES, read at
    import, default 20); CONNECT_RETRIES keeps a failure within seconds (a user's value wins)."""
    target = check_reachable(address)
    if target != LOCAL:
        os.environ.setdefault("RAY_NUM_REDIS_GET_RETRIES", str(CONNECT_RETRIES))
    if not (sys.stdout.isatty() and sys.stderr.isatty()):  # worker lines echoed into a pipe or log file:
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no ANSI colour around "(pid=...)" (read per line)
    env = ray_env(target)
    if env and any(os.environ.get(k) != v for k, v in env.items()):
        os.environ.update(env)
        if "ray" in sys.modules:
            from ray._raylet import Config  # noqa: PLC0415 - only when ray is already loaded

            Config.initialize("")
    return target


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


def _origin(address: str | None, target: str) -> str:
    if address == "auto":
        return f" (found by --address auto: {target})"
    return "" if address else " (from RAY_ADDRESS)"


def check_reachable(address: str | None, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """Raise ClusterError unless the cluster `resolve(address)` names accepts a TCP connection within
    timeout_s; returns the concrete address ("local" needs no probe; "auto" → what it found)."""
    resolved = resolve(address)
    if resolved == LOCAL:
        return resolved
    target = _auto_address() if resolved == "auto" else resolved
    if target.startswith(("http://", "https://")):
        raise ClusterError(
            f"Ray address {target}{_origin(address, target)} is a dashboard (job submission) URL; a driver "
            "needs the head's HOST:6379 or ray://HOST:10001 (or submit `isosparse run` as a Ray job there)"
        )
    host, port = host_port(target)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as err:
        raise ClusterError(
            f"Ray cluster at {resolved}{_origin(address, target)} is unreachable: {host}:{port}: "
            f"{err.strerror or err}. Is the head running (`ray status --address HOST:PORT`)? Omit --address "
            "(and unset RAY_ADDRESS) to run on a local in-process cluster."
        ) from None
    return target
