"""Payload conversion between Python values and the strings the sidecar stores.

Every user payload (inputs, outputs, event data, custom status, entity state)
goes through a :class:`DataConverter`. The default, :class:`JsonDataConverter`,
writes plain JSON and rebuilds typed values only from a type the *caller*
supplies (``return_type=``, ``data_type=``, an annotation). Type names found
inside a payload are never looked at, so a payload cannot make the SDK
instantiate anything.

Encoding (value -> JSON):

- ``str``/``int``/``float``/``bool``/``None`` as themselves; lists, tuples and
  namedtuples as arrays; mappings as objects (keys become strings);
  sets as sorted arrays (so the output is deterministic).
- objects whose type has ``to_json`` -> ``type(obj).to_json(obj)`` (checked
  first, so it overrides every rule below); enums -> their value;
  ``datetime``/``date``/``time`` -> ISO 8601; ``timedelta`` -> seconds;
  dataclasses -> objects of their fields; ``SimpleNamespace`` -> object;
  ``UUID``/``Decimal`` -> string; ``bytes`` -> base64 string.

Decoding (JSON -> value) is driven by ``target_type`` only. Supported targets:
builtins, dataclasses (nested, forward references resolved against the
class's module), namedtuples (from an array or an object), enums (by value,
then by member name), ``TypedDict``, ``SimpleNamespace``, date/time types,
``UUID``, ``Decimal``, ``bytes``, types with a ``from_json(value)``
classmethod/staticmethod (``from_json(value, converter)`` also receives the
converter), and ``list[X]``, ``Sequence[X]``, ``set[X]``, ``tuple[...]``,
``dict[K, V]``, ``X | None``, ``Union[...]``, ``Literal[...]``, ``Annotated``.

Policy: ``None`` (JSON ``null``) decodes to ``None`` for any target. Missing
dataclass/namedtuple fields take their defaults; a missing required field is an
error. Extra object keys are ignored, so older code can read payloads written
by newer code. A value that cannot be shaped into the target raises
:class:`DataConversionError` (both a ``TypeError`` and a ``ValueError``) whose
message names the target type and the path to the offending field. With
``JsonDataConverter(strict=False)`` the raw decoded value is returned instead,
as Microsoft's SDK does.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import inspect
import json
import logging
import sys
import types
import typing
import uuid
import weakref
from abc import ABC, abstractmethod
from collections import abc as cabc
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

__all__ = [
    "DataConversionError",
    "DataConverter",
    "JsonDataConverter",
    "DEFAULT_DATA_CONVERTER",
    "default_converter",
    "input_type_of",
    "return_type_of",
]

logger = logging.getLogger("durabletask")

_NONE_TYPE = type(None)
_JSON_SCALARS: frozenset[type] = frozenset({str, int, float, bool, _NONE_TYPE})


class DataConverter(ABC):
    """Turns values into payload strings and back.

    Implementations must be deterministic: the same value always serializes
    to the same string, or orchestration replay would see different inputs.
    """

    @abstractmethod
    def serialize(self, value: Any) -> str | None:
        """Encode a value; None stays None (no payload)."""

    @abstractmethod
    def deserialize(self, data: str | None, target_type: type | None = None) -> Any:
        """Decode a payload (None or "" -> None), shaped as ``target_type`` when given."""

    def coerce(self, value: Any, target_type: type | None = None) -> Any:
        """Shape an already-decoded value as ``target_type``."""
        return value

    def can_reconstruct(self, target_type: Any) -> bool:
        """True when this converter can rebuild ``target_type`` from a payload.

        The SDK only applies an annotated input/return type when this is True;
        otherwise the plain decoded value is passed through.
        """
        return False


class DataConversionError(TypeError, ValueError):
    """A decoded payload could not be shaped into the requested type."""

    def __init__(self, message: str, *, target_type: Any = None, path: str = "") -> None:
        super().__init__(message)
        self.target_type = target_type
        self.path = path


class JsonDataConverter(DataConverter):
    """JSON payloads with type-directed decoding (see the module docstring).

    ``strict`` (default True): a payload that does not fit ``target_type``
    raises :class:`DataConversionError`. With ``strict=False`` the raw decoded
    value is returned and the mismatch is logged at debug level.
    """

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict

    def serialize(self, value: Any) -> str | None:
        if value is None:
            return None
        try:
            return json.dumps(_encode(value))
        except RecursionError:
            raise ValueError(
                f"cannot serialize {type(value).__name__}: circular reference or nesting too deep"
            ) from None

    def deserialize(self, data: str | bytes | None, target_type: Any = None) -> Any:
        if data is None or data == "" or data == b"":
            return None
        value = json.loads(data)
        if target_type is None:
            return value
        return self.coerce(value, target_type)

    def coerce(self, value: Any, target_type: Any = None) -> Any:
        if target_type is None or value is None:
            return value
        try:
            return _coerce(value, target_type, self)
        except _Mismatch as err:
            path = "".join(reversed(err.path)).lstrip(".")
            where = f" at '{path}'" if path else ""
            message = f"cannot convert payload to {_type_name(target_type)}{where}: {err.problem}"
            if self.strict:
                raise DataConversionError(message, target_type=target_type, path=path) from err.__cause__
            logger.debug("%s; returning the decoded value unchanged", message)
            return value

    def can_reconstruct(self, target_type: Any) -> bool:
        if target_type is None or target_type is Any:
            return False
        origin = typing.get_origin(target_type)
        if origin is not None:
            args = typing.get_args(target_type)
            if origin is typing.Annotated:
                return self.can_reconstruct(args[0])
            if origin is typing.Union or origin is types.UnionType:
                return any(self.can_reconstruct(a) for a in args if a is not _NONE_TYPE)
            if origin is typing.Literal:
                return False
            if origin in _SEQUENCE_ORIGINS or origin in _SET_ORIGINS or origin in _MAPPING_ORIGINS \
                    or origin is tuple:
                return any(self.can_reconstruct(a) for a in args if a is not Ellipsis)
            return isinstance(origin, type) and self.can_reconstruct(origin)
        supertype = getattr(target_type, "__supertype__", None)
        if supertype is not None:
            return self.can_reconstruct(supertype)
        if not isinstance(target_type, type):
            return False
        if callable(getattr(target_type, "from_json", None)):
            return True
        if dataclasses.is_dataclass(target_type) or _is_namedtuple(target_type):
            return True
        if typing.is_typeddict(target_type):
            return True
        return issubclass(target_type, _RECONSTRUCTABLE_LEAVES)


DEFAULT_DATA_CONVERTER: DataConverter = JsonDataConverter()


def default_converter() -> DataConverter:
    """The converter used when none is configured (a shared JsonDataConverter)."""
    return DEFAULT_DATA_CONVERTER


# ---------------------------------------------------------------------------
# Annotations of orchestrator / activity / entity functions.
# ---------------------------------------------------------------------------


_REMEMBERED: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _remembered(fn: Any, key: Any, work_out: Callable[[], Any]) -> Any:
    """``work_out()``, done once per function and key (each time for a name or other value that
    cannot be weakly referenced): replay asks for the same annotations for every task on every turn."""
    try:
        known = _REMEMBERED.setdefault(fn, {})
    except TypeError:
        return work_out()
    if key not in known:
        known[key] = work_out()
    return known[key]


def input_type_of(fn: Any, position: int = 1) -> Any:
    """The annotated type of ``fn``'s input parameter, or None (remembered per function).

    ``position`` is the index of the input among the positional parameters
    (1 for ``(ctx, input)`` functions). String annotations are resolved.
    Returns None when the parameter is missing, unannotated, unresolvable or
    ``Any``.
    """
    return _remembered(fn, position, lambda: _input_type_of(fn, position))


def _input_type_of(fn: Any, position: int) -> Any:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    positional = [
        p for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) <= position:
        return None
    param = positional[position]
    if param.annotation is inspect.Parameter.empty:
        return None
    annotation = _resolved_callable_hints(fn).get(param.name, param.annotation)
    return _meaningful(annotation)


def return_type_of(fn: Any) -> Any:
    """The annotated result type of ``fn``, or None (remembered per function).

    For a generator orchestrator annotated ``Generator[Y, S, R]`` this is ``R``.
    """
    return _remembered(fn, "return", lambda: _return_type_of(fn))


def _return_type_of(fn: Any) -> Any:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if signature.return_annotation is inspect.Signature.empty:
        return None
    annotation = _resolved_callable_hints(fn).get("return", signature.return_annotation)
    if typing.get_origin(annotation) in (cabc.Generator, typing.Generator):
        args = typing.get_args(annotation)
        annotation = args[2] if len(args) == 3 else None
    elif typing.get_origin(annotation) in (cabc.Iterator, cabc.Iterable):
        return None
    return _meaningful(annotation)


def _meaningful(annotation: Any) -> Any:
    if annotation is None or annotation is Any or annotation is _NONE_TYPE:
        return None
    if isinstance(annotation, (str, typing.ForwardRef)):
        return None
    return annotation


def _resolved_callable_hints(fn: Any) -> dict[str, Any]:
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isfunction(target) or inspect.ismethod(target)) and callable(target) \
            and not isinstance(target, type):
        target = type(target).__call__
    try:
        return typing.get_type_hints(target)
    except Exception:
        namespace = dict(getattr(inspect.unwrap(target), "__globals__", {}))
        raw = getattr(target, "__annotations__", {}) or {}
        return {name: _deep_resolve(ann, namespace) for name, ann in raw.items()}


# ---------------------------------------------------------------------------
# Encoding.
# ---------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """Turn ``value`` into a tree of JSON-native values."""
    kind = type(value)
    if kind in _JSON_SCALARS:
        return value
    if kind is list or kind is tuple:
        return [_encode(item) for item in value]
    if kind is dict:
        return {_encode_key(k): _encode(v) for k, v in value.items()}
    hook = getattr(kind, "to_json", None)
    if callable(hook):
        return _encode(hook(value))
    if isinstance(value, enum.Enum):
        return _encode(value.value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, SimpleNamespace):
        return {_encode_key(k): _encode(v) for k, v in vars(value).items()}
    if isinstance(value, cabc.Mapping):
        return {_encode_key(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, (set, frozenset)):
        items = [_encode(item) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(
        f"cannot serialize object of type '{kind.__module__}.{kind.__qualname__}' to JSON: "
        "use a dataclass, or give the type a to_json() method"
    )


def _encode_key(key: Any) -> str:
    if type(key) is str:
        return key
    if isinstance(key, enum.Enum):
        return _encode_key(key.value)
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, str):
        return str(key)
    if isinstance(key, int):
        return str(int(key))
    if isinstance(key, float):
        return json.dumps(float(key))
    if isinstance(key, (dt.datetime, dt.date, dt.time)):
        return key.isoformat()
    if isinstance(key, (uuid.UUID, decimal.Decimal)):
        return str(key)
    raise TypeError(f"cannot serialize a mapping key of type '{type(key).__name__}' to JSON")


# ---------------------------------------------------------------------------
# Type-directed decoding.
# ---------------------------------------------------------------------------


class _Mismatch(Exception):
    """Internal: a value does not fit a type; ``path`` is collected innermost first."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


