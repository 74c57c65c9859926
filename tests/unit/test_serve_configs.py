"""Which config variant ``make serve`` asks tritonserver for (``--model-config-name``): the GPU's on a GPU,
electra's bf16 one for PRECISION=bf16 (the CPU's bf16 engine), none otherwise; a name given explicitly wins."""

from argparse import Namespace

import pytest

from serving.serve import ServerSetupError, config_args


def args(precision="fp32", device="cpu", tritonserver_args=()):
    return Namespace(precision=precision, device=device, tritonserver_args=list(tritonserver_args))


def test_fp32_and_int8_on_the_cpu_load_every_models_own_config():
    assert config_args(args("fp32")) == [] and config_args(args("int8")) == []


def test_bf16_names_the_openvino_config_on_the_cpu_whatever_gpu_is_visible():
    assert config_args(args("bf16", "cpu")) == ["--model-config-name=bf16"]
    assert config_args(args("bf16", "auto")) == ["--model-config-name=bf16"]


def test_bf16_on_a_gpu_is_refused_with_what_to_serve_instead():
    with pytest.raises(ServerSetupError, match="PRECISION=fp32"):
        config_args(args("bf16", "gpu"))


def test_the_gpu_configs_on_a_gpu_and_an_explicit_name_wins():
    assert config_args(args("fp32", "gpu")) == ["--model-config-name=gpu"]
    assert config_args(args("bf16", "gpu", ["--model-config-name=mine"])) == []
