"""Server reflection under both names clients use: `grpc.reflection.v1` and `v1alpha`.

grpcio-reflection ships only the v1alpha service. The v1 protocol is the same
messages under another package (wire-identical), so the v1 method is served by
the same servicer, and a v1 file descriptor (v1alpha's, renamed) is added to the
descriptor pool so that clients can reflect on the reflection service itself.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    source = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(source)
    old = "." + source.package + "."
    source.name = _V1_FILE
    source.package = V1_PACKAGE
    for message in source.message_type:
        for item in message.field:
            if item.type_name.startswith(old):
                item.type_name = "." + V1_PACKAGE + "." + item.type_name[len(old) :]
    for service in source.service:
        for method in service.method:
            method.input_type = "." + V1_PACKAGE + "." + method.input_type[len(old) :]
            method.output_type = "." + V1_PACKAGE + "." + method.output_type[len(old) :]
    pool.Add(source)


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serves reflection for `service_names` (plus both reflection services) on v1 and v1alpha."""
    _register_v1_descriptor(descriptor_pool.Default())
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE_NAME)
    servicer = reflection.ReflectionServicer(names)
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in (reflection.SERVICE_NAME, V1_SERVICE_NAME):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": method}),)
        )
