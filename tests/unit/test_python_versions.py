"""Serving on any CPython 3.10 to 3.13: finding the interpreter (serving/find-python), and the shared libpython
the Python-backend stub links (serving.stub_env), with the install hint for the distribution it runs on."""

import subprocess
import sys
import sysconfig

import pytest

from serving import stub_env
from tests.conftest import ROOT

FIND_PYTHON = ROOT / "serving" / "find-python"


def find_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(FIND_PYTHON), *args], capture_output=True, text=True, timeout=60)


def test_find_python_names_version_and_executable_of_a_supported_python():
    result = find_python(sys.executable)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{sys.version_info.major}.{sys.version_info.minor}", sys.executable]


def test_find_python_refuses_what_is_not_a_supported_python(tmp_path):
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 'Python 3.9 (cpython)' >&2\nexit 1\n")
    old.chmod(0o755)
    for name in (str(old), "no-such-python"):
        result = find_python(name)
        assert result.returncode == 1 and f"PYTHON={name}: not a CPython 3.10 to 3.13" in result.stderr


@pytest.mark.parametrize(
    "os_release, expected",
    [
        ('ID=debian\nVERSION_ID="12"\n', "apt-get install libpython3.12"),
        ("ID=ubuntu\nID_LIKE=debian\n", "apt-get install libpython3.12"),
        ("ID=fedora\n", "dnf install python3.12-libs"),
        ('ID="rhel"\nID_LIKE="fedora"\n', "dnf install python3.12-libs"),
        ('ID="almalinux"\nID_LIKE="rhel centos fedora"\n', "dnf install python3.12-libs"),
        ("ID=arch\n", "shared Python 3.12 library (libpython3.12.so.1.0)"),
        (None, "shared Python 3.12 library (libpython3.12.so.1.0)"),
    ],
)
def test_the_libpython_hint_names_the_package_of_the_distribution(tmp_path, os_release, expected):
    path = tmp_path / "os-release"
    if os_release is not None:
        path.write_text(os_release)
    assert expected in stub_env.libpython_hint("3.12", path, system_python=tmp_path / "none")


def test_on_fedora_the_default_python3s_library_is_python3_libs(tmp_path):
    (tmp_path / "os-release").write_text("ID=fedora\n")
    (tmp_path / "python3.12").write_text("")
    (tmp_path / "python3").symlink_to(tmp_path / "python3.12")
    assert stub_env.libpython_hint("3.12", tmp_path / "os-release", tmp_path / "python3") == "dnf install python3-libs"


def test_libpython_found_by_the_system_loader_needs_no_library_path(monkeypatch):
    monkeypatch.setattr(stub_env, "missing_libraries", lambda binary, path: [])
    assert stub_env.python_library_path() == []


def test_libpython_of_the_interpreter_goes_on_the_library_path(monkeypatch):
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not (libdir and soname and (stub_env.Path(libdir) / soname).is_file()):
        pytest.skip("this Python has no shared libpython in its LIBDIR")
    monkeypatch.setattr(stub_env, "missing_libraries", lambda binary, path: [] if libdir in path else [soname])
    assert stub_env.python_library_path() == [libdir]


def test_missing_libpython_says_what_to_install(monkeypatch):
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    monkeypatch.setattr(stub_env, "missing_libraries", lambda binary, path: [f"libpython{version}.so.1.0"])
    monkeypatch.setattr(stub_env, "libpython_hint", lambda v: f"install libpython{v} (hint)")
    with pytest.raises(stub_env.ServerSetupError) as error:
        stub_env.python_library_path()
    assert f"needs libpython{version}.so.1.0" in str(error.value)
    assert str(error.value).endswith(f"install libpython{version} (hint)")


def test_the_stub_of_this_python_runs_here():
    result = subprocess.run(
        [sys.executable, "-m", "serving.serve", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"Python {sys.version_info.major}.{sys.version_info.minor}" in result.stdout
