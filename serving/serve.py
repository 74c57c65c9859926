"""Run a real Triton Inference Server on the model repository, without Docker.

    python -m serving.serve --model <hub id or local dir>      (what ``make serve`` runs)

Uses the ``tritonserver`` binary that PyPI ``nvidia-pytriton`` ships. Its Python backend starts one stub
process per model instance, running the interpreter found first on PATH: this virtual environment's. The
stub for this Python version is copied into a private copy of the backend directory (``.triton/``).
The model is exported first when the repository holds no export of it. The process then *becomes*
tritonserver (exec), so Ctrl-C / SIGTERM reach Triton directly and it shuts down cleanly.
"""

from __future__ import annotations

import argparse
import ctypes.util
import importlib.util
import os
import shutil
import sys
from pathlib import Path

from serving.export import DEFAULT_MODEL, DEFAULT_REPOSITORY, PRECISIONS, is_current

PROJECT = Path(__file__).resolve().parent.parent


class ServerSetupError(RuntimeError):
    """The embedded server cannot start on this machine; the message says what is missing."""


def triton_home() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerSetupError("nvidia-pytriton is not installed in this environment: run make setup")
    return Path(next(iter(spec.submodule_search_locations)))


def backend_directory(cache: Path) -> Path:
    """A copy of the bundled Python backend with the stub for this interpreter's version."""
    home = triton_home() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerSetupError(f"nvidia-pytriton ships no Python backend stub for Python {version}")
    if not (ctypes.util.find_library(f"python{version}") or Path(f"/usr/lib/x86_64-linux-gnu/libpython{version}.so.1.0").exists()):
        raise ServerSetupError(f"the Python backend stub needs libpython{version}.so.1.0: "
                               f"apt-get install libpython{version}")
    target = cache / "backends" / "python"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(home / "backends" / "python", target)
    shutil.copy2(stub, target / "triton_python_backend_stub")
    return target.parent


def server_command(repository: Path, grpc_port: int, http_port: int, metrics_port: int,
                   extra: list[str], cache: Path) -> tuple[list[str], dict[str, str]]:
    home = triton_home()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libs = home.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH", "")) if p)
    command = [
        str(home / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository={repository.resolve()}",
        f"--backend-directory={backend_directory(cache)}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-timeout-secs=30",
        "--log-verbose=0",
        *extra,
    ]
    return command, env


def security_args(args: argparse.Namespace) -> list[str]:
    """tritonserver flags for the address, gRPC TLS and the inference key."""
    extra = [f"--grpc-address={args.address}", f"--http-address={args.address}"]
    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("--tls-cert and --tls-key go together")
    if args.tls_cert:
        extra += ["--grpc-use-ssl=true", f"--grpc-server-cert={args.tls_cert.resolve()}",
                  f"--grpc-server-key={args.tls_key.resolve()}"]
        if args.tls_client_ca:
            extra += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={args.tls_client_ca.resolve()}"]
    if args.api_key:
        header, _, value = args.api_key.partition("=")
        if not header or not value:
            raise SystemExit("--api-key takes HEADER=VALUE")
        # the inference protocol needs the key; HTTP (health, metrics scrapes) stays as configured
        extra.append(f"--grpc-restricted-protocol=inference:{header}={value}")
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local checkpoint directory to serve")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="of the export (int8: opt-in)")
    parser.add_argument("--no-export", action="store_true", help="serve the repository as it is")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--cache", type=Path, default=PROJECT / ".triton")
    parser.add_argument("--address", default="0.0.0.0", help="interface for gRPC and HTTP (127.0.0.1: local only)")
    parser.add_argument("--tls-cert", type=Path, help="serve gRPC over TLS with this PEM certificate ...")
    parser.add_argument("--tls-key", type=Path, help="... and this PEM private key")
    parser.add_argument("--tls-client-ca", type=Path, help="mutual TLS: accept clients signed by this CA")
    parser.add_argument("--api-key", metavar="HEADER=VALUE",
                        help="require this header on the gRPC inference protocol (Triton's restricted protocol)")
    parser.add_argument("tritonserver_args", nargs="*", help="passed on to tritonserver (after --)")
    args = parser.parse_args(argv)

    if not args.no_export and not is_current(args.repository, args.model, args.precision):
        from serving.export import main as export_main

        status = export_main(["--model", args.model, "--repository", str(args.repository),
                              "--precision", args.precision])
        if status:
            return status
    try:
        command, env = server_command(args.repository, args.grpc_port, args.http_port, args.metrics_port,
                                      security_args(args) + args.tritonserver_args, args.cache)
    except ServerSetupError as error:
        print(f"cannot start tritonserver: {error}", file=sys.stderr)
        return 2
    print(" ".join(command), flush=True)
    os.execve(command[0], command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
