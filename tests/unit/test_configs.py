"""Config edits of a repository copy (``serving.configs``) go through Triton's ModelConfig message: the named
parameters and instance kinds change, nothing else does, and a misspelt parameter is refused."""

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from serving.configs import edit, step_configs, torch_engine_on_cpu
from serving.export import copy_repository
from tests.conftest import ROOT


def parsed(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture
def repository(tmp_path):
    return copy_repository(ROOT / "model_repository", tmp_path / "model_repository")


def test_an_edit_changes_the_named_parameters_and_nothing_else(repository):
    config = repository / "encoder" / "config.pbtxt"
    before = parsed(config)
    edit(config, {"max_request_ms": "0", "intra_op_threads": "1"})
    after = parsed(config)
    assert after.parameters["max_request_ms"].string_value == "0"
    assert after.parameters["intra_op_threads"].string_value == "1"
    for message in (before, after):
        for key in ("max_request_ms", "intra_op_threads"):
            del message.parameters[key]
    assert after == before


def test_a_misspelt_parameter_is_refused_and_the_file_left_alone(repository):
    config = repository / "encoder" / "config.pbtxt"
    text = config.read_text()
    with pytest.raises(KeyError, match="has no parameter max_request_s"):
        edit(config, {"max_request_s": "0"})
    assert config.read_text() == text


def test_the_torch_engine_on_the_cpu_is_its_own_config_on_a_cpu_instance_in_fp32(repository):
    variant = repository / "encoder" / "configs" / "torch.pbtxt"
    before = parsed(variant)
    torch_engine_on_cpu(repository)
    after = parsed(variant)
    assert [g.kind for g in after.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    changed = {k for k in after.parameters if after.parameters[k] != before.parameters[k]}
    assert changed == {"device", "precision"}  # its buckets, batches and CUDA graphs' count as on the GPU
    assert after.parameters["device"].string_value == "cpu" and after.parameters["engine"].string_value == "torch"
    # the pre/post steps fall back to their default configs: one instance each on a small host
    assert [p.name for p in step_configs(repository, "tokenizer")] == ["config.pbtxt"]
    assert [p.name for p in step_configs(repository, "decoder")] == ["config.pbtxt"]


def test_the_torch_engine_on_the_cpu_can_keep_the_gpu_hosts_pre_post_steps(repository):
    torch_engine_on_cpu(repository, pre_post="gpu-host")
    for model in ("tokenizer", "decoder"):
        assert [p.name for p in step_configs(repository, model)] == ["config.pbtxt", "torch.pbtxt"]
    with pytest.raises(ValueError, match="pre_post must be default or gpu-host"):
        torch_engine_on_cpu(repository, pre_post="large")


def test_an_edited_file_is_read_as_the_checked_in_ones_are(repository):
    from runtime.backend import config_file_parameters

    config = repository / "encoder" / "config.pbtxt"
    before = config_file_parameters(config)
    edit(config, {"max_request_ms": "0"})
    assert config_file_parameters(config) == {**before, "max_request_ms": "0"}


def test_a_copys_default_config_is_still_its_onnxruntime_variant(repository):
    edit(repository / "encoder" / "config.pbtxt", {"max_request_ms": "100"})
    variant = repository / "encoder" / "configs" / "onnxruntime.pbtxt"
    assert variant.is_symlink() and parsed(variant).parameters["max_request_ms"].string_value == "100"


def test_refreshing_a_copy_restores_its_links(repository):
    variant = repository / "encoder" / "configs" / "onnxruntime.pbtxt"
    edit(variant, {"max_request_ms": "7"})  # the copy's own file now
    assert not variant.is_symlink()
    copy_repository(ROOT / "model_repository", repository, over_existing=True)
    assert variant.is_symlink() and parsed(variant) == parsed(repository / "encoder" / "config.pbtxt")
