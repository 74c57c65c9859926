"""The image and its containers, without a Docker engine.

``build`` lays a target of docker/Dockerfile (its stage and those it is built FROM) out into a directory that
stands for the image's filesystem: its ``COPY``s (the build context as Docker reads it, .dockerignore included)
land under it and its ``RUN``s run with the image's Python first on PATH — a fresh virtual environment of the
Python the NGC base image ships, with no editable install and no checkout on its path. The base image's own parts
are stood in for by what this machine has of the same release: nvidia-pytriton's tritonserver 2.51 (with the
Python-backend stub of the image's Python) as ``/opt/tritonserver/bin/tritonserver``, and an entrypoint that runs
its arguments as NGC's does.

``Container`` starts a command from that layout the way a container runtime does: in network (or another
container's, as the containers of a pod and compose's ``network_mode: service:...`` share one), PID and mount
namespaces of its own (only its loopback, the fixed ports 8000-8002 free whatever else runs here; its own /proc,
so that the probes see only its processes; a fresh /dev/shm), with the image's environment and working directory
and the volumes mapped (read-only where the service mounts them so). ``exec`` runs a command inside it (``docker
compose exec``, a probe or a hook of the kubelet); ``on_network`` runs a host command on its network only (a
client, an HTTP probe).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from docker.utils.build import exclude_paths

from serving.stub_env import Interpreter, backend_directory, library_path, triton_home

# What the NGC base image holds that the layout stands in for: Triton's release notes give each release's
# Ubuntu and Python (24.10: Ubuntu 22.04, Python 3.10).
NGC_IMAGE = re.compile(r"nvcr\.io/nvidia/tritonserver:(?P<release>\d\d\.\d\d)-py3")
NGC_PYTHON = {"24.10": "3.10"}
NGC_ENTRYPOINT = "/opt/nvidia/nvidia_entrypoint.sh"
NGC_WORKDIR = "/opt/tritonserver"
NGC_TRITONSERVER = "/opt/tritonserver/bin/tritonserver"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(RuntimeError):
    """The Dockerfile cannot be laid out; the message says why."""


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    found, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        found.append((keyword.upper(), rest.strip()))
        pending = ""
    return found


def substitute(text: str, values: dict[str, str]) -> str:
    """``${NAME}`` and ``$NAME`` replaced by build arguments and ENV values, as Docker does."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), ""), text)


def build_context(context: Path) -> list[str]:
    """The files of the build context that Docker sends: all of ``context`` but what .dockerignore names."""
    ignore = context / ".dockerignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    patterns = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return sorted(p for p in exclude_paths(str(context), patterns) if (context / p).is_file())


@dataclass
class Image:
    """A Dockerfile laid out: ``root`` stands for the image's filesystem."""

    root: Path
    python: Path  # the image's python3
    env: dict[str, str]  # its ENV
    workdir: str
    release: str  # of the NGC base image
    entrypoint: list[str] = field(default_factory=lambda: [NGC_ENTRYPOINT])
    stop_signal: int = signal.SIGTERM  # the image's STOPSIGNAL

    def host_path(self, path: str) -> str:
        """Where an absolute path of the image lies here."""
        return str(self.root) + path

    @property
    def path_variable(self) -> str:
        if not self.release:  # a stand-in image of this machine's own programs
            return SYSTEM_PATH
        return os.pathsep.join(
            [str(self.python.parent), self.host_path(str(Path(NGC_TRITONSERVER).parent)), SYSTEM_PATH]
        )

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A container's environment: the image's, then the service's."""
        return {"PATH": self.path_variable, "HOME": self.host_path("/root"), **self.env, **(extra or {})}


def stand_in(root: Path, stop_signal: int = signal.SIGTERM) -> Image:
    """An image whose programs are this machine's (nginx for the proxy's image), with an empty filesystem of
    its own under ``root`` and the image's stop signal."""
    root.mkdir(parents=True, exist_ok=True)
    return Image(root, Path(sys.executable), {}, "/", "", entrypoint=[], stop_signal=stop_signal)


