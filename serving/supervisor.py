"""Supervision of tritonserver: drains, restarts, and the upkeep of its shared memory.

Ctrl-C / SIGTERM drain it: the ensemble is unloaded first, so new requests are refused (UNAVAILABLE, which
clients retry elsewhere) while every request in flight finishes through the composing models, then tritonserver
stops (its own shutdown stops every model at once and would fail ensemble requests between two steps). Whenever
tritonserver ends without being asked to (a crash, a signal, any exit status) a new one is started at once, with
a bounded back-off when that keeps happening soon after starting. When a Python-backend stub process dies
(killed, out of memory), which this Triton build neither reports nor repairs (its health endpoints stay green
while every request to that model fails), tritonserver is killed and restarted; so it is when the ensemble
answers no question for PROBE_FAILURES probes in a row (a stub or tritonserver stuck:
``serving.admin.answering``). SIGHUP (a closing terminal) and SIGQUIT drain and stop as SIGTERM does. It is
restarted, drained, when a stub's memory stays above ``--max-stub-memory-mb``, or its own above
``--max-server-memory-mb``: Triton 2.51's gRPC frontend never frees a call whose client went away while the
response was being written (a ModelStreamInfer or ModelInfer whose responses are never read, then dropped), and
its shutdown then waits out the exit timeout; the restart bounds what such calls can hold. The Python backend's
shared-memory regions are made owner-only as they appear and removed once their server has ended
(``serving.shm``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from client.names import ENSEMBLE
from serving import shm
from serving.admin import AdminClient, answering
from serving.processes import mapped_shm, memory_mb, processes, running, stub_pids
from serving.stub_env import EXIT_TIMEOUT_S

# tritonserver's private memory above which the supervisor restarts it (see Supervisor); 0 turns it off
MAX_SERVER_MEMORY_MB = 2048
# how often the supervisor asks the ensemble a question (Supervisor, Prober); 0 turns it off
PROBE_S = 5.0
# a Python-backend stub's: the model step's holds the model (the base model in fp32: ~1 GB), the tokenizer's its
# context cache (context_cache_bytes); far above both, so that only a leak or a runaway request reaches it
MAX_STUB_MEMORY_MB = 4096


PR_SET_PDEATHSIG = 1
# Kills the process group given as $1 (tritonserver and its stubs) when it receives SIGTERM (POSIX sh: dash's
# kill takes no "--").
GUARD_SCRIPT = 'trap "kill -KILL -$1" TERM; while :; do sleep 3600 & wait $!; done'


def _in_group(group: int, death_signal: int):
    """What a child runs before its program: join process ``group`` (0: a new one of its own) and receive
    ``death_signal`` when the supervisor dies (Linux's parent-death signal)."""

    def prepare() -> None:
        os.setpgid(0, group)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, death_signal)

    return prepare