_SEQUENCE_ORIGINS: frozenset[Any] = frozenset({
    list, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection, cabc.Reversible,
})
_SET_ORIGINS: frozenset[Any] = frozenset({set, frozenset, cabc.Set, cabc.MutableSet})
_MAPPING_ORIGINS: frozenset[Any] = frozenset({dict, cabc.Mapping, cabc.MutableMapping})
_RECONSTRUCTABLE_LEAVES = (
    enum.Enum, dt.datetime, dt.date, dt.time, dt.timedelta, uuid.UUID, decimal.Decimal,
    bytes, SimpleNamespace,
)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _expected(tp: Any, value: Any) -> _Mismatch:
    return _Mismatch(f"expected {_type_name(tp)}, got {_json_kind(value)}")


def _coerce(value: Any, tp: Any, conv: DataConverter) -> Any:
    if value is None or tp is None or tp is Any:
        return value
    if isinstance(tp, (str, typing.ForwardRef, typing.TypeVar)):
        return value
    origin = typing.get_origin(tp)
    if origin is not None:
        return _coerce_generic(value, tp, origin, conv)
    supertype = getattr(tp, "__supertype__", None)
    if supertype is not None:
        return _coerce(value, supertype, conv)
    if tp is _NONE_TYPE:
        raise _expected(tp, value)
    if not isinstance(tp, type):
        return value
    return _coerce_class(value, tp, conv)


