"""Starting or joining Ray, one way for everything that runs on it (sweeps, Ray env workers).

`ray_session(address)` yields with Ray initialised and shuts down only what it started:

- no address: a *local* Ray on this machine (``address="local"``: never someone else's cluster that
  happens to run here), bound to the loopback address, without the dashboard, with usage statistics
  off (Ray would otherwise report them over the network) and a small object store (trials and env
  workers pass small arrays).
- ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``): join that existing cluster.
- Ray already initialised in this process (a test module's session, a user's own ``ray.init``): use
  it as it is.

Ray is imported on call only (``pip install 'qmix-edge[ray]'``): `qmix_edge.envs` never imports it at
import time. Numpy-free, torch-free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from collections.abc import Iterator

from .errors import EnvError

logger = logging.getLogger(__name__)

RAY_INSTALL_HINT = "pip install 'qmix-edge[ray]'"
"""What to run when Ray is missing."""

_LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
"""Object store of a local Ray: ample for trial summaries and env-worker arrays, gentle on /dev/shm."""


def import_ray() -> types.ModuleType:
    """``import ray``, or an `EnvError` naming the extra to install."""
    try:
        import ray
    except ModuleNotFoundError as e:
        raise EnvError(
            f"this needs Ray, which is not installed; install it: {RAY_INSTALL_HINT}"
        ) from e
    return ray


def start_ray(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Initialise Ray unless it already is; True when this call started or joined it.

    Args:
        address: an existing cluster to join; None starts a local Ray on this machine.
        num_cpus: CPUs a local Ray may use (default: all of this machine's); ignored when joining.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    # Usage statistics would be sent over the network; nothing here needs them.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        # Ray finds a "remotely reachable" node address (even for 127.0.0.1) unless clusters are
        # off, as on macOS: then a local Ray lives on the loopback address alone. The variable is
        # for the processes Ray starts; the constant for this one, which may have imported Ray.
        os.environ[_LOOPBACK_ONLY_ENV] = "0"
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
        kwargs: dict[str, object] = {
            "address": "local",
            "num_cpus": num_cpus,
            "include_dashboard": False,
            "_node_ip_address": "127.0.0.1",
            "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
        }
        where = "a local Ray on this machine"
    else:
        kwargs = {"address": address}
        where = f"the Ray cluster at {address}"
    try:
        ray.init(log_to_driver=False, configure_logging=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise EnvError(
            f"could not start or join {where}: {type(e).__name__}: {e}. Check --ray-address "
            "(HOST:PORT of a running cluster's head, or none for a local Ray)."
        ) from e
    logger.info("Ray: using %s (%s CPUs)", where, ray.cluster_resources().get("CPU", "?"))
    return True


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Ray initialised for the duration of the block (see the module docstring and `start_ray`)."""
    started = start_ray(address, num_cpus=num_cpus)
    try:
        yield
    finally:
        if started:
            import_ray().shutdown()
