"""The server's processes as Linux shows them in /proc: tritonserver, the Python-backend stubs it starts, and
their memory. For the supervisor, the liveness check, the soak and the tests; one place that reads /proc."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STUB = b"triton_python_backend_stub"


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    argv: tuple[bytes, ...]

    @property
    def is_tritonserver(self) -> bool:
        return bool(self.argv) and self.argv[0].endswith(b"tritonserver")


def processes() -> Iterator[Process]:
    """Every process this one can see (those that end while being read are skipped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = tuple((entry / "cmdline").read_bytes().split(b"\0"))
        except (OSError, ValueError, IndexError):
            continue
        yield Process(int(entry.name), ppid, argv)


def tritonserver_pids(grpc_port: int | None = None) -> set[int]:
    """The tritonserver processes (serving ``grpc_port``, when given)."""
    flag = f"--grpc-port={grpc_port}".encode()
    return {p.pid for p in processes() if p.is_tritonserver and (grpc_port is None or flag in p.argv)}


def stub_pids(parent: int, model: str | None = None) -> set[int]:
    """The Python-backend stub processes tritonserver ``parent`` started (of ``model``'s instances, when given:
    a stub's arguments name its instance, ``<model>_<group>_<index>``)."""
    return {
        p.pid
        for p in processes()
        if p.ppid == parent
        and any(STUB in a for a in p.argv[:1])
        and (model is None or any(a.startswith(f"{model}_".encode()) for a in p.argv[1:]))
    }


def memory_mb(pid: int, field: str = "RssAnon") -> float:
    """A field of /proc/<pid>/status in MB, 0 for a process that is gone. ``RssAnon``: resident private memory
    (the heap, without shared memory such as the Python backend's tensor regions, or mapped files);
    ``VmRSS``: all resident memory."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def family(pids: set[int]) -> set[int]:
    """``pids`` and their children."""
    return set(pids) | {p.pid for p in processes() if p.ppid in pids}


def running(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running: not gone, not a zombie (a dead child its parent has not reaped yet).
    Reads only their own /proc entries: cheap enough to ask every few tens of milliseconds."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            alive.add(pid)
    return alive


def mapped_shm(pids: set[int]) -> set[str]:
    """The /dev/shm files ``pids`` map (the Python backend's shared-memory regions, for a stub)."""
    regions = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            path = line.split(maxsplit=5)[5:]
            if path and path[0].startswith("/dev/shm/"):
                regions.add(path[0].removesuffix(" (deleted)"))
    return regions