def _coerce_generic(value: Any, tp: Any, origin: Any, conv: DataConverter) -> Any:
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _coerce(value, args[0], conv)
    if origin is typing.Union or origin is types.UnionType:
        return _coerce_union(value, tp, [a for a in args if a is not _NONE_TYPE], conv)
    if origin is typing.Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return allowed
        raise _Mismatch(f"expected one of {list(args)!r}, got {_json_kind(value)}")
    if origin in _SEQUENCE_ORIGINS:
        if not isinstance(value, (list, tuple)):
            raise _expected(tp, value)
        return _coerce_items(value, args[0] if args else None, conv)
    if origin in _SET_ORIGINS:
        if not isinstance(value, (list, tuple, set, frozenset)):
            raise _expected(tp, value)
        items = _coerce_items(list(value), args[0] if args else None, conv)
        return frozenset(items) if origin is frozenset else set(items)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _expected(tp, value)
        return _coerce_tuple(value, tp, args, conv)
    if origin in _MAPPING_ORIGINS:
        if not isinstance(value, dict):
            raise _expected(tp, value)
        key_type, value_type = (args[0], args[1]) if len(args) == 2 else (None, None)
        return _coerce_mapping(value, key_type, value_type, conv)
    if isinstance(origin, type):
        return _coerce_class(value, origin, conv)
    return value