def stages(dockerfile: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str, list[tuple[str, str]]]]]:
    """(the global ARGs, each stage as (name, what it is FROM, its instructions)); an unnamed stage is named by its
    index, as Docker numbers them."""
    found = instructions(dockerfile)
    first = next((i for i, (keyword, _) in enumerate(found) if keyword == "FROM"), len(found))
    global_args, built = found[:first], []
    for keyword, rest in found[first:]:
        if keyword == "FROM":
            reference, _, name = rest.partition(" AS ") if " AS " in rest else rest.partition(" as ")
            built.append((name.strip() or str(len(built)), reference.strip(), []))
        else:
            built[-1][2].append((keyword, rest))
    return global_args, built


def build(
    dockerfile: Path,
    context: Path,
    root: Path,
    build_args: dict[str, str] | None = None,
    target: str | None = None,
    python: str | None = None,
) -> Image:
    """Lay ``dockerfile``'s stage ``target`` (default: the last, as ``docker build`` does) out under ``root``,
    after the stages it is built FROM; refuses instructions it cannot stand in for. ``python``: the Python
    version that stands for the base image's (default: its release's own), for a stage whose packages this
    machine has for another version only."""
    values = dict(build_args or {})
    global_args, built = stages(dockerfile)
    if not built:
        raise ImageError("no FROM")
    named = {name: (base, steps) for name, base, steps in built}
    name = target or built[-1][0]
    if name not in named:
        raise ImageError(f"no stage {name}: the stages are {', '.join(named)}")
    chain = []
    while name in named:  # the stage, then the one it is FROM, back to the base image
        chain.insert(0, named[name])
        name = named[name][0]
    for keyword, rest in global_args:
        if keyword != "ARG":
            raise ImageError(f"{keyword} before FROM")
        arg, _, default = rest.partition("=")
        values.setdefault(arg, default)
    image = _base(substitute(chain[0][0], values), root, python)
    env: dict[str, str] = {}
    for _, steps in chain:
        for keyword, rest in steps:
            _lay_out(image, keyword, rest, values, env, context)
    image.env = env
    return image


