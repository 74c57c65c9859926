"""``make gpu-kit``: a self-contained folder (at most 64 MiB) that measures the GPU path on a GPU machine with no
package index, in one command run from that folder: ``bash run.sh [--quick] [--out DIR]``.

    python -m perf.gpu_kit --out build/gpu-kit [--python-version 3.12] [--xz-level 6]

The folder holds ``run.sh`` (``perf/gpu_kit_run.sh``), ``README.txt``, ``kit.json`` (what is inside) and
``payload/``: xz-compressed tarballs of

* ``tritonserver``: nvidia-pytriton's tritonserver, bundled libraries and Python backend, with only the
  Python-backend stub of ``--python-version`` (not the other versions' stubs, nor the libpython 3.13 that only
  the 3.13 stub uses), under an empty ``pytriton`` package that ``serving.stub_env`` finds;
* ``site``: the kit's own packages, ahead of the machine's: numpy 1.x (the stubs misread numpy 2's tensors),
  tokenizers, and the card's transformers 4.x with its huggingface_hub (the pipeline comparison);
* ``fallback``: small packages that transformers 4.x and huggingface_hub need, used only where the machine
  lacks them (they come after the machine's own site directories);
* ``perf_analyzer``: PyPI perf-analyzer's package (its binary needs glibc >= 2.38);
* ``project``: this checkout's files that the server and the run need (git's tracked and untracked, not ignored):
  the project's packages (``serving.server_packages``, the list the image installs too), the model repository
  and the run's inputs;

and ``vocab.txt``, the uncased vocabulary of the random-weight checkpoint. Torch, safetensors and the rest come
from the machine's Python. Wheels are downloaded once into ``.cache/gpu-kit/wheels/py<version>/`` and payloads
kept in ``.cache/gpu-kit/payloads/`` by a key of their inputs, so a rebuild is offline and fast. The build fails
when the folder is larger than 64 MiB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from serving import server_packages

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "gpu-kit"
LIMIT_BYTES = 64 * 2**20
PYTHON_VERSIONS = ("3.10", "3.11", "3.12")  # the 3.13 stub needs numpy 2, which the stubs misread
FORMAT = 1  # part of every payload's cache key: bump when the payloads' layout changes

# the server's packages (requirements-server.txt) that the GPU run does not carry, and why
SERVER_PACKAGES_LEFT_OUT = {
    "onnxruntime": "the GPU configs run the torch engine, whose torch comes from the machine",
    "openvino": "the CPU's bf16 engine (encoder/configs/openvino.pbtxt), not the GPU's",
    "openvino-telemetry": "OpenVINO's, left out with it",
    "tritonclient": "the run talks to the server over HTTP and through perf_analyzer (the CPU fallback's config "
    "edit, serving.configs, takes it from the machine's Python)",
}
# the kit's own packages (ahead of the machine's): the server's (pinned in requirements-server.txt) and the card's
# pipeline (requirements.txt), except huggingface_hub, which transformers 4.57.6 needs below 1.0 (the machine's
# transformers 5 brings 1.x)
PIPELINE_PACKAGES = ("transformers", "huggingface-hub")
HUB_PIN = "0.36.2"
# what transformers 4.57.6 and huggingface_hub 0.36 import, for a machine that lacks any of them
FALLBACK_PINS = {
    "requests": "2.34.2",
    "urllib3": "2.8.0",
    "idna": "3.20",
    "charset-normalizer": "3.5.3",
    "certifi": "2026.10.19.post1",
    "tqdm": "4.70.1",
    "regex": "2026.11.19",
    "pyyaml": "6.0.4",
    "safetensors": "0.8.0",
    "filelock": "4.3.1",
    "packaging": "26.4",
    "fsspec": "2026.9.0",
    "typing-extensions": "4.16.0",
}
# glibc 2.39 (Ubuntu 24.04) and older: every manylinux tag up to it
PLATFORMS = (
    "manylinux1_x86_64",
    "manylinux2010_x86_64",
    "manylinux2014_x86_64",
    *(f"manylinux_2_{minor}_x86_64" for minor in range(5, 40)),
)
# the files of this checkout the run needs beside the project's packages' modules
RUN_FILES = (
    "model_repository/",
    "perf/install-perf-analyzer",
    "perf/data/squad.json",
    "perf/data/long.json",
    "deploy/k8s/base/nginx.conf",  # the front the restart check runs tritonserver behind
)
RUN_SCRIPT = ROOT / "perf" / "gpu_kit_run.sh"


class KitError(RuntimeError):
    """The kit cannot be built; the message says why."""


def site_packages(python_version: str) -> list[str]:
    """The kit's own packages on ``python_version``: the server's but those left out, and the pipeline's."""
    server = server_packages.server_distributions(python_version)
    return [*(n for n in server if n not in SERVER_PACKAGES_LEFT_OUT), *map(canonicalize_name, PIPELINE_PACKAGES)]