def _coerce_union(value: Any, tp: Any, members: list[Any], conv: DataConverter) -> Any:
    if len(members) == 1:
        return _coerce(value, members[0], conv)
    for member in members:
        if member is Any or (isinstance(member, type) and _already_fits(value, member)):
            return value
    problems = []
    for member in members:
        try:
            return _coerce(value, member, conv)
        except _Mismatch as err:
            problems.append(f"{_type_name(member)}: {err.problem}")
    raise _Mismatch(f"{_json_kind(value)} fits none of {_type_name(tp)} ({'; '.join(problems)})")


def _already_fits(value: Any, tp: type) -> bool:
    if isinstance(value, bool) and tp in (int, float):
        return False
    return _is_instance(value, tp) and not (tp is float and isinstance(value, int))


def _is_instance(value: Any, tp: type) -> bool:
    try:
        return isinstance(value, tp)
    except TypeError:
        return False


def _coerce_items(items: Any, item_type: Any, conv: DataConverter) -> list[Any]:
    if item_type is None or item_type is Any:
        return list(items)
    out = []
    for index, item in enumerate(items):
        try:
            out.append(_coerce(item, item_type, conv))
        except _Mismatch as err:
            err.path.append(f"[{index}]")
            raise
    return out


def _coerce_tuple(value: Any, tp: Any, args: tuple[Any, ...], conv: DataConverter) -> tuple[Any, ...]:
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce_items(value, args[0], conv))
    if len(value) != len(args):
        raise _Mismatch(f"expected {_type_name(tp)} ({len(args)} items), got an array of {len(value)}")
    out = []
    for index, (item, item_type) in enumerate(zip(value, args, strict=True)):
        try:
            out.append(_coerce(item, item_type, conv))
        except _Mismatch as err:
            err.path.append(f"[{index}]")
            raise
    return tuple(out)


