"""Run a real Triton Inference Server on the model repository, without Docker.

    python -m serving.serve --model <hub id or local dir>      (what ``make serve`` runs)

Uses the ``tritonserver`` binary that PyPI ``nvidia-pytriton`` ships. Its Python backend starts one stub
process per model instance, running the interpreter found first on PATH: this virtual environment's. The
stub for this Python version is copied into a private copy of the backend directory (``.triton/``, once).
The stubs import the project from this environment's site-packages, where make setup installs it (they
ignore PYTHONPATH, and put their working directory on sys.path: tritonserver runs in the cache directory, not
in a checkout). The model is exported first when the repository holds no export of it.

Triton's administrative protocols (shared memory, model repository and configuration, statistics, trace,
logging) need a key on both gRPC and HTTP: ``--admin-key HEADER=VALUE``, or a random one written to
``<cache>/admin-key-<grpc port>`` (readable by this user only) for local tools such as ``make perf``.

This process then supervises tritonserver. Ctrl-C / SIGTERM drain it: the ensemble is unloaded first, so new
requests are refused (UNAVAILABLE, which clients retry elsewhere) while every request in flight finishes
through the composing models, then tritonserver stops (its own shutdown stops every model at once and would
fail ensemble requests between two steps). Whenever tritonserver ends without being asked to (a crash, a
signal, any exit status) a new one is started at once, with a bounded back-off when that keeps happening soon
after starting. When a Python-backend stub process dies (killed, out of memory), which this Triton build
neither reports nor repairs (its health endpoints stay green while every request to that model fails),
tritonserver is killed and restarted; so it is when the ensemble answers no question for PROBE_FAILURES probes
in a row (a stub or tritonserver stuck: ``serving.admin.answering``). SIGHUP (a closing terminal) and SIGQUIT
drain and stop as SIGTERM does. It is restarted, drained, when a stub's memory stays above
``--max-stub-memory-mb``, or its own above ``--max-server-memory-mb``: Triton 2.51's gRPC frontend never frees a
call whose client went away while the response was being written (a ModelStreamInfer or ModelInfer whose
responses are never read, then dropped), and its shutdown then waits out the exit timeout; the restart bounds
what such calls can hold. The Python backend's shared-memory regions are made owner-only as they appear and
removed once their server has ended (``serving.shm``). gRPC and HTTP listen on 127.0.0.1 unless ``--address``
says otherwise; the printed command lines show keys as <redacted> (tritonserver's own /proc/<pid>/cmdline still
holds them).
``--no-supervise`` execs tritonserver instead.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from client.names import ENSEMBLE
from serving import shm, stub_compat
from serving.admin import ADMIN_HEADER, AdminClient, admin_key_file, answering, parse_header
from serving.engines import ENGINES, PRECISIONS, EngineChoiceError, choose, described
from serving.export import DEFAULT_MODEL, DEFAULT_REPOSITORY, is_current, read_record
from serving.processes import mapped_shm, memory_mb, processes, running, stub_pids

PROJECT = Path(__file__).resolve().parent.parent
EXIT_TIMEOUT_S = 30
# tritonserver's private memory above which the supervisor restarts it (see Supervisor); 0 turns it off
MAX_SERVER_MEMORY_MB = 2048
# how often the supervisor asks the ensemble a question (Supervisor, Prober); 0 turns it off
PROBE_S = 5.0
# a Python-backend stub's: the model step's holds the model (the base model in fp32: ~1 GB), the tokenizer's its
# context cache (context_cache_bytes); far above both, so that only a leak or a runaway request reaches it
MAX_STUB_MEMORY_MB = 4096
# glibc's allocator for tritonserver and its stubs: buffers of 1 MiB and more are mapped on their own and given
# back when freed (without it, the threshold grows after the first large free and a burst's tensors stay
# resident: tritonserver's private memory after 8 concurrent 1,000-window requests 91 MB, with it 21 MB)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "1048576"}
# Triton's protocols (gRPC) / APIs (HTTP) that only operators use: closed to clients without the admin key
ADMIN_PROTOCOLS = ("shared-memory", "model-repository", "model-config", "statistics", "trace", "logging")
# the flags that carry a key (tritonserver's protocols:header=value, serve's header=value), and what printed
# command lines show of it
KEY_FLAGS = ("--grpc-restricted-protocol", "--http-restricted-api", "--api-key", "--admin-key")
REDACTED = "<redacted>"


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


def header_pair(value: str, option: str) -> tuple[str, str]:
    pair = parse_header(value)
    if pair is None:
        raise SystemExit(f"{option} takes HEADER=VALUE")
    return pair


def admin_key(args: argparse.Namespace) -> tuple[str, str]:
    """The admin key (header, value): the one given, or a new random one written where local tools find it."""
    if args.admin_key:
        return header_pair(args.admin_key, "--admin-key")
    path = admin_key_file(args.cache, args.grpc_port)
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{ADMIN_HEADER}={value}\n")
    return ADMIN_HEADER, value


def security_args(args: argparse.Namespace, admin: tuple[str, str]) -> list[str]:
    """tritonserver flags for the address, gRPC TLS, the admin key (both protocols) and the inference key
    (both protocols)."""
    extra = [f"--grpc-address={args.address}", f"--http-address={args.address}"]
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    if args.tls_cert:
        extra += [
            "--grpc-use-ssl=true",
            f"--grpc-server-cert={args.tls_cert.resolve()}",
            f"--grpc-server-key={args.tls_key.resolve()}",
        ]
        if args.tls_client_ca:
            extra += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={args.tls_client_ca.resolve()}"]
    restricted = [(",".join(ADMIN_PROTOCOLS), admin)]
    if args.api_key:
        restricted.append(("inference", header_pair(args.api_key, "--api-key")))
    for protocols, (header, value) in restricted:
        extra += [
            f"--grpc-restricted-protocol={protocols}:{header}={value}",
            f"--http-restricted-api={protocols}:{header}={value}",
        ]
    return extra


def redacted(command: list[str]) -> list[str]:
    """``command`` as it may be shown: the keys' values in its KEY_FLAGS replaced by REDACTED
    (``--flag=[protocols:]header=value`` and ``--flag [protocols:]header=value``)."""
    shown = []
    for i, arg in enumerate(command):
        flag, sep, spec = arg.partition("=")
        if sep and flag in KEY_FLAGS:
            arg = f"{flag}={_redacted_spec(spec)}"
        elif i and command[i - 1] in KEY_FLAGS:
            arg = _redacted_spec(arg)
        shown.append(arg)
    return shown


def _redacted_spec(spec: str) -> str:
    return f"{spec.partition('=')[0]}={REDACTED}"  # neither protocols nor headers contain "="


def engine_for(record, engine: str, precision: str, auto: bool) -> tuple[str, str, str | None]:
    """(engine, precision, why it fell back or None): the chosen engine where the export runs on it (its record's
    ``engines``); else, when the engine was chosen by ``auto``, ONNX Runtime in fp32, which runs every graph;
    else ``ServerSetupError`` saying why (the export's own reason) and which engines do run it."""
    if record is None or engine in record.engines:
        return engine, precision, None
    # an export recorded before the record kept the reasons: exporting again tries the engine again
    why = record.unrunnable.get(engine, f"the {engine} engine did not run this export when it was made (export again)")
    if auto and "onnxruntime" in record.engines:
        return "onnxruntime", "fp32", f"{why} ({record.family})"
    runnable = " or ".join(f"ENGINE={e}" for e in record.engines) or "nothing: export it again"
    raise ServerSetupError(f"{why} ({record.family}); serve it with {runnable}")


def chosen_engine(args: argparse.Namespace) -> tuple[str, str]:
    """(engine, precision) that ``--engine`` and ``--precision`` name (``serving.engines.choose``; auto: torch
    when an NVIDIA GPU is visible)."""
    if any(a.startswith("--model-config-name") for a in args.tritonserver_args):
        raise ServerSetupError(
            "the model step's config is --engine's (configs/<engine>.pbtxt), not tritonserver's --model-config-name"
        )
    try:
        engine, precision = choose(args.engine, args.precision)
    except EngineChoiceError as error:
        raise ServerSetupError(str(error)) from None
    return engine.name, precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local checkpoint directory to serve")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument(
        "--engine",
        choices=("auto", *ENGINES),
        default="auto",
        help="the model step (its configs/<engine>.pbtxt): auto = torch when an NVIDIA GPU is visible, else the "
        "CPU engine that computes in --precision; " + described(),
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="what the engine computes in (default: its first): fp32 is exact parity; bf16 (openvino) needs a CPU "
        "with bf16 matrix units (AMX-BF16, AVX512-BF16; refused on others); int8 is onnxruntime's opt-in graph",
    )
    parser.add_argument("--no-export", action="store_true", help="serve the repository as it is")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--cache", type=Path, default=PROJECT / ".triton")
    parser.add_argument(
        "--address", default="127.0.0.1", help="interface for gRPC and HTTP (default: loopback; 0.0.0.0: all)"
    )
    parser.add_argument("--tls-cert", type=Path, help="serve gRPC over TLS with this PEM certificate ...")
    parser.add_argument("--tls-key", type=Path, help="... and this PEM private key")
    parser.add_argument("--tls-client-ca", type=Path, help="mutual TLS: accept clients signed by this CA")
    parser.add_argument(
        "--api-key",
        metavar="HEADER=VALUE",
        help="require this header for inference, gRPC and HTTP (Triton's restricted protocols)",
    )
    parser.add_argument(
        "--admin-key",
        metavar="HEADER=VALUE",
        help="the key of the admin protocols (default: a random one in <cache>/admin-key-<grpc port>)",
    )
    parser.add_argument(
        "--max-server-memory-mb",
        type=float,
        default=MAX_SERVER_MEMORY_MB,
        help="restart tritonserver (drained) when its private memory stays above this (0: never)",
    )
    parser.add_argument(
        "--max-stub-memory-mb",
        type=float,
        default=MAX_STUB_MEMORY_MB,
        help="restart tritonserver (drained) when a Python-backend stub's private memory stays above this (0: never)",
    )
    parser.add_argument(
        "--probe-s",
        type=float,
        default=PROBE_S,
        help="ask the ensemble a question this often, restarting tritonserver after 3 in a row unanswered (0: never; "
        "the questions count in Triton's statistics and metrics)",
    )
    parser.add_argument(
        "--no-supervise", action="store_true", help="exec tritonserver: no restarts, no shared-memory upkeep"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check that this Python's backend stub can run "
        "here (make setup), and say what to install when it cannot",
    )
    parser.add_argument("tritonserver_args", nargs="*", help="passed on to tritonserver (after --)")
    args = parser.parse_args(argv)
    if not args.check:  # make does not echo this command line: its keys are shown here as REDACTED
        given = sys.argv[1:] if argv is None else argv
        print(" ".join(redacted([sys.executable, "-m", "serving.serve", *given])), flush=True)

    if args.check:
        try:
            library_path = python_library_path()
        except ServerSetupError as error:
            print(f"cannot start tritonserver: {error}", file=sys.stderr)
            return 2
        print(
            f"tritonserver can run Python {sys.version_info.major}.{sys.version_info.minor} models here"
            + (f" (libpython from {library_path[0]})" if library_path else "")
        )
        return 0

    try:
        engine, precision = chosen_engine(args)
    except ServerSetupError as error:
        print(f"cannot start tritonserver: {error}", file=sys.stderr)
        return 2
    print(f"the model step: engine {engine} in {precision} (configs/{engine}.pbtxt)", flush=True)
    if not args.no_export and not is_current(args.repository, args.model, engine, precision):
        from serving.export import main as export_main

        status = export_main(
            ["--model", args.model, "--repository", str(args.repository), "--engine", engine, "--precision", precision]
        )
        if status:
            return status
    try:
        engine, precision, fallback = engine_for(read_record(args.repository), engine, precision, args.engine == "auto")
    except ServerSetupError as error:
        print(f"cannot start tritonserver: {error}", file=sys.stderr)
        return 2
    if fallback:
        print(f"the model step: engine {engine} in {precision} instead ({fallback})")
    try:
        admin = admin_key(args)
        command, env = server_command(
            args.repository,
            args.grpc_port,
            args.http_port,
            args.metrics_port,
            security_args(args, admin) + [f"--model-config-name={engine}"] + args.tritonserver_args,
            args.cache,
        )
    except ServerSetupError as error:
        print(f"cannot start tritonserver: {error}", file=sys.stderr)
        return 2
    print(" ".join(redacted(command)), flush=True)
    # the stubs put their working directory on sys.path: never a checkout, whose files would shadow the installed
    # project
    workdir = args.cache.resolve()
    if args.no_supervise:
        os.chdir(workdir)
        os.execve(command[0], command, env)
    host = "127.0.0.1" if args.address in ("0.0.0.0", "::") else args.address
    supervisor = Supervisor(
        command,
        env,
        f"http://{host}:{args.http_port}",
        admin,
        args.max_server_memory_mb,
        args.max_stub_memory_mb,
        header_pair(args.api_key, "--api-key") if args.api_key else None,
        args.probe_s,
    )
    return supervisor.run(workdir)


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


if __name__ == "__main__":
    sys.exit(main())
