"""The Python backend's shared-memory regions in /dev/shm, as ``make serve``'s supervisor handles them.

Each stub process passes its tensors through one POSIX shared-memory region, ``<prefix><uuid>``, that the backend
creates mode 0644 (Boost.Interprocess' default, set with fchmod after creation: a umask does not narrow it) and
removes only on a clean exit. The supervisor gives every tritonserver it starts a prefix of its own
(``--backend-config=python,shm-region-prefix-name=...``), makes that server's regions owner-only as they appear,
and removes them once the server has exited: a region left by a crash or a kill (up to the largest tensors ever in
flight, a GB) stays in /dev/shm, memory, for good. Those of a supervisor that was killed itself are removed by the
next one to start (``remove_orphans``).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

SHM_DIR = Path("/dev/shm")
BACKEND_PREFIX = "triton_python_backend_shm_region_"  # the backend's default prefix
OWNER_ONLY = 0o600
SUPERVISED = re.compile(re.escape(BACKEND_PREFIX) + r"(\d+)_\d+_")  # prefix_for's names: the supervisor's pid


def prefix_for(supervisor: int, start: int) -> str:
    """The region prefix of a supervisor's ``start``-th tritonserver: no other server's regions share it."""
    return f"{BACKEND_PREFIX}{supervisor}_{start}_"


def backend_config(prefix: str) -> str:
    """The tritonserver flag that names the Python backend's regions ``<prefix><uuid>``."""
    return f"--backend-config=python,shm-region-prefix-name={prefix}"


def regions(prefix: str, directory: Path = SHM_DIR) -> list[Path]:
    """The regions named with ``prefix``."""
    try:
        return [Path(e.path) for e in os.scandir(directory) if e.name.startswith(prefix)]
    except OSError:
        return []


def protect(prefix: str, directory: Path = SHM_DIR) -> list[Path]:
    """Make the regions named with ``prefix`` owner-only (0600); those it changed. Only regular files this
    process's user owns are changed, through a descriptor opened without following links: /dev/shm is
    world-writable, and anyone may put a link there under a region's name (to make a file of ours 0600) or a
    file of their own."""
    changed = []
    for region in regions(prefix, directory):
        try:
            fd = os.open(region, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # a link (ELOOP), or removed meanwhile
            continue
        try:
            found = os.fstat(fd)
            if (
                stat.S_ISREG(found.st_mode)
                and found.st_uid == os.geteuid()
                and stat.S_IMODE(found.st_mode) != OWNER_ONLY
            ):
                os.fchmod(fd, OWNER_ONLY)
                changed.append(region)
        finally:
            os.close(fd)
    return changed


def remove(prefix: str, directory: Path = SHM_DIR) -> list[Path]:
    """Remove the regions named with ``prefix`` (those of a server that has exited); those removed. A stub still
    mapping one keeps its memory until it exits."""
    return _unlink(regions(prefix, directory))


def remove_orphans(mapped: set[str], directory: Path = SHM_DIR) -> list[Path]:
    """Remove the regions of supervisors that are gone (killed before they could remove them) that no process maps
    (``mapped``: the paths every process maps, ``serving.processes.mapped_shm``); those removed."""
    orphans = []
    for region in regions(BACKEND_PREFIX, directory):
        match = SUPERVISED.match(region.name)
        if match and not Path(f"/proc/{match[1]}").exists() and str(region) not in mapped:
            orphans.append(region)
    return _unlink(orphans)


def _unlink(found: list[Path]) -> list[Path]:
    """Remove ``found``; those removed (one removed meanwhile is skipped)."""
    removed = []
    for region in found:
        try:
            region.unlink()
            removed.append(region)
        except OSError:
            continue
    return removed