def _coerce_mapping(value: dict[Any, Any], key_type: Any, value_type: Any, conv: DataConverter) -> dict[Any, Any]:
    keep_keys = key_type is None or key_type is Any or key_type is str
    keep_values = value_type is None or value_type is Any
    if keep_keys and keep_values:
        return dict(value)
    out = {}
    for key, item in value.items():
        try:
            new_key = key if keep_keys else _coerce_key(key, key_type, conv)
            out[new_key] = item if keep_values else _coerce(item, value_type, conv)
        except _Mismatch as err:
            err.path.append(f"[{key!r}]")
            raise
    return out


def _coerce_key(key: Any, key_type: Any, conv: DataConverter) -> Any:
    try:
        return _coerce(key, key_type, conv)
    except _Mismatch:
        if not isinstance(key, str):
            raise
    try:
        parsed = json.loads(key)
    except ValueError:
        raise _Mismatch(f"mapping key {key!r} is not a valid {_type_name(key_type)}") from None
    try:
        return _coerce(parsed, key_type, conv)
    except _Mismatch:
        raise _Mismatch(f"mapping key {key!r} is not a valid {_type_name(key_type)}") from None


def _coerce_class(value: Any, cls: type, conv: DataConverter) -> Any:
    if type(value) is cls:
        return value
    hook = getattr(cls, "from_json", None)
    if callable(hook):
        return _call_from_json(cls, hook, value, conv)
    if cls is bool:
        if isinstance(value, bool):
            return value
        raise _expected(cls, value)
    if cls is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _expected(cls, value)
    if cls is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _expected(cls, value)
    if cls is str:
        if isinstance(value, str):
            return value
        raise _expected(cls, value)
    if issubclass(cls, enum.Enum):
        return _coerce_enum(value, cls)
    if issubclass(cls, (dt.date, dt.time, dt.timedelta)):
        return _coerce_temporal(value, cls)
    if dataclasses.is_dataclass(cls):
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise _expected(cls, value)
        return _build_dataclass(cls, value, conv)
    if _is_namedtuple(cls):
        if isinstance(value, cls):
            return value
        return _build_namedtuple(cls, value, conv)
    if typing.is_typeddict(cls):
        if not isinstance(value, dict):
            raise _expected(cls, value)
        return _build_typeddict(cls, value, conv)
    if cls is SimpleNamespace:
        if not isinstance(value, dict):
            raise _expected(cls, value)
        return SimpleNamespace(**value)
    if cls in (bytes, bytearray):
        if not isinstance(value, str):
            raise _expected(cls, value)
        try:
            return cls(base64.b64decode(value, validate=True))
        except ValueError as err:
            raise _Mismatch(f"expected base64 text for {cls.__name__}: {err}") from err
    if cls in (list, tuple, set, frozenset):
        if not isinstance(value, (list, tuple)):
            raise _expected(cls, value)
        return cls(value)
    if cls is dict:
        if not isinstance(value, dict):
            raise _expected(cls, value)
        return value
    if _is_instance(value, cls):
        return value
    factory: Any = cls
    try:
        return factory(value)
    except Exception as err:
        raise _Mismatch(
            f"cannot build {cls.__qualname__} from {_json_kind(value)}: {type(err).__name__}: {err}"
        ) from err


def _call_from_json(cls: type, hook: Any, value: Any, conv: DataConverter) -> Any:
    try:
        if _hook_takes_converter(hook):
            return hook(value, conv)
        return hook(value)
    except DataConversionError as err:
        raise _Mismatch(str(err)) from err
    except Exception as err:
        raise _Mismatch(
            f"{cls.__qualname__}.from_json() raised {type(err).__name__}: {err}"
        ) from err


