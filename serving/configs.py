"""Edits of a model repository's copy (``serving.export.copy_repository``), through Triton's own ``ModelConfig``
message in protobuf's text format (tritonclient's ``model_config_pb2``): tests, ``make bench`` and the GPU run's
CPU fallback change a parameter or an instance group of their copy by name, never the checked-in files and never
by rewriting text. An edited file loses its comments (the checked-in one keeps them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def edit(path: Path, parameters: Mapping[str, str] | None = None, instance_kind: str | None = None) -> None:
    """Set ``parameters`` (each must exist in the file: a misspelt key is refused) and the kind of every instance
    group (``KIND_CPU``, ``KIND_GPU``) of the config file ``path``."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    unknown = sorted(set(parameters or {}) - set(config.parameters))
    if unknown:
        raise KeyError(f"{path} has no parameter {', '.join(unknown)}")
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    if instance_kind is not None:
        for group in config.instance_group:
            group.kind = model_config_pb2.ModelInstanceGroup.Kind.Value(instance_kind)
    if path.is_symlink():  # a variant that is the default config: the copy's own file from now on
        path.unlink()
    path.write_text(text_format.MessageToString(config))


def step_configs(repository: Path, model: str) -> list[Path]:
    """``model``'s default config and its engines' variants in ``repository``."""
    directory = repository / model
    return [directory / "config.pbtxt", *sorted((directory / "configs").glob("*.pbtxt"))]


def torch_engine_on_cpu(repository: Path, pre_post: str = "default") -> None:
    """The torch engine's variants in a repository copy, made to run the GPU path's code on the CPU (where no GPU
    is): its model step on a CPU instance in fp32 (its length buckets and batching as on the GPU; the CUDA graphs'
    count still checked at load, none captured on a CPU). ``pre_post``: ``default`` runs the tokenizer and
    decoder as the default configs have them (one instance each: a few cores), ``gpu-host`` keeps the GPU host's
    variants (their instance counts)."""
    edit(
        repository / "encoder" / "configs" / "torch.pbtxt",
        {"device": "cpu", "precision": "fp32"},
        instance_kind="KIND_CPU",
    )
    if pre_post == "default":
        for model in ("tokenizer", "decoder"):
            (repository / model / "configs" / "torch.pbtxt").unlink(missing_ok=True)
    elif pre_post != "gpu-host":
        raise ValueError(f"pre_post must be default or gpu-host, got {pre_post!r}")
