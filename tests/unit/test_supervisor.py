"""make serve's supervisor without a server: the printed command lines' keys, the Python backend's shared-memory
regions (owner-only, removed after their server), the back-off of a crash loop, the processes it watches, and the
default client retries that ride through its restarts."""

import os
import stat
import subprocess
import sys

import pytest

from client import ChannelSettings, RetryPolicy
from serving import shm
from serving.keys import REDACTED, redacted
from serving.processes import running
from serving.supervisor import Supervisor, exit_reason


def test_printed_command_lines_show_no_key_values():
    command = [
        "tritonserver",
        "--grpc-restricted-protocol=shared-memory,statistics:x-admin-key=s3cret",
        "--http-restricted-api",
        "inference:x-api-key=a=b",
        "--api-key=x-api-key=k3y",
        "--admin-key",
        "x-admin-key=adm1n",
        "--grpc-port=8001",
    ]
    shown = " ".join(redacted(command))
    assert not any(secret in shown for secret in ("s3cret", "a=b", "k3y", "adm1n"))
    assert f"--grpc-restricted-protocol=shared-memory,statistics:x-admin-key={REDACTED}" in shown
    assert f"--http-restricted-api inference:x-api-key={REDACTED}" in shown
    assert f"--api-key=x-api-key={REDACTED} --admin-key x-admin-key={REDACTED} --grpc-port=8001" in shown


def test_regions_of_one_server_are_made_owner_only_then_removed_and_no_others(tmp_path):
    prefix, other = shm.prefix_for(100, 1), shm.prefix_for(100, 2)
    assert not other.startswith(prefix) and prefix.startswith(shm.BACKEND_PREFIX)
    for name in (f"{prefix}a", f"{prefix}b", f"{other}c", f"{shm.BACKEND_PREFIX}d"):
        (tmp_path / name).write_bytes(b"x")
        (tmp_path / name).chmod(0o644)
    assert sorted(p.name for p in shm.protect(prefix, tmp_path)) == [f"{prefix}a", f"{prefix}b"]
    assert shm.protect(prefix, tmp_path) == []  # once
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {f"{prefix}a": 0o600, f"{prefix}b": 0o600, f"{other}c": 0o644, f"{shm.BACKEND_PREFIX}d": 0o644}
    assert len(shm.remove(prefix, tmp_path)) == 2
    assert {p.name for p in tmp_path.iterdir()} == {f"{shm.BACKEND_PREFIX}d", f"{other}c"}
    assert shm.backend_config(prefix) == f"--backend-config=python,shm-region-prefix-name={prefix}"


def test_protecting_regions_never_follows_a_link_nor_touches_what_is_not_our_file(tmp_path):
    """/dev/shm is anyone's: a link named like a region (to make another file 0600), a FIFO, a file of another
    user are left as they are."""
    prefix = shm.prefix_for(100, 1)
    victim = tmp_path / "root-owned-config"
    victim.write_text("x")
    victim.chmod(0o644)
    (tmp_path / f"{prefix}link").symlink_to(victim)
    os.mkfifo(tmp_path / f"{prefix}fifo", 0o644)
    theirs = tmp_path / f"{prefix}theirs"
    theirs.write_bytes(b"x")
    theirs.chmod(0o644)
    if os.geteuid() != 0:
        pytest.skip("making a file another user's needs root")
    os.chown(theirs, 1, -1)
    ours = tmp_path / f"{prefix}ours"
    ours.write_bytes(b"x")
    ours.chmod(0o644)
    assert shm.protect(prefix, tmp_path) == [ours]
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / f"{prefix}fifo").st_mode) == 0o644


def test_the_back_off_of_a_crash_loop_is_bounded_and_the_first_restart_immediate():
    supervisor = Supervisor(["true"], {}, "http://127.0.0.1:9", ("x-admin-key", "k"))
    waits = [supervisor._backoff_s(quick) for quick in range(12)]
    assert waits[:3] == [0.0, 0.0, 1.0]  # a server that ran STABLE_S or more, the first quick restart, the next
    assert waits == sorted(waits) and max(waits) == waits[-1] == Supervisor.BACKOFF_S[-1] <= 10.0


def test_running_tells_a_zombie_and_a_gone_process_from_a_live_one():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    zombie = subprocess.Popen(["true"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
        assert running({os.getpid(), child.pid, zombie.pid}) == {os.getpid(), child.pid}
    finally:
        child.kill()
        child.wait()
        zombie.wait()
    assert running({child.pid, zombie.pid}) == set()


def test_exit_reasons_in_words():
    assert exit_reason(-11) == "killed by SIGSEGV" and exit_reason(3) == "exit status 3"


def test_default_retries_outlast_a_restart_and_reconnect_within_a_second():
    """A restart of make serve's tritonserver takes 2-4 s (tiny model, 2 cores; docs/architecture.md, "Limits and
    failures"): the default policy's expected waits add up to well over that, each at most 1 s."""
    policy = RetryPolicy()
    expected_s = sum(min(policy.max_backoff_s, policy.backoff_s * 2**retry) / 2 for retry in range(policy.attempts - 1))
    assert expected_s > 10.0 and policy.max_backoff_s <= 1.0
    args = dict(ChannelSettings().channel_args())
    assert args["grpc.max_reconnect_backoff_ms"] <= 1000 and args["grpc.initial_reconnect_backoff_ms"] <= 100


def test_regions_of_supervisors_that_are_gone_are_removed_unless_mapped(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    names = [
        shm.prefix_for(gone.pid, 1) + "a",  # a killed supervisor's: removed
        shm.prefix_for(gone.pid, 2) + "b",  # same, still mapped by some process: kept
        shm.prefix_for(os.getpid(), 1) + "c",  # a live supervisor's: kept
        shm.BACKEND_PREFIX + "d",  # not a supervisor's (the backend's own naming): kept
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    removed = shm.remove_orphans({str(tmp_path / names[1])}, tmp_path)
    assert [p.name for p in removed] == names[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
