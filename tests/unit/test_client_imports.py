"""The client package imports its names on first use: every name of ``__all__`` is there (``dir``, ``import *``)
as its module's own object, and ``import client`` (``client.names``: the ensemble and the default address, what
serving.admin and the containers' probes import) costs no tritonclient import."""

import importlib
import subprocess
import sys

import pytest

import client
from client.names import DEFAULT_URL, ENSEMBLE
from tests.conftest import ROOT


def test_every_public_name_is_its_modules_own_and_listed():
    assert {*client._LAZY, "DEFAULT_URL", "ENSEMBLE"} == set(client.__all__)
    for name, module in client._LAZY.items():
        assert getattr(client, name) is getattr(importlib.import_module(module), name), name
    assert (client.DEFAULT_URL, client.ENSEMBLE) == (DEFAULT_URL, ENSEMBLE)
    assert set(client.__all__) <= set(dir(client))
    namespace: dict = {}
    exec("from client import *", namespace)
    assert set(client.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="module 'client' has no attribute 'TritonQa'"):
        client.TritonQa  # noqa: B018


def test_the_names_and_the_probes_import_no_tritonclient():
    script = (
        "import sys, serving.admin; from client import DEFAULT_URL, ENSEMBLE; "
        "print(*sorted(m for m in sys.modules if m.split('.')[0] in ('client', 'tritonclient', 'grpc', 'numpy')))"
    )
    found = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert found.stdout.split() == ["client", "client.names"]


def test_the_makefiles_defaults_are_the_clients():
    makefile = (ROOT / "Makefile").read_text()
    assert f"\nURL ?= {DEFAULT_URL}\n" in makefile and f"\nPERF_MODEL ?= {ENSEMBLE}\n" in makefile
