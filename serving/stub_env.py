"""The environment tritonserver's Python-backend stubs run in, and the command line that starts tritonserver.

Uses the ``tritonserver`` binary that PyPI ``nvidia-pytriton`` ships. Its Python backend starts one stub
process per model instance, running the interpreter found first on PATH: this virtual environment's. The
stub for this Python version is copied into a private copy of the backend directory (``.triton/``, once).
The stubs import the project from this environment's site-packages, where make setup installs it (they
ignore PYTHONPATH, and put their working directory on sys.path: tritonserver runs in the cache directory, not
in a checkout). They link this Python's shared libpython, found by the system's loader or in the interpreter's
own library directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from serving import stub_compat

# how long tritonserver waits for requests in flight when it stops; the supervisor's drain waits as long
EXIT_TIMEOUT_S = 30
# glibc's allocator for tritonserver and its stubs: buffers of 1 MiB and more are mapped on their own and given
# back when freed (without it, the threshold grows after the first large free and a burst's tensors stay
# resident: tritonserver's private memory after 8 concurrent 1,000-window requests 91 MB, with it 21 MB)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}


class ServerSetupError(RuntimeError):
    """The embedded server cannot start on this machine; the message says what is missing."""


def triton_home() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerSetupError("nvidia-pytriton is not installed in this environment: run make setup")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Interpreter:
    """The Python the stubs run: its version and shared library (the stub of that version links it)."""

    executable: str
    version: str
    libdir: str | None
    soname: str | None

    @classmethod
    def this(cls) -> Interpreter:
        return cls(
            sys.executable,
            f"{sys.version_info.major}.{sys.version_info.minor}",
            sysconfig.get_config_var("LIBDIR"),
            sysconfig.get_config_var("INSTSONAME"),
        )

    @classmethod
    def of(cls, executable: str) -> Interpreter:
        """Another interpreter (a server environment of another Python version, the image's Python)."""
        probe = "import sys, sysconfig; print(sys.version_info.major, sys.version_info.minor); " + (
            "print(sysconfig.get_config_var('LIBDIR')); print(sysconfig.get_config_var('INSTSONAME'))"
        )
        out = subprocess.run([executable, "-E", "-c", probe], capture_output=True, text=True, check=True).stdout
        version, libdir, soname = out.splitlines()
        return cls(executable, version.replace(" ", "."), None if libdir == "None" else libdir, soname)

    @property
    def stub(self) -> Path:
        stub = triton_home() / "tritonserver" / "python_backend_stubs" / self.version / "triton_python_backend_stub"
        if not stub.is_file():
            raise ServerSetupError(f"nvidia-pytriton ships no Python backend stub for Python {self.version}")
        return stub


def backend_directory(cache: Path, python: Interpreter | None = None) -> Path:
    """A copy of the bundled Python backend with the stub for ``python``'s version (default: this one's)."""
    python = python or Interpreter.this()
    home = triton_home() / "tritonserver"
    version, stub = python.version, python.stub
    if problem := stub_compat.numpy_problem(python.executable):  # this stub cannot work with numpy 2
        raise ServerSetupError(problem)
    # one directory per Python version, written once and renamed into place: servers running side by side
    # (tests, a restart) never see it half-copied
    backends = cache / f"backends-py{version}{stub_compat.DIRECTORY_SUFFIX}"
    target = backends / "python"
    if not (target / "triton_python_backend_stub").is_file():
        backends.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=backends))
        shutil.copytree(home / "backends" / "python", scratch / "python")
        shutil.copy2(stub, scratch / "python" / "triton_python_backend_stub")
        stub_compat.patch_backend(scratch / "python")
        try:
            os.rename(scratch / "python", target)
        except OSError:  # another server put it in place first
            pass
        shutil.rmtree(scratch, ignore_errors=True)
    return backends


def libpython_hint(
    version: str, os_release: Path = Path("/etc/os-release"), system_python: Path = Path("/usr/bin/python3")
) -> str:
    """How to install the shared libpython``version`` on this distribution (/etc/os-release)."""
    fields = {}
    try:
        for line in os_release.read_text().splitlines():
            key, _, value = line.partition("=")
            fields[key.strip()] = value.strip().strip("\"'")
    except OSError:
        pass
    ids = {fields.get("ID", ""), *fields.get("ID_LIKE", "").split()}
    if ids & {"debian", "ubuntu"}:
        return f"apt-get install libpython{version}"
    if ids & {"fedora", "rhel", "centos"}:
        # the distribution's own python3 keeps its library in python3-libs, other versions in python3.X-libs
        default = Path(os.path.realpath(system_python)).name == f"python{version}"
        return f"dnf install {'python3-libs' if default else f'python{version}-libs'}"
    return (
        f"install your distribution's shared Python {version} library (libpython{version}.so.1.0), "
        f"or use a Python {version} built with --enable-shared"
    )


def missing_libraries(binary: Path, library_path: list[str]) -> list[str]:
    """The shared libraries ``binary`` needs that the loader cannot find with ``library_path`` in front."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (*library_path, env.get("LD_LIBRARY_PATH", "")) if p)
    try:
        out = subprocess.run(["ldd", str(binary)], env=env, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):  # no ldd: let the stub report it
        return []
    return [line.split("=>")[0].strip() for line in out.splitlines() if "=> not found" in line]


def python_library_path(python: Interpreter | None = None) -> list[str]:
    """What the Python-backend stub of ``python``'s version (default: this one's) needs on LD_LIBRARY_PATH to
    find libpython: nothing when the system's loader finds it (or the stub bundles it), else the interpreter's
    own library directory (sysconfig LIBDIR, e.g. a pyenv build) when the shared library (INSTSONAME) is there."""
    python = python or Interpreter.this()
    stub = python.stub
    missing = missing_libraries(stub, [])
    if not missing:
        return []
    libdir, soname = python.libdir, python.soname
    if libdir and soname and (Path(libdir) / soname).is_file() and not missing_libraries(stub, [libdir]):
        return [libdir]
    raise ServerSetupError(
        f"the Python backend stub needs {', '.join(missing)} (not found by the system's "
        f"loader, nor in {libdir or 'this Python'}): {libpython_hint(python.version)}"
    )


def library_path(python: Interpreter | None = None) -> list[str]:
    """LD_LIBRARY_PATH for tritonserver and the stubs of ``python``: nvidia-pytriton's bundled libraries and
    libpython."""
    return [str(triton_home().parent / "nvidia_pytriton.libs"), *python_library_path(python)]


def server_command(
    repository: Path, grpc_port: int, http_port: int, metrics_port: int, extra: list[str], cache: Path
) -> tuple[list[str], dict[str, str]]:
    home = triton_home()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (*library_path(), env.get("LD_LIBRARY_PATH", "")) if p)
    for name, value in MALLOC_ENV.items():
        env.setdefault(name, value)
    command = [
        str(home / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository={repository.resolve()}",
        f"--backend-directory={backend_directory(cache)}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        # explicit: models load at start-up and only the supervisor (with the admin key) unloads the ensemble to
        # drain; the repository API is closed to clients like every admin protocol
        "--model-control-mode=explicit",
        "--load-model=*",
        "--strict-readiness=true",
        f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        "--metrics-config=summary_latencies=true",  # p50/p99 per model on /metrics, as compose and deploy/k8s
        "--log-verbose=0",
        *extra,
    ]
    return command, env
