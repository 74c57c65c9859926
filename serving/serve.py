"""Run a real Triton Inference Server on the model repository, without Docker.

    python -m serving.serve --model <hub id or local dir>      (what ``make serve`` runs)

The model is exported first when the repository holds no export of it, for the engine and precision chosen
(``--engine``, ``--precision``). tritonserver runs this environment's Python in its backend stubs
(``serving.stub_env``), with keys on its protocols (``serving.keys``), under a supervisor that drains and
restarts it (``serving.supervisor``). ``--no-supervise`` execs tritonserver instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from runtime.engines import ENGINES, PRECISIONS
from serving.engines import EngineChoiceError, choose, described
from serving.export import DEFAULT_MODEL, DEFAULT_REPOSITORY, ExportError, export, is_current, read_record
from serving.keys import admin_key, header_pair, redacted, security_args
from serving.stub_env import ServerSetupError, python_library_path, server_command
from serving.supervisor import MAX_SERVER_MEMORY_MB, MAX_STUB_MEMORY_MB, PROBE_S, Supervisor

PROJECT = Path(__file__).resolve().parent.parent


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


@dataclass(frozen=True)
class ServePlan:
    """What the model step runs: the engine, its precision, and why it fell back from the chosen one (or None)."""

    engine: str
    precision: str
    fallback: str | None


def plan(args: argparse.Namespace) -> ServePlan:
    """The engine and precision ``args`` choose, exported into the repository first unless it holds a current
    export (or ``--no-export``), then what the export runs (``engine_for``). Raises ``ServerSetupError``, or
    ``ExportError`` when the export fails."""
    engine, precision = chosen_engine(args)
    print(f"the model step: engine {engine} in {precision} (configs/{engine}.pbtxt)", flush=True)
    if not args.no_export and not is_current(args.repository, args.model, engine, precision):
        record = export(args.model, args.repository, engine=engine, precision=precision)
        print(f"exported {record.model} into {args.repository} (fused: {record.fused_operators or 'none'})")
    served = ServePlan(*engine_for(read_record(args.repository), engine, precision, args.engine == "auto"))
    if served.fallback:
        print(f"the model step: engine {served.engine} in {served.precision} instead ({served.fallback})")
    return served


def parser() -> argparse.ArgumentParser:
    """The flags of ``python -m serving.serve``."""
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local checkpoint directory to serve")
    cli.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    cli.add_argument(
        "--engine",
        choices=("auto", *ENGINES),
        default="auto",
        help="the model step (its configs/<engine>.pbtxt): auto = torch when an NVIDIA GPU is visible, else the "
        "CPU engine that computes in --precision; " + described(),
    )
    cli.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="what the engine computes in (default: its first): fp32 is exact parity; bf16 (openvino) needs a CPU "
        "with bf16 matrix units (AMX-BF16, AVX512-BF16; refused on others); int8 is onnxruntime's opt-in graph",
    )
    cli.add_argument("--no-export", action="store_true", help="serve the repository as it is")
    cli.add_argument("--grpc-port", type=int, default=8001)
    cli.add_argument("--http-port", type=int, default=8000)
    cli.add_argument("--metrics-port", type=int, default=8002)
    cli.add_argument("--cache", type=Path, default=PROJECT / ".triton")
    cli.add_argument(
        "--address", default="127.0.0.1", help="interface for gRPC and HTTP (default: loopback; 0.0.0.0: all)"
    )
    cli.add_argument("--tls-cert", type=Path, help="serve gRPC over TLS with this PEM certificate ...")
    cli.add_argument("--tls-key", type=Path, help="... and this PEM private key")
    cli.add_argument("--tls-client-ca", type=Path, help="mutual TLS: accept clients signed by this CA")
    cli.add_argument(
        "--api-key",
        metavar="HEADER=VALUE",
        help="require this header for inference, gRPC and HTTP (Triton's restricted protocols)",
    )
    cli.add_argument(
        "--admin-key",
        metavar="HEADER=VALUE",
        help="the key of the admin protocols (default: a random one in <cache>/admin-key-<grpc port>)",
    )
    cli.add_argument(
        "--max-server-memory-mb",
        type=float,
        default=MAX_SERVER_MEMORY_MB,
        help="restart tritonserver (drained) when its private memory stays above this (0: never)",
    )
    cli.add_argument(
        "--max-stub-memory-mb",
        type=float,
        default=MAX_STUB_MEMORY_MB,
        help="restart tritonserver (drained) when a Python-backend stub's private memory stays above this (0: never)",
    )
    cli.add_argument(
        "--probe-s",
        type=float,
        default=PROBE_S,
        help="ask the ensemble a question this often, restarting tritonserver after 3 in a row unanswered (0: never; "
        "the questions count in Triton's statistics and metrics)",
    )
    cli.add_argument(
        "--no-supervise", action="store_true", help="exec tritonserver: no restarts, no shared-memory upkeep"
    )
    cli.add_argument(
        "--check",
        action="store_true",
        help="only check that this Python's backend stub can run "
        "here (make setup), and say what to install when it cannot",
    )
    cli.add_argument("tritonserver_args", nargs="*", help="passed on to tritonserver (after --)")
    return cli


def check() -> int:
    """``--check``: whether this Python's backend stub can run here, and what to install when it cannot."""
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


def supervisor(args: argparse.Namespace, command: list[str], env: dict[str, str], admin: tuple[str, str]) -> Supervisor:
    """The supervisor of ``command`` with the limits, probe and keys ``args`` give."""
    host = "127.0.0.1" if args.address in ("0.0.0.0", "::") else args.address
    return Supervisor(
        command,
        env,
        f"http://{host}:{args.http_port}",
        admin,
        args.max_server_memory_mb,
        args.max_stub_memory_mb,
        header_pair(args.api_key, "--api-key") if args.api_key else None,
        args.probe_s,
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.check:
        return check()
    # make does not echo this command line: its keys are shown here as REDACTED
    given = sys.argv[1:] if argv is None else argv
    print(" ".join(redacted([sys.executable, "-m", "serving.serve", *given])), flush=True)
    try:
        served = plan(args)
        admin = admin_key(args)
        command, env = server_command(
            args.repository,
            args.grpc_port,
            args.http_port,
            args.metrics_port,
            security_args(args, admin) + [f"--model-config-name={served.engine}"] + args.tritonserver_args,
            args.cache,
        )
    except ExportError as error:
        print(f"export failed: {error}", file=sys.stderr)
        return 2
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
    return supervisor(args, command, env, admin).run(workdir)


if __name__ == "__main__":
    sys.exit(main())
