"""Wire facts of a protobuf file descriptor, and a comparison of two sets of them.

Only the protobuf runtime is imported here, so the module works in both the main
virtual environment (our generated code) and the compatibility one (the official
package's generated code).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2

Facts = dict[str, Any]

_TYPE_NAMES = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Type.items()}
_LABEL_NAMES = {v: k for k, v in descriptor_pb2.FieldDescriptorProto.Label.items()}


def file_proto(file_descriptor: Any) -> descriptor_pb2.FileDescriptorProto:
    """Copies a runtime ``FileDescriptor`` (a ``*_pb2.DESCRIPTOR``) into a ``FileDescriptorProto``."""
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    return proto


def _message_facts(message: descriptor_pb2.DescriptorProto, prefix: str, out: Facts) -> None:
    full_name = f"{prefix}.{message.name}"
    oneofs = [o.name for o in message.oneof_decl]
    fields: Facts = {}
    for field in message.field:
        fields[field.name] = {
            "number": field.number,
            "type": _TYPE_NAMES[field.type],
            "label": _LABEL_NAMES[field.label],
            "type_name": field.type_name,
            "oneof": oneofs[field.oneof_index] if field.HasField("oneof_index") else None,
            "proto3_optional": field.proto3_optional,
        }
    out["messages"][full_name] = {
        "fields": fields,
        "oneofs": oneofs,
        "map_entry": message.options.map_entry,
    }
    for nested in message.nested_type:
        _message_facts(nested, full_name, out)
    for enum in message.enum_type:
        _enum_facts(enum, full_name, out)


def _enum_facts(enum: descriptor_pb2.EnumDescriptorProto, prefix: str, out: Facts) -> None:
    out["enums"][f"{prefix}.{enum.name}"] = {value.name: value.number for value in enum.value}


def facts(proto: descriptor_pb2.FileDescriptorProto) -> Facts:
    """Every message, field, oneof, enum value and RPC of one file, as plain JSON-able data."""
    prefix = f".{proto.package}" if proto.package else ""
    out: Facts = {
        "package": proto.package,
        "syntax": proto.syntax,
        "messages": {},
        "enums": {},
        "services": {},
    }
    for message in proto.message_type:
        _message_facts(message, prefix, out)
    for enum in proto.enum_type:
        _enum_facts(enum, prefix, out)
    for service in proto.service:
        out["services"][f"{prefix}.{service.name}".lstrip(".")] = {
            method.name: {
                "input_type": method.input_type,
                "output_type": method.output_type,
                "client_streaming": method.client_streaming,
                "server_streaming": method.server_streaming,
            }
            for method in service.method
        }
    return out


def _compare_messages(official: Facts, ours: Facts, problems: list[str]) -> None:
    for name, theirs in official["messages"].items():
        mine = ours["messages"].get(name)
        if mine is None:
            problems.append(f"message {name}: missing")
            continue
        if theirs["map_entry"] != mine["map_entry"]:
            problems.append(f"message {name}: map_entry {mine['map_entry']}, official {theirs['map_entry']}")
        by_number = {f["number"]: field_name for field_name, f in mine["fields"].items()}
        for field_name, field in theirs["fields"].items():
            other = mine["fields"].get(field_name)
            if other is None:
                clash = by_number.get(field["number"])
                extra = f" (number {field['number']} is '{clash}' in ours)" if clash else ""
                problems.append(f"field {name}.{field_name}: missing{extra}")
                continue
            for key, value in field.items():
                if other.get(key) != value:
                    problems.append(f"field {name}.{field_name}: {key} is {other.get(key)!r}, official {value!r}")
        official_numbers = {f["number"]: n for n, f in theirs["fields"].items()}
        for field_name, field in mine["fields"].items():
            owner = official_numbers.get(field["number"])
            if field_name not in theirs["fields"] and owner is not None:
                problems.append(
                    f"field {name}.{field_name}: reuses number {field['number']} of official field '{owner}'"
                )


def _compare_enums(official: Facts, ours: Facts, problems: list[str]) -> None:
    for name, values in official["enums"].items():
        mine = ours["enums"].get(name)
        if mine is None:
            problems.append(f"enum {name}: missing")
            continue
        for value_name, number in values.items():
            if value_name not in mine:
                problems.append(f"enum value {name}.{value_name}: missing")
            elif mine[value_name] != number:
                problems.append(f"enum value {name}.{value_name}: {mine[value_name]}, official {number}")


def _compare_services(official: Facts, ours: Facts, problems: list[str]) -> None:
    for name, methods in official["services"].items():
        mine = ours["services"].get(name)
        if mine is None:
            problems.append(f"service {name}: missing")
            continue
        for method_name, method in methods.items():
            other = mine.get(method_name)
            if other is None:
                problems.append(f"rpc {name}.{method_name}: missing")
                continue
            for key, value in method.items():
                if other[key] != value:
                    problems.append(f"rpc {name}.{method_name}: {key} is {other[key]!r}, official {value!r}")


def compare(official: Facts, ours: Facts) -> list[str]:
    """Lists every official wire fact that ours lacks or states differently (empty when conformant).

    Ours may add messages, fields, enum values and RPCs, but may not reuse an official
    field number under another name.
    """
    problems: list[str] = []
    for key in ("package", "syntax"):
        if official[key] != ours[key]:
            problems.append(f"file {key}: {ours[key]!r}, official {official[key]!r}")
    _compare_messages(official, ours, problems)
    _compare_enums(official, ours, problems)
    _compare_services(official, ours, problems)
    return problems