def pins(python_version: str) -> dict[str, str]:
    """name -> version of every package the kit carries, for ``python_version``."""
    found = server_packages.pins(
        [server_packages.SERVER_REQUIREMENTS, ROOT / "requirements.txt", ROOT / "requirements-tritonserver.txt"],
        python_version,
    )
    site = site_packages(python_version)
    wanted = {name: found[name] for name in site if name in found}
    wanted["huggingface-hub"] = HUB_PIN
    wanted["nvidia-pytriton"] = found["nvidia-pytriton"]
    script = (ROOT / "perf" / "install-perf-analyzer").read_text()
    wanted["perf-analyzer"] = re.search(r'VERSION="\$\{PERF_ANALYZER_VERSION:-([^}]+)\}"', script).group(1)
    missing = set(site) - set(wanted)
    if missing:
        raise KitError(f"no pinned version of {', '.join(sorted(missing))} for Python {python_version}")
    return {**wanted, **{canonicalize_name(n): v for n, v in FALLBACK_PINS.items()}}


def wheels(wanted: dict[str, str], python_version: str, cache: Path = CACHE) -> dict[str, Path]:
    """The wheel of each pinned package for CPython ``python_version`` on manylinux x86-64, downloaded once."""
    directory = cache / "wheels" / f"py{python_version}"
    directory.mkdir(parents=True, exist_ok=True)

    def cached() -> dict[str, Path]:
        have = {}
        for path in sorted(directory.glob("*.whl")):
            name, version, _, _ = parse_wheel_filename(path.name)
            if wanted.get(name) == str(version):
                have[name] = path
        return have

    have = cached()
    missing = [f"{name}=={version}" for name, version in wanted.items() if name not in have]
    if missing:
        print(f"downloading {len(missing)} wheels for Python {python_version}: {' '.join(missing)}", flush=True)
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            python_version,
            "--dest",
            str(directory),
            *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
            *missing,
        ]
        if subprocess.run(command).returncode != 0:
            raise KitError(f"pip could not download {' '.join(missing)} (Python {python_version}, manylinux x86-64)")
        have = cached()
    if set(have) != set(wanted):
        raise KitError(f"no wheel of {', '.join(sorted(set(wanted) - set(have)))} in {directory}")
    return have