class Supervisor:
    """Runs tritonserver and keeps it serving until asked to stop: drains and stops it on SIGINT/SIGTERM, and
    starts it again whenever it ends without being asked to (a crash, a signal, any exit status), at once, with
    a bounded back-off when it keeps ending soon after starting (BACKOFF_S). It kills and restarts it when one of
    its stub processes dies or the ensemble answers no question for PROBE_FAILURES probes in a row, ``probe_s`` apart
    (``serving.admin.answering``: a stub or the server stuck), and restarts it, drained first so no ensemble
    request is lost, when its private memory stays above ``max_memory_mb`` or a stub's above
    ``max_stub_memory_mb`` for MEMORY_GRACE_S (a leak: calls Triton 2.51 never frees; a burst of large requests
    passes within seconds). The exit watch runs from the start; the stubs and the answers are watched from the
    first readiness (loading starts short-lived ones). Each server's shared-memory regions are made owner-only as
    they appear and removed once it has exited (``serving.shm``). Only a first server that ends before it was
    ever ready (a setup error: a port taken, a model that fails to load) ends the supervisor, with its status."""

    TICK_S = 0.05  # exit, stubs and new shared-memory regions
    POLL_S = 0.5  # memory
    RESTART_GRACE_S = 5.0
    MEMORY_GRACE_S = 10.0
    STABLE_S = 60.0  # a server that ran less before ending counts towards the back-off
    BACKOFF_S = (0.0, 1.0, 2.0, 4.0, 8.0, 10.0)  # before the 1st, 2nd, ... restart of servers that ran < STABLE_S
    PROBE_TIMEOUT_S, PROBE_FAILURES = 4.0, 3  # 3 questions in a row unanswered within 4 s each: stuck
    STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        http_url: str,
        admin: tuple[str, str],
        max_memory_mb: float = 0,
        max_stub_memory_mb: float = 0,
        api_key: tuple[str, str] | None = None,
        probe_s: float = PROBE_S,
    ):
        self.command, self.env, self.max_memory_mb = command, env, max_memory_mb
        self.probe_s = probe_s
        self.max_stub_memory_mb, self.http_url, self.api_key = max_stub_memory_mb, http_url, api_key
        self.server = AdminClient(http_url, admin, timeout_s=2.0)
        self.stopping: int | None = None  # the signal asked to stop with
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.served = False  # whether a server it started has been ready

    def _on_signal(self, signum, _frame) -> None:
        # make passes a terminal's Ctrl-C or a SIGTERM on to this process as well: one drain serves them all
        self.stopping = self.stopping or signum

    def _drain_and_stop(self) -> None:
        """Unload the ensemble (new requests are refused, those in flight finish), wait until it is unloaded or
        the exit timeout passes, then stop tritonserver (SIGINT as asked, else SIGTERM: tritonserver knows no
        SIGHUP or SIGQUIT)."""
        assert self.process is not None
        self._drain()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT if self.stopping == signal.SIGINT else signal.SIGTERM)

    def _drain(self) -> None:
        """Unload the ensemble and wait until it is unloaded (every request in it finished), or the exit timeout
        passes."""
        assert self.process is not None
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        try:
            self.server.unload(ENSEMBLE)
            while time.monotonic() < deadline and self.process.poll() is None:
                if self.server.model_states().get(ENSEMBLE) != "UNLOADING":
                    break
                time.sleep(0.05)
        except (OSError, ValueError) as error:  # not serving yet, or gone: just stop it
            log(f"draining skipped ({error})")

    def _over_memory(self, since: float | None, stubs: set[int]) -> float | None:
        """When tritonserver's private memory or a stub's went above its limit (and has stayed there), else
        None."""
        assert self.process is not None
        if not self._memory_excess(stubs):
            return None
        return since if since is not None else time.monotonic()

    def _memory_excess(self, stubs: set[int]) -> str | None:
        """Which process holds more private memory than its limit, and how much, or None."""
        assert self.process is not None
        if self.max_memory_mb and (held := memory_mb(self.process.pid)) > self.max_memory_mb:
            limit = f"limit {self.max_memory_mb:.0f} MB, --max-server-memory-mb"
            return f"tritonserver holds {held:.0f} MB of private memory ({limit})"
        for stub in stubs if self.max_stub_memory_mb else ():
            if (held := memory_mb(stub)) > self.max_stub_memory_mb:
                return (
                    f"Python-backend stub {stub} holds {held:.0f} MB of private memory "
                    f"(limit {self.max_stub_memory_mb:.0f} MB, --max-stub-memory-mb)"
                )
        return None

    def _restart_stop(self) -> None:
        """Stop tritonserver for a restart: gracefully, but after RESTART_GRACE_S it is killed (calls Triton
        leaked keep it from exiting; the guard then takes the stubs it leaves)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=self.RESTART_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when asked to stop."""
        deadline = time.monotonic() + seconds
        while self.stopping is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _start(self, workdir: Path | None, prefix: str) -> subprocess.Popen:
        """Start tritonserver (its Python backend's regions named with ``prefix``) and its guard; the guard.

        tritonserver gets a process group of its own: a terminal's Ctrl-C, or a signal to the supervisor's group,
        reaches only the supervisor, which drains first. The guard in that group kills all of it, stubs included,
        should the supervisor die without stopping it."""
        self.process = subprocess.Popen(
            [*self.command, shm.backend_config(prefix)],
            env=self.env,
            cwd=workdir,
            preexec_fn=_in_group(0, signal.SIGKILL),
        )
        return subprocess.Popen(
            ["sh", "-c", GUARD_SCRIPT, "guard", str(self.process.pid)],
            preexec_fn=_in_group(self.process.pid, signal.SIGTERM),
        )

    def _serve_once(self, workdir: Path | None) -> tuple[int, bool]:
        """Start one tritonserver and watch it until it has ended: its exit status, and whether to start another.
        Its stubs are killed with it and its shared-memory regions removed."""
        self.starts += 1
        prefix = shm.prefix_for(os.getpid(), self.starts)
        guard = self._start(workdir, prefix)
        try:
            restart = self._watch(prefix)
        finally:
            status = self.process.wait()
            guard.terminate()  # takes down any stub tritonserver left behind
            guard.wait()
            shm.remove(prefix)
        return status, restart

    def _watch(self, prefix: str) -> bool:
        """Watch the running tritonserver every TICK_S until it ends or must: whether to start another (False:
        asked to stop, it has been told to)."""
        assert self.process is not None
        stubs: set[int] | None = None  # armed once the server is ready (loading starts short-lived stubs)
        prober: Prober | None = None
        over_memory: float | None = None  # since when a process's memory is above its limit
        next_poll = time.monotonic()
        try:
            while True:
                shm.protect(prefix)
                if self.stopping is not None:
                    self._drain_and_stop()
                    return False
                status = self.process.poll()
                if status is not None:
                    log(f"tritonserver ended ({exit_reason(status)}); restarting tritonserver")
                    return True
                if stubs is None:
                    stubs = stub_pids(self.process.pid) if self.server.ready() else None
                    self.served = self.served or stubs is not None
                    if stubs is not None:
                        log(f"watching tritonserver {self.process.pid} and its {len(stubs)} Python-backend stubs")
                    if stubs is not None and self.probe_s:
                        prober = Prober(self.http_url, self.probe_s, self.PROBE_TIMEOUT_S, self.api_key)
                elif dead := stubs - running(stubs):
                    log(f"Python-backend stub process(es) {sorted(dead)} died; killing and restarting tritonserver")
                    self.process.kill()  # a model whose stub is dead never finishes unloading
                    return True
                elif prober is not None and prober.failures >= self.PROBE_FAILURES:
                    log(
                        f"{ENSEMBLE} answered no question {prober.failures} times in a row, {self.probe_s:g} s apart "
                        f"(last: {prober.last}); killing and restarting tritonserver"
                    )
                    self.process.kill()  # a stuck server or stub drains nothing
                    return True
                elif time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + self.POLL_S
                    over_memory = self._over_memory(over_memory, stubs)
                    if over_memory is not None and time.monotonic() - over_memory >= self.MEMORY_GRACE_S:
                        log(f"{self._memory_excess(stubs)}; restarting tritonserver")
                        self._drain()  # the ensemble's requests finish; calls Triton leaked keep it from exiting,
                        self._restart_stop()  # so it is killed after RESTART_GRACE_S
                        return True
                time.sleep(self.TICK_S)
        finally:
            if prober is not None:
                prober.stop()

    def _backoff_s(self, quick: int) -> float:
        """The wait before the next start after ``quick`` servers in a row ended within STABLE_S."""
        return self.BACKOFF_S[min(quick, len(self.BACKOFF_S)) - 1] if quick else 0.0

    def run(self, workdir: Path | None = None) -> int:
        """Serve (tritonserver in ``workdir``) until asked to stop; tritonserver's exit status."""
        for stop_signal in self.STOP_SIGNALS:
            signal.signal(stop_signal, self._on_signal)
        if orphans := shm.remove_orphans(mapped_shm({p.pid for p in processes()})):
            log(f"removed {len(orphans)} shared-memory region(s) of supervisors that were killed")
        quick = 0  # servers in a row that ended within STABLE_S of starting
        while True:
            started = time.monotonic()
            status, restart = self._serve_once(workdir)
            if not restart or self.stopping is not None:
                return status
            if not self.served:
                log("tritonserver ended before it was ever ready; not restarting it (see its log above)")
                return status
            quick = quick + 1 if time.monotonic() - started < self.STABLE_S else 0
            if delay := self._backoff_s(quick):
                log(
                    f"{quick} tritonserver starts in a row ended within {self.STABLE_S:.0f} s (a crash loop?); "
                    f"the next one in {delay:.0f} s"
                )
                self._sleep(delay)
                if self.stopping is not None:
                    return status


class Prober:
    """Asks the ensemble a question every ``interval_s`` on a thread of its own (``serving.admin.answering``),
    so that a stuck server never holds up the supervisor's watch: ``failures`` counts the probes in a row that
    got no answer, ``last`` says why the last one failed."""

    def __init__(self, http_url: str, interval_s: float, timeout_s: float, api_key: tuple[str, str] | None):
        self.http_url, self.interval_s, self.timeout_s, self.api_key = http_url, interval_s, timeout_s, api_key
        self.failures, self.last = 0, ""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="answer-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            why = answering(self.http_url, self.timeout_s, self.api_key)
            self.failures, self.last = (self.failures + 1, why) if why else (0, "")

    def stop(self) -> None:
        self._stopped.set()


def exit_reason(status: int) -> str:
    """A Popen return code in words."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def log(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)
