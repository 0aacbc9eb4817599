"""The driver's view of the Ray cluster: reaching it, how much work to keep in flight, stop signals.

Used by ``_driver.py`` (plain system tasks) and ``_lockstep.py`` (cohort admission). The
in-flight rule (docs/cluster.md, "How much runs at once"):

- embedded local Ray: ``2 x CPUs`` system tasks in flight (one running and one queued per
  CPU), as before;
- a cluster the driver joined: ``max(2 x CPUs, MIN_PENDING)``, where CPUs is what the
  cluster has *now*, re-read every ``REFRESH_S`` seconds. Ray's autoscaler scales on the
  resource demand of queued tasks, so the driver must queue more than the cluster can
  run: a head that advertises no CPUs still gets ``MIN_PENDING`` queued systems (enough
  for the autoscaler to start several workers at once), and every node that joins raises
  the limit by twice its CPUs, which is the autoscaler's own growth rate at
  ``upscaling_speed: 1``. A node that leaves lowers it again.

The driver's memory stays bounded: a queued task is a system spec and object refs, and
rows are held only for systems in flight (a finished system is written and forgotten).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from contextlib import contextmanager

import ray

__all__ = ["ClusterError", "ClusterView", "in_flight_limit", "check_address", "stop_signals", "Stopped",
           "MIN_PENDING", "REFRESH_S", "CONNECT_TIMEOUT_S"]

logger = logging.getLogger(__name__)

#: Systems kept queued on a joined cluster however few CPUs it has now (autoscaler demand).
MIN_PENDING = 64
#: Seconds between two readings of the cluster's resources.
REFRESH_S = 2.0
#: Seconds to wait for a cluster's GCS to answer before giving up.
CONNECT_TIMEOUT_S = 20.0


class ClusterError(ConnectionError):
    """The Ray cluster named by ``--address`` cannot be used (unreachable, or an unsupported kind of address)."""


class Stopped(KeyboardInterrupt):
    """The driver was asked to stop (SIGTERM or SIGHUP), handled like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name


def in_flight_limit(cluster_cpus: float, *, joined: bool, requested: int | None = None) -> int:
    """Systems to keep in flight (running or queued in Ray): the rule in this module's docstring.

    Args:
        cluster_cpus: CPUs the cluster advertises now (0 on a head-only cluster).
        joined: True for a cluster the driver joined (it may autoscale), False for the embedded Ray.
        requested: ``--max-in-flight``, which overrides the rule.
    """
    if requested is not None:
        return requested
    twice = int(2 * max(0.0, cluster_cpus))
    return max(twice, MIN_PENDING) if joined else max(1, twice)


class ClusterView:
    """The cluster's CPUs and nodes, re-read at most every ``REFRESH_S`` seconds (a GCS call each)."""

    def __init__(self, *, joined: bool, requested: int | None = None) -> None:
        self.joined, self.requested = joined, requested
        self.cpus, self.nodes = 0.0, 0
        self._read_at = -float("inf")
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> bool:
        """Read the cluster again if it is time; True when its CPUs changed."""
        now = time.monotonic()
        if not force and now - self._read_at < REFRESH_S:
            return False
        self._read_at = now
        try:
            cpus = float(ray.cluster_resources().get("CPU", 0.0))
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        except Exception:  # noqa: BLE001 - a GCS hiccup: keep the last reading
            return False
        changed = cpus != self.cpus
        if changed and not force:
            logger.info("The cluster now has %g CPUs on %d node(s): up to %d systems in flight.", cpus, nodes,
                        in_flight_limit(cpus, joined=self.joined, requested=self.requested))
        self.cpus, self.nodes = cpus, nodes
        return changed

    @property
    def limit(self) -> int:
        return in_flight_limit(self.cpus, joined=self.joined, requested=self.requested)


def _probe(host: str, port: int, deadline: float) -> str | None:
    """None when something accepts TCP connections at host:port before ``deadline``, else the last error."""
    error = "no answer"
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.5, min(5.0, deadline - time.monotonic()))):
                return None
        except OSError as exc:
            error = exc.strerror or type(exc).__name__
        if time.monotonic() >= deadline:
            return error
        time.sleep(1.0)


def _host_port(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def check_address(address: str, *, timeout_s: float | None = None) -> None:
    """Refuse an address the driver cannot use, quickly and before anything is written.

    Ray Client (``ray://``) is refused: the driver streams each system's rows with Ray
    generators, which Ray Client does not support (ray-project/ray#43357). A ``host:port``
    (or what ``auto`` resolves to) must accept connections within ``timeout_s``; without
    this check ``ray.init`` retries for minutes.

    Raises:
        ClusterError: with the reason and what to do instead.
    """
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    if address.startswith("ray://"):
        raise ClusterError(
            f"--address {address}: Ray Client addresses (ray://) are not supported, because the sweep driver streams "
            "rows with Ray generators, which Ray Client cannot carry. Run the driver on the cluster instead: "
            "`ray job submit --address http://HEAD:8265 --working-dir . -- recourse-ray run SWEEP --address auto` "
            "(docs/cluster.md)."
        )
    if address.startswith(("http://", "https://")):
        raise ClusterError(
            f"--address {address} is a job-server (dashboard) address, for `ray job submit`. The driver needs the "
            "cluster's GCS address: 'auto' on a cluster node, or HEAD:6379."
        )
    target = address
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto")
        except Exception as exc:  # noqa: BLE001 - no running cluster recorded on this machine
            raise ClusterError(f"--address auto: no running Ray cluster found on this machine ({exc}). "
                               "Start one with `ray start --head`, or name it with --address HOST:PORT.") from None
        if target is None:
            raise ClusterError("--address auto: no running Ray cluster found on this machine. "
                               "Start one with `ray start --head`, or name it with --address HOST:PORT.")
    parsed = _host_port(target)
    if parsed is None:
        raise ClusterError(f"--address must be 'auto' or HOST:PORT (the cluster's GCS, port 6379 by default). "
                           f"Got {address!r} instead.")
    error = _probe(*parsed, deadline=time.monotonic() + timeout_s)
    if error is not None:
        raise ClusterError(f"cannot reach the Ray cluster at {target} ({error}, for {timeout_s:g} s). "
                           "Check that it is running (`ray status`) and that --address names its head node.")


@contextmanager
def stop_signals():
    """Within the block, SIGTERM and SIGHUP raise ``Stopped`` (a KeyboardInterrupt), as Ctrl-C does.

    Yields a list that holds the name of the signal once one arrived.

    So ``ray job stop``, a closed terminal or a container's stop cancel the systems in
    flight, keep what is committed and shut an embedded Ray down, instead of killing the
    driver half-way. Outside the main thread (where handlers cannot be set) nothing changes.
    """
    received: list[str] = []  # the signal's name once one arrived (yielded: see below)
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        # A second signal while in-flight work is being cancelled must not cut that short.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        received.append(signal.Signals(signum).name)
        raise Stopped(signum)

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    try:
        # Ray may catch the Stopped raised inside one of its calls (ray.wait) and raise a
        # plain KeyboardInterrupt instead: the caller reads the signal's name from here.
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