def unzip(wheel: Path, target: Path, keep: Callable[[str], bool] = lambda name: True) -> None:
    """Extract ``wheel``'s members that ``keep`` accepts, with their permission bits (zipfile drops them)."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            if info.is_dir() or not keep(info.filename):
                continue
            path = target / info.filename
            path.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                path.chmod(mode)


def tritonserver_filter(python_version: str) -> Callable[[str], bool]:
    """nvidia-pytriton's wheel: tritonserver and its libraries, with this Python version's stub only."""

    def keep(name: str) -> bool:
        if name.startswith("pytriton/tritonserver/python_backend_stubs/"):
            return name.split("/")[3] == python_version
        if name.startswith("nvidia_pytriton.libs/"):
            return python_version == "3.13" or not Path(name).name.startswith("libpython3")
        return name.startswith("pytriton/tritonserver/") and "/__pycache__/" not in name

    return keep


def site_filter(name: str) -> bool:
    """Packages without their test suites (numpy's are a few MB)."""
    return "/tests/" not in name and "/__pycache__/" not in name


def project_files() -> list[str]:
    """This checkout's files (tracked, and untracked ones git does not ignore) that the server and the run need."""
    try:
        listed = (
            subprocess.run(
                ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=ROOT,
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .split("\0")
        )
    except (OSError, subprocess.CalledProcessError) as error:
        raise KitError(f"the project's files are listed with git, which failed here: {error}") from error
    packages = tuple(f"{p}/" for p in server_packages.project_packages())

    def needed(name: str) -> bool:
        return name.startswith(RUN_FILES) or (name.startswith(packages) and name.endswith(".py"))

    return sorted({f for f in listed if f and needed(f) and "__pycache__" not in f and (ROOT / f).is_file()})


def pack(staging: Path, out: Path, level: int) -> None:
    """``staging``'s contents as a reproducible tar, compressed with xz (all cores) at preset ``level``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    tar = subprocess.Popen(
        [
            "tar",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
            str(staging),
            "-cf",
            "-",
            ".",
        ],
        stdout=subprocess.PIPE,
    )
    with open(partial, "wb") as f:
        xz = subprocess.run(["xz", f"-{level}", "-T0", "-c"], stdin=tar.stdout, stdout=f)
    tar.stdout.close()
    if tar.wait() != 0 or xz.returncode != 0:
        partial.unlink(missing_ok=True)
        raise KitError(f"tar | xz failed for {out.name}")
    partial.rename(out)


def payload(
    name: str,
    sources: list[tuple[Path, Callable[[str], bool], str]],
    level: int,
    extra: Callable[[Path], None] | None = None,
    cache: Path = CACHE,
) -> Path:
    """The cached ``name`` payload built from wheels ``sources`` ((wheel, filter, filter's description)), plus
    what ``extra`` writes into the staging directory; rebuilt only when an input changes."""
    key = hashlib.sha256(
        json.dumps(
            [FORMAT, name, level, [(w.name, w.stat().st_size, d) for w, _, d in sources]], sort_keys=True
        ).encode()
    )
    if extra is not None:  # files outside wheels: their contents are part of the key
        with tempfile.TemporaryDirectory() as probe:
            extra(Path(probe))
            for path in sorted(Path(probe).rglob("*")):
                if path.is_file():
                    key.update(str(path.relative_to(probe)).encode() + b"\0" + path.read_bytes())
    out = cache / "payloads" / f"{name}-{key.hexdigest()[:16]}.tar.xz"
    if out.is_file():
        return out
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as staging:
        for wheel, keep, _ in sources:
            unzip(wheel, Path(staging), keep)
        if extra is not None:
            extra(Path(staging))
        pack(Path(staging), out, level)
    print(f"packed {name}: {out.stat().st_size / 2**20:.1f} MiB in {time.monotonic() - started:.0f} s", flush=True)
    return out


def _copy_project(staging: Path) -> None:
    for name in project_files():
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def _empty_pytriton(staging: Path) -> None:
    # serving.stub_env finds tritonserver with importlib.util.find_spec("pytriton"), which does not run __init__.py
    (staging / "pytriton").mkdir(parents=True, exist_ok=True)
    (staging / "pytriton" / "__init__.py").write_text("")


def build(out: Path, python_version: str = "3.12", level: int = 6, cache: Path = CACHE) -> dict:
    """Write the kit into ``out`` (replacing an earlier kit there); returns its manifest."""
    from testkit.checkpoints import uncased_vocab

    if python_version not in PYTHON_VERSIONS:
        raise KitError(f"the kit runs on Python {', '.join(PYTHON_VERSIONS)}, not {python_version}")
    if out.exists() and any(out.iterdir()) and not (out / "kit.json").is_file():
        raise KitError(f"{out} exists and is not a kit: choose another --out")
    wanted = pins(python_version)
    found = wheels(wanted, python_version, cache)
    every = (lambda name: True, "all")
    site = (site_filter, "without tests")
    parts = {
        "tritonserver": payload(
            "tritonserver",
            [(found["nvidia-pytriton"], tritonserver_filter(python_version), f"stub {python_version} only")],
            level,
            _empty_pytriton,
            cache,
        ),
        "site": payload("site", [(found[n], *site) for n in site_packages(python_version)], level, cache=cache),
        "fallback": payload(
            "fallback", [(found[canonicalize_name(n)], *every) for n in FALLBACK_PINS], level, cache=cache
        ),
        "perf_analyzer": payload(
            "perf_analyzer",
            [(found["perf-analyzer"], lambda n: n.startswith("perf_analyzer/"), "package")],
            level,
            cache=cache,
        ),
    }
    shutil.rmtree(out, ignore_errors=True)
    (out / "payload").mkdir(parents=True)
    for name, path in parts.items():
        shutil.copy2(path, out / "payload" / f"{name}.tar.xz")
    with tempfile.TemporaryDirectory() as staging:  # small and changing with every edit: never cached
        _copy_project(Path(staging))
        pack(Path(staging), out / "payload" / "project.tar.xz", level)
    shutil.copy2(uncased_vocab(), out / "payload" / "vocab.txt")
    shutil.copy2(RUN_SCRIPT, out / "run.sh")
    (out / "run.sh").chmod(0o755)
    identity = hashlib.sha256(b"".join(p.read_bytes() for p in sorted((out / "payload").iterdir())))
    manifest = {
        "id": identity.hexdigest()[:16],
        "python_version": python_version,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "xz_level": level,
        "packages": {name: wanted[name] for name in sorted(wanted)},
        "site_packages": site_packages(python_version),
        "fallback_packages": sorted(canonicalize_name(n) for n in FALLBACK_PINS),
        "payload_bytes": {p.name: p.stat().st_size for p in sorted((out / "payload").iterdir())},
    }
    (out / "kit.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.txt").write_text(README.format(python=python_version, **manifest["packages"]))
    total = size(out)
    manifest["total_bytes"] = total
    print(breakdown(out))
    if total > LIMIT_BYTES:
        raise KitError(f"the kit is {total / 2**20:.1f} MiB, over the {LIMIT_BYTES / 2**20:.0f} MiB limit")
    return manifest


def size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def breakdown(folder: Path) -> str:
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
    lines = [f"{p.stat().st_size / 2**20:8.2f} MiB  {p.relative_to(folder)}" for p in files]
    return "\n".join(
        [*lines, f"{size(folder) / 2**20:8.2f} MiB  in all ({folder}; limit {LIMIT_BYTES / 2**20:.0f} MiB)"]
    )


README = """ELECTRA QA on Triton: GPU run kit (make gpu-kit), for Python {python} on Linux x86-64.

    bash run.sh --out results          (options: --quick, --device auto|gpu|cpu, --size base|tiny, --help)

Needs on the machine: python{python} with torch (CUDA for the GPU run; PYTHON=... picks another interpreter),
its shared libpython{python}, glibc >= 2.38 (perf_analyzer), tar; nvidia-smi for GPU memory. No network.

What it does (perf/gpu_run.py): unpacks itself (into KIT_WORK, default ${{TMPDIR:-/tmp}}/electra-qa-gpu-kit-<id>),
builds the full-size random-weight checkpoint (--size base; tiny on the CPU fallback), starts the embedded Triton
with the GPU configs (torch engine, fp16, CUDA graphs; when torch sees no GPU: the CPU fallback, the same engine in
fp32), runs perf_analyzer at several concurrencies (perf/data/squad.json) and on one 140,000-character document
(perf/data/long.json), then the model card's pipeline (transformers {transformers}, fp32, same device, same
weights, same inputs) one question per call and batched; prints one table (q/s, p50/p99, x pipeline, per-step
share of server time, requests per execute, model-step windows/s, GPU memory), the share of answers equal to the
pipeline's and the targets met, and writes them to the --out folder (default: results/ here) as gpu-run.md and
gpu-run.json, with the server's and the pipeline's logs. A few minutes; --quick: shorter windows, fewer
concurrencies, a minute or two.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-kit")
    parser.add_argument(
        "--python-version",
        default="3.12",
        choices=PYTHON_VERSIONS,
        help="the GPU machine's Python (the Triton stub and the compiled wheels are for it)",
    )
    parser.add_argument(
        "--xz-level",
        type=int,
        default=6,
        choices=range(0, 10),
        metavar="0-9",
        help="xz preset (6: smallest in reasonable time; lower builds faster and larger)",
    )
    args = parser.parse_args(argv)
    try:
        manifest = build(args.out, args.python_version, args.xz_level)
    except KitError as error:
        print(f"gpu-kit: {error}", file=sys.stderr)
        return 1
    print(f"kit {manifest['id']} for Python {args.python_version}: {args.out}  (then, there: bash run.sh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
