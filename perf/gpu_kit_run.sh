#!/usr/bin/env bash
# The GPU run kit's one command (make gpu-kit copies this file into the kit as run.sh):
#
#   bash run.sh [--quick] [--out DIR] [--device auto|gpu|cpu] [--size base|tiny] [other perf/gpu_run.py options]
#
# Unpacks the kit's payloads once into KIT_WORK (default ${TMPDIR:-/tmp}/electra-qa-gpu-kit-<kit id>), makes a
# virtual environment of the machine's Python (PYTHON, default python3: the one with torch) whose site-packages
# holds the kit's own packages (numpy 1.x, tokenizers, transformers 4.x, the slim tritonserver) ahead of the
# machine's, and runs perf/gpu_run.py in it. Triton's Python-backend stubs ignore PYTHONPATH and import from the
# environment first on PATH, hence an environment rather than path variables.
set -euo pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { echo "run.sh: no $PYTHON here (PYTHON=... names the Python with torch)" >&2; exit 2; }
read -r KIT_ID KIT_PYTHON < <("$PYTHON" -c 'import json, sys; k = json.load(open(sys.argv[1])); print(k["id"], k["python_version"])' "$KIT/kit.json")
HAVE="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$HAVE" != "$KIT_PYTHON" ]; then
  echo "run.sh: this kit is for Python $KIT_PYTHON (its Triton stub and compiled wheels); $PYTHON is $HAVE:" >&2
  echo "  PYTHON=python$KIT_PYTHON bash run.sh ..., or build a kit for it: make gpu-kit KIT_PYTHON=$HAVE" >&2
  exit 2
fi
WORK="${KIT_WORK:-${TMPDIR:-/tmp}/electra-qa-gpu-kit-$KIT_ID}"
MARK="$WORK/.electra-qa-gpu-kit"

unpack() {  # PAYLOAD DIRECTORY: tar keeps the executables' mode bits
  mkdir -p "$2"
  if command -v xz >/dev/null; then
    tar -xJf "$KIT/payload/$1.tar.xz" -C "$2"
  else
    "$PYTHON" -c 'import sys, tarfile
kw = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
tarfile.open(sys.argv[1]).extractall(sys.argv[2], **kw)' "$KIT/payload/$1.tar.xz" "$2"
  fi
}

if [ ! -e "$WORK/.unpacked" ]; then
  started=$SECONDS
  if [ -e "$WORK" ] && [ ! -e "$MARK" ] && [ -n "$(ls -A "$WORK")" ]; then
    echo "run.sh: $WORK holds other files; set KIT_WORK to an empty or new directory" >&2
    exit 2
  fi
  rm -rf "$WORK"
  mkdir -p "$WORK"
  touch "$MARK"
  "$PYTHON" -m venv --without-pip "$WORK/venv"
  SITE="$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  unpack site "$SITE"
  unpack tritonserver "$SITE"
  unpack fallback "$WORK/fallback"
  unpack perf_analyzer "$WORK/perf_analyzer"
  unpack project "$WORK/project"
  # after the kit's own packages: the project, then the machine's site directories in its own order (torch and
  # the rest), then the fallback packages for whatever the machine lacks
  {
    echo "$WORK/project"
    "$PYTHON" -c 'import os, sys, sysconfig
std = {sysconfig.get_path(k) for k in ("stdlib", "platstdlib")}
print("\n".join(p for p in sys.path[1:] if p and os.path.isdir(p) and p not in std and not p.endswith("lib-dynload")))'
    echo "$WORK/fallback"
  } > "$SITE/electra_qa_kit.pth"
  touch "$WORK/.unpacked"
  echo "run.sh: unpacked into $WORK in $((SECONDS - started)) s"
fi
cd "$WORK/project"
exec "$WORK/venv/bin/python" -m perf.gpu_run --kit "$KIT" --work "$WORK" "$@"