def _hook_takes_converter(hook: Any) -> bool:
    try:
        parameters = list(inspect.signature(hook).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2 and positional[1].name == "converter"


def _coerce_enum(value: Any, cls: type[enum.Enum]) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except (ValueError, TypeError):
        pass
    if isinstance(value, str) and value in cls.__members__:
        return cls.__members__[value]
    allowed = [member.value for member in cls]
    raise _Mismatch(f"{_json_kind(value)} is not a value of {cls.__qualname__} (values: {allowed!r})")


def _coerce_temporal(value: Any, cls: type) -> Any:
    if isinstance(value, cls) and not (cls is dt.date and isinstance(value, dt.datetime)):
        return value
    if issubclass(cls, dt.timedelta):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(seconds=value)
        raise _expected(cls, value)
    if not isinstance(value, str):
        raise _expected(cls, value)
    text = value
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return cls.fromisoformat(text)  # type: ignore[attr-defined]
    except ValueError as err:
        raise _Mismatch(f"expected an ISO 8601 {cls.__qualname__}, got {_json_kind(value)}") from err


def _is_namedtuple(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")


@functools.lru_cache(maxsize=1024)
def _field_types(owner: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass/namedtuple/TypedDict (cached per type)."""
    namespace: dict[str, Any] = dict(getattr(sys.modules.get(owner.__module__), "__dict__", {}))
    namespace.setdefault(owner.__name__, owner)
    try:
        hints = typing.get_type_hints(owner, globalns=namespace)
    except Exception:
        hints = {}
        for klass in reversed(owner.__mro__):
            for name, annotation in (klass.__dict__.get("__annotations__") or {}).items():
                hints[name] = annotation
    return {name: _deep_resolve(annotation, namespace) for name, annotation in hints.items()}


def _deep_resolve(tp: Any, namespace: dict[str, Any]) -> Any:
    """Evaluate string/ForwardRef leaves of an annotation written by the caller."""
    if isinstance(tp, typing.ForwardRef):
        tp = tp.__forward_arg__
    if isinstance(tp, str):
        try:
            tp = eval(tp, namespace)  # noqa: S307 - source code annotations, never payload data
        except Exception:
            return tp
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is None or not args or origin is typing.Literal:
        return tp
    resolved = tuple(_deep_resolve(a, namespace) for a in args)
    if resolved == args:
        return tp
    if origin is typing.Union or origin is types.UnionType:
        return typing.Union[resolved]
    if origin is typing.Annotated:
        return tp
    try:
        return origin[resolved if len(resolved) > 1 else resolved[0]]
    except TypeError:
        return tp


def _build_dataclass(cls: type, data: dict[str, Any], conv: DataConverter) -> Any:
    hints = _field_types(cls)
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.name in data:
            try:
                kwargs[field.name] = _coerce(data[field.name], hints.get(field.name), conv)
            except _Mismatch as err:
                err.path.append(f".{field.name}")
                raise
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise _Mismatch(f"missing required field '{field.name}' of {cls.__qualname__}")
    try:
        return cls(**kwargs)
    except Exception as err:
        raise _Mismatch(f"{cls.__qualname__}(...) raised {type(err).__name__}: {err}") from err


def _build_namedtuple(cls: Any, value: Any, conv: DataConverter) -> Any:
    fields: tuple[str, ...] = cls._fields
    defaults: dict[str, Any] = getattr(cls, "_field_defaults", {})
    hints = _field_types(cls)
    if isinstance(value, (list, tuple)):
        if len(value) > len(fields):
            raise _Mismatch(f"expected at most {len(fields)} items for {cls.__qualname__}, got {len(value)}")
        given = dict(zip(fields[: len(value)], value, strict=True))
    elif isinstance(value, dict):
        given = {name: value[name] for name in fields if name in value}
    else:
        raise _expected(cls, value)
    items = []
    for name in fields:
        if name in given:
            try:
                items.append(_coerce(given[name], hints.get(name), conv))
            except _Mismatch as err:
                err.path.append(f".{name}")
                raise
        elif name in defaults:
            items.append(defaults[name])
        else:
            raise _Mismatch(f"missing required field '{name}' of {cls.__qualname__}")
    return cls(*items)


def _build_typeddict(cls: Any, value: dict[str, Any], conv: DataConverter) -> dict[str, Any]:
    hints = _field_types(cls)
    for name in getattr(cls, "__required_keys__", ()):
        if name not in value:
            raise _Mismatch(f"missing required key '{name}' of {cls.__qualname__}")
    out = dict(value)
    for name, item in value.items():
        if name in hints:
            try:
                out[name] = _coerce(item, hints[name], conv)
            except _Mismatch as err:
                err.path.append(f".{name}")
                raise
    return out
