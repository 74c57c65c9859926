"""perf/install-perf-analyzer's decision whether the system's loader can run the PyPI binary (``--glibc-ok``),
with a fake ``ldd`` first on PATH: nothing is downloaded."""

import os
import subprocess

from tests.conftest import ROOT

INSTALLER = ROOT / "perf" / "install-perf-analyzer"
RESOLVED = "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0000000000)"


def glibc_ok(tmp_path, ldd_body: str) -> bool:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "ldd").write_text("#!/usr/bin/env bash\n" + ldd_body)
    (fake / "ldd").chmod(0o755)
    binary = tmp_path / "perf_analyzer"
    binary.write_bytes(b"")
    result = subprocess.run(
        ["bash", str(INSTALLER), "--glibc-ok", str(binary)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}"),
        timeout=60,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def test_every_library_resolved_is_ok(tmp_path):
    assert glibc_ok(tmp_path, f"printf '%s\\n' '{RESOLVED}'\n")


def test_a_missing_library_or_symbol_version_is_not_ok(tmp_path):
    assert not glibc_ok(
        tmp_path, 'echo "$1: /lib/x86_64-linux-gnu/libc.so.6: version \\`GLIBC_2.38\' not found"\nexit 1\n'
    )


def test_not_found_followed_by_much_more_output_is_not_ok(tmp_path):
    # `ldd | grep -q "not found"` stops reading at the first match; ldd then dies of SIGPIPE (status 141), and
    # under pipefail a negated pipeline read that as "every library resolved"
    assert not glibc_ok(
        tmp_path, f"echo $'\\tlibstdc++.so.6: version `GLIBCXX_3.4.32\\' not found'\nyes '{RESOLVED}' | head -n 50000\n"
    )
