"""serving.stub_compat: the numpy guard it adds to the backend copy changes nothing under numpy 1.x."""

from __future__ import annotations

import shutil
import subprocess
import sys

from serving import stub_compat
from serving.stub_env import triton_home

# (Python source, evaluated in the subprocess) the kinds of string tensors the models exchange: ASCII,
# multi-byte UTF-8, empty, and long enough for length prefixes with more than one non-zero byte
STRINGS = '["Who wrote it?", "Où est le café? 東京 🚀👩‍🚀", "", "x" * 300, "é" * 70000]'


def test_this_environment_has_no_numpy_problem():
    assert stub_compat.numpy_problem(sys.executable) is None


def test_the_guard_is_added_once_and_the_string_tensor_functions_are_unchanged(tmp_path):
    backend = tmp_path / "python"
    original = triton_home() / "tritonserver" / "backends" / "python" / "triton_python_backend_utils.py"
    backend.mkdir()
    shutil.copy2(original, backend / "triton_python_backend_utils.py")
    stub_compat.patch_backend(backend)
    stub_compat.patch_backend(backend)
    patched = (backend / "triton_python_backend_utils.py").read_text()
    assert patched.count("import numpy as _stub_compat_numpy") == 1
    assert patched.endswith(original.read_text())

    roundtrip = f"""
import numpy as np
import triton_python_backend_utils as pb_utils
strings = {STRINGS}
tensor = np.array([s.encode() for s in strings], dtype=np.object_)
serialized = pb_utils.serialize_byte_tensor(tensor)
buffer = np.frombuffer(serialized, dtype=np.uint8)
assert [s.decode() for s in pb_utils.deserialize_bytes_tensor(buffer)] == strings
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", roundtrip], cwd=backend, capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
