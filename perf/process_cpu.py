"""CPU time of a local Triton server's processes: tritonserver itself and each Python-backend stub (one per model
instance), read from ``/proc`` (Linux). ``make perf`` divides what each spent during a run by the requests the
server answered in it.

The server is the process listening on the gRPC port given; its stubs are its children, named by the instance
Triton gave them (``tokenizer_0_0``: model ``tokenizer``, instance 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STUB = "triton_python_backend_stub"
LISTEN = "0A"  # TCP state in /proc/net/tcp


@dataclass(frozen=True)
class Process:
    pid: int
    name: str  # "tritonserver", or the stub's model instance ("tokenizer_0_0")

    @property
    def model(self) -> str:
        """The model the process runs (the stub's instance name without its group and index)."""
        return self.name.rsplit("_", 2)[0] if self.name != "tritonserver" else self.name


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (its threads included), or 0 once it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime (fields 14 and 15 of stat)


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def server_pid(port: int) -> int | None:
    """The process listening on ``port`` here, if this machine's ``/proc`` shows one."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def server_processes(port: int) -> list[Process]:
    """tritonserver listening on ``port`` and its Python-backend stubs; empty when it does not run here."""
    pid = server_pid(port)
    if pid is None:
        return []
    processes = [Process(pid, "tritonserver")]
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and argv and argv[0].endswith(STUB.encode()) and len(argv) > 8:
            processes.append(Process(int(entry.name), argv[8].decode()))
    return sorted(processes, key=lambda p: (p.name != "tritonserver", p.name))


def snapshot(processes: list[Process]) -> dict[str, float]:
    return {p.name: cpu_seconds(p.pid) for p in processes}


def per_request_us(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU microseconds per answered request of each process between two snapshots."""
    return {name: round((after[name] - before[name]) / max(requests, 1) * 1e6, 1) for name in after if name in before}