def _lay_out(image: Image, keyword: str, rest: str, values: dict[str, str], env: dict[str, str], context: Path):
    if keyword == "ARG":
        name, _, default = rest.partition("=")
        values.setdefault(name, default)
    elif keyword == "ENV":
        name, _, value = rest.partition("=")
        env[name] = values[name] = substitute(value, values)
    elif keyword == "WORKDIR":
        image.workdir = substitute(rest, values)
    elif keyword == "COPY":
        *sources, target = shlex.split(substitute(rest, values))
        _copy(context, sources, image.host_path(target))
    elif keyword == "RUN":
        command = _mapped(substitute(rest, {**values, **env}), image)
        run = subprocess.run(
            ["bash", "-ec", command],
            env=image.environment(env),
            cwd=image.host_path(image.workdir),
            capture_output=True,
            text=True,
            timeout=900,
        )
        if run.returncode != 0:
            raise ImageError(f"RUN {rest} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    else:
        raise ImageError(f"{keyword} is not laid out here: add it to tests/integration/image.py")


def _base(reference: str, root: Path, python: str | None = None) -> Image:
    """The NGC image's parts: its Python (a new virtual environment; ``python``: of that version instead),
    tritonserver and entrypoint."""
    match = NGC_IMAGE.fullmatch(reference)
    if not match or match["release"] not in NGC_PYTHON:
        raise ImageError(f"FROM {reference}: only NGC Triton images of releases {sorted(NGC_PYTHON)} are laid out")
    version = python or NGC_PYTHON[match["release"]]
    venv = root / ".python"
    found = subprocess.run(
        ["bash", str(Path(__file__).resolve().parents[2] / "serving" / "find-python"), f"python{version}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise ImageError(f"the image's Python {version} is not installed here: {found.stderr.strip()}")
    executable = found.stdout.split()[1]
    subprocess.run([executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
    image = Image(root, venv / "bin" / "python3", {}, NGC_WORKDIR, match["release"])
    Path(image.host_path(NGC_WORKDIR)).mkdir(parents=True, exist_ok=True)
    Path(image.host_path("/root")).mkdir(parents=True, exist_ok=True)
    python = Interpreter.of(str(image.python))
    cache = root / ".stand-ins"
    libraries = os.pathsep.join(library_path(python))
    _script(
        Path(image.host_path(NGC_TRITONSERVER)),
        f'export LD_LIBRARY_PATH="{libraries}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
        f'exec "{triton_home() / "tritonserver" / "bin" / "tritonserver"}" '
        f'--backend-directory="{backend_directory(cache, python)}" "$@"',
    )
    _script(Path(image.host_path(NGC_ENTRYPOINT)), 'exec "$@"')
    return image


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n# stands for the NGC image's {path.name}\n{body}\n")
    path.chmod(0o755)


def _copy(context: Path, sources: list[str], target: str) -> None:
    """COPY as Docker does: a directory's contents into ``target``, a file into ``target`` (or into it, when it
    ends with / or there are several sources), from the build context only."""
    files = build_context(context)
    for source in sources:
        name = os.path.normpath(source)
        if name == "." or (context / name).is_dir():
            inside = "" if name == "." else name + "/"
            pairs = [(f, Path(target) / f[len(inside) :]) for f in files if f.startswith(inside)]
        else:
            into = target.endswith("/") or len(sources) > 1
            pairs = [(name, Path(target) / Path(name).name if into else Path(target))] if name in files else []
        if not pairs:
            raise ImageError(f"COPY {source}: not in the build context (missing, or left out by .dockerignore)")
        for origin, destination in pairs:
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes((context / origin).read_bytes())
            destination.chmod((context / origin).stat().st_mode & 0o777)


def _mapped(command: str, image: Image) -> str:
    """A RUN command with the image's absolute paths (those the layout holds) moved under its root."""
    tops = sorted({p.name for p in image.root.iterdir() if p.is_dir() and not p.name.startswith(".")}, key=len)
    for top in reversed(tops):
        command = re.sub(rf"(?<![\w./-])/{re.escape(top)}(?=/|\b)", f"{image.root}/{top}", command)
    return command


class Container:
    """A process tree started from an image's layout as a container; see the module's docstring."""

    def __init__(
        self,
        image: Image,
        argv: list[str],
        env: dict[str, str],
        volumes: dict[str, Path],
        log: Path,
        network_of: Container | None = None,
        read_only: Iterable[str] = (),
        service: str = "",
        binds: dict[str, Path] | None = None,
    ):
        self.image, self.log, self.volumes, self.service = image, log, volumes, service
        self.env = image.environment(env)
        self.argv = [self._host(a) for a in argv]
        network = "" if network_of else "ip link set lo up && "
        # a read-only volume (compose's :ro, a pod's readOnly mount) is bound read-only in the container's own
        # mount namespace: writes there fail, even as root
        bound = "".join(
            f"mount --bind {shlex.quote(str(volumes[v]))} {shlex.quote(str(volumes[v]))} && "
            f"mount -o remount,bind,ro {shlex.quote(str(volumes[v]))} && "
            for v in read_only
        )
        # a directory of this machine bound at a path of the container's (its own mount namespace: the machine's
        # own file there is left alone), for a program of this machine that reads that path
        bound += "".join(
            f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)} && " for dst, src in (binds or {}).items()
        )
        setup = network + bound + 'mount -t tmpfs -o size=1g,mode=1777 shm /dev/shm && cd "$0" && exec "$@"'
        # a network namespace of its own, or the one of ``network_of``
        join = ["nsenter", f"--target={network_of.pid}", "--net", "--"] if network_of else []
        with open(log, "ab") as out:
            self.runtime = subprocess.Popen(
                [
                    *join,
                    "unshare",
                    *([] if network_of else ["--net"]),
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--kill-child",
                    "sh",
                    "-c",
                    setup,
                    image.host_path(image.workdir),
                    *self.argv,
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self._first_process()

    def _host(self, value: str) -> str:
        """An argument with the image's and the volumes' paths as they lie here."""
        for inside, outside in self.volumes.items():
            value = re.sub(rf"(?<![\w.-]){re.escape(inside)}(?![\w.-])", str(outside), value)
        if value.startswith("/") and os.path.exists(self.image.host_path(value)):
            return self.image.host_path(value)
        return value

    def _first_process(self) -> int:
        """The container's PID 1, as this machine numbers it: the child of ``unshare`` (which ``nsenter`` becomes
        when the container joins another's network)."""
        pid = self.runtime.pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                found = children.read_text().split()
            except OSError:
                found = []
            if found:
                return int(found[0])
            if self.runtime.poll() is not None:
                raise RuntimeError(f"the container did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.02)
        raise RuntimeError("the container did not start in 10 s")

    def alive(self) -> bool:
        return self.runtime.poll() is None

    def exec(self, argv: list[str], timeout_s: float = 60) -> subprocess.CompletedProcess:
        """``argv`` inside the container (its namespaces, environment and working directory)."""
        return subprocess.run(
            [
                "nsenter",
                f"--target={self.pid}",
                "--net",
                "--pid",
                "--mount",
                f"--wd={self.image.host_path(self.image.workdir)}",
                "env",
                "-i",
                *(f"{k}={v}" for k, v in self.env.items()),
                *[self._host(a) for a in argv],
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def on_network(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """A host command (a client, a probe) on the container's network only."""
        return subprocess.Popen(["nsenter", f"--target={self.pid}", "--net", *argv], **kwargs)

    def http_status(self, port: int, path: str, body: bytes | None = None) -> int:
        """What an HTTP GET of ``path`` (a POST of ``body``) on the container's ``port`` answers (0: no answer),
        as a probe or a client on its network sees it."""
        return self.http(port, path, body)[0]

    def http(self, port: int, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, str]:
        """(status, body) of an HTTP GET of ``path`` (a POST of ``body``, with ``headers``) on the container's
        ``port`` (0: no answer), as a client on its network sees it."""
        probe = (
            "import json, sys, urllib.request, urllib.error\n"
            "headers = json.loads(sys.argv[2])\n"
            "body = sys.stdin.buffer.read() if sys.argv[1] == 'post' else None\n"
            f"request = urllib.request.Request('http://127.0.0.1:{port}{path}', data=body, headers=headers)\n"
            "try:\n"
            "    with urllib.request.urlopen(request, timeout=10) as response:\n"
            "        print(json.dumps([response.status, response.read().decode('utf-8', 'replace')]))\n"
            "except urllib.error.HTTPError as error:\n"
            "    print(json.dumps([error.code, error.read().decode('utf-8', 'replace')]))\n"
            "except OSError:\n"
            "    print(json.dumps([0, '']))\n"
        )
        process = self.on_network(
            [sys.executable, "-c", probe, "get" if body is None else "post", json.dumps(headers or {})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        out, _ = process.communicate(body or b"", timeout=60)
        status, text = json.loads(out or b'[0, ""]')
        return status, text

    def tcp_open(self, port: int) -> bool:
        """Whether a TCP connection to the container's ``port`` opens (a tcpSocket probe)."""
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3).close()"
        return self.on_network([sys.executable, "-c", probe], stderr=subprocess.DEVNULL).wait(timeout=30) == 0

    def stop(self, grace_s: float = 30) -> bool:
        """``docker stop``: the image's stop signal to PID 1, SIGKILL after ``grace_s``; whether it exited on its
        stop signal (not killed)."""
        if self.alive():
            try:
                os.kill(self.pid, self.image.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.runtime.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.runtime.kill()
                self.runtime.wait()
                return False
        return True
