"""Triton's gRPC service for clients in other languages: its protobuf descriptors (the ``inference`` package, what
``grpc_service.proto`` and ``model_config.proto`` define) as one ``FileDescriptorSet``, from the definitions
tritonclient carries. gRPC libraries load it without ``protoc`` (Node.js: ``@grpc/proto-loader``'s
``loadFileDescriptorSetFromBuffer``; Go, Java, C#: their descriptor-set loaders).

    python -m client.protos triton.protoset
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def descriptor_set() -> bytes:
    """The serialized ``FileDescriptorSet`` of Triton's gRPC service and every file it depends on."""
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import service_pb2

    found = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:  # dependencies first, as loaders expect
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        found.file.append(proto)

    add(service_pb2.DESCRIPTOR)
    return found.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client.protos", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the FileDescriptorSet to write (e.g. triton.protoset)")
    args = parser.parse_args(argv)
    args.out.write_bytes(descriptor_set())
    return 0


if __name__ == "__main__":
    sys.exit(main())
