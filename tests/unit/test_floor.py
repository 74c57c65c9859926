"""perf/floor is model_repository's electra_qa with steps that do no work: its ensemble, tensors and batching must
stay those of the real repository, or its costs would not be the real stack's floor."""

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from client import ENSEMBLE
from tests.conftest import ROOT


def config(repository: str, name: str) -> model_config_pb2.ModelConfig:
    path = ROOT / repository / name / "config.pbtxt"
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("name", [ENSEMBLE, "tokenizer", "encoder", "decoder"])
def test_the_floor_composes_and_batches_like_the_served_repository(name):
    real, floor = config("model_repository", name), config("perf/floor", name)
    real.ClearField("parameters")
    assert floor == real
    if name != ENSEMBLE:
        assert (ROOT / "perf" / "floor" / name / "1" / "model.py").is_file()
