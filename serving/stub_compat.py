"""numpy 2 and the Python-backend stub of nvidia-pytriton 0.7.0: refuse to start instead of corrupting tensors.

Root cause. ``triton_python_backend_stub`` (Triton 2.51, python_backend r24.10, the build nvidia-pytriton 0.7.0
ships for every Python version) is compiled with pybind11 v2.10.0. That pybind11 reads a dtype's item size
straight out of numpy's C struct ``PyArray_Descr`` with the numpy 1.x layout (``int elsize`` at byte 32).
numpy 2 changed the layout: byte 32 now holds the 64-bit ``flags`` field, which is 0 for the plain dtypes, so
under numpy 2 the stub sees every item size as 0:

* tensors going into a model (``PbTensor`` in ``pb_tensor.cc``: ``py::array(dtype, shape, ptr)``) get strides
  of 0 and are copied that way: every element becomes the first one. For a BYTES tensor the serialized
  buffer becomes its first byte repeated, so the 4-byte length prefix 13 reads as 0x0D0D0D0D and
  ``deserialize_bytes_tensor`` raises inside the stub's C++ constructor: ``terminate called after throwing
  an instance of 'pybind11::error_already_set' ... unpack_from requires a buffer of at least 218959121
  bytes``, the stub dies, and Triton's health endpoints stay green. Numeric inputs are silently wrong
  (``[101, 2040, 2626, 102]`` arrives as ``[101, 101, 101, 101]``);
* tensors coming out of a model (``byte_size = numpy_array.nbytes()`` = size x item size) are sent with
  0 bytes (clients fail with "cannot reshape array of size 0").

The data is destroyed in C++ before any Python code of the backend sees it, and the output sizes are
computed in C++ too, so no change to ``triton_python_backend_utils.py`` can make numpy 2 work with this
stub. Upstream fixed it by building with pybind11 v2.12 (triton-inference-server/python_backend#384,
release r24.11 / Triton 2.52); nvidia-pytriton 0.7.0 (the latest, which itself requires ``numpy<2``) predates
it. So the server refuses to start when the stub's environment has numpy >= 2, with a message that says
what to install, and never starts a server whose every request would crash:

* ``numpy_problem()``: checked by ``serving.stub_env`` before it starts tritonserver, with the interpreter the
  stub will use (the stub ignores PYTHON* environment variables, hence ``-E``);
* ``patch_backend()``: the same check at the top of the backend copy's ``triton_python_backend_utils.py``,
  which every stub imports when it starts, so a stub that finds numpy 2 anyway fails its model's loading
  (tritonserver then exits with the message) instead of crashing on the first request.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# part of the backend copy's directory name: copies made before this patch (or by an older one) are not reused
DIRECTORY_SUFFIX = "-numpy-guard1"

MESSAGE = (
    "numpy {version} ({location}) cannot be used by Triton's Python-backend stub of nvidia-pytriton 0.7.0: "
    "the stub is built with pybind11 2.10, which reads numpy's dtype structure in its numpy 1.x layout, "
    "so with numpy 2 every tensor a model receives or returns is corrupted (string inputs crash the stub). "
    "Install numpy 1.x in that environment: pip install 'numpy>=1.26,<2' (this project pins 1.26.4; numpy 1.x "
    "exists for Python 3.12 and older)"
)

_MARK = "# serving/stub_compat.py: refuse numpy >= 2"

_GUARD = """{mark} (this stub mis-reads numpy 2's dtype structure; see serving/stub_compat.py)
import numpy as _stub_compat_numpy

if int(_stub_compat_numpy.__version__.split(".")[0]) >= 2:
    import os as _stub_compat_os

    raise ImportError({message!r}.format(
        version=_stub_compat_numpy.__version__, location=_stub_compat_os.path.dirname(_stub_compat_numpy.__file__)))
del _stub_compat_numpy
# end of the serving/stub_compat.py guard

"""


def numpy_major(version: str) -> int:
    return int(version.split(".")[0])


def numpy_problem(python: str) -> str | None:
    """Why the stub run by ``python`` (the interpreter found first on the server's PATH) cannot work, or None.

    None also when numpy does not import at all: the models' own import errors say that."""
    probe = subprocess.run(
        [python, "-E", "-c", "import os, numpy; print(numpy.__version__); print(os.path.dirname(numpy.__file__))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        return None
    version, location = probe.stdout.splitlines()[:2]
    return MESSAGE.format(version=version, location=location) if numpy_major(version) >= 2 else None


def patch_backend(backend: Path) -> None:
    """Put the numpy guard at the top of ``backend/triton_python_backend_utils.py`` (a private copy)."""
    utils = backend / "triton_python_backend_utils.py"
    text = utils.read_text()
    if _MARK not in text:
        utils.write_text(_GUARD.format(mark=_MARK, message=MESSAGE) + text)
