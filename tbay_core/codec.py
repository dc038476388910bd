"""Results and errors to and from JSON text.

A replayed result must be *equal* to the fresh one, type included: a caller
that got a tuple, a ``datetime`` or a dataclass the first time must not get a
list, a string or a dict from the cache. Results are therefore stored as
tagged JSON: values JSON cannot tell apart get a one-key tag object
(``{"$tuple": [...]}``, ``{"$bytes": "..."}``), and user dict keys that start
with ``$`` are escaped with a second ``$`` so user data can never be mistaken
for a tag.

What cannot be stored exactly raises :class:`Unstorable` (the engine records
the execution as succeeded-but-not-replayable) instead of being stringified:
a wrong value replayed later is worse than a clear error. That includes
subclasses of built-in types (a ``str`` subclass would come back as a plain
``str``), ``OrderedDict``/``defaultdict``, and pydantic models that do not
survive ``model_dump(mode="json")`` / ``model_validate`` unchanged (strict
models, ``Any`` fields holding tuples, private attributes, ...). Encoding
checks each such model by rebuilding it once, so the failure surfaces at
store time, not at replay time.

Decoding rebuilds classes (Enum, dataclass, pydantic model, namedtuple) only
from classes the process already has: the return annotation, the classes
this process has encoded, or an already-imported module. Stored data never
chooses what gets imported or called; a class that cannot be found raises
:class:`NotReplayable` saying which module to import.

Decoding is on the hot path of every cache hit: text without any tag or
escaped key (no ``"$`` in it) is handed straight to the C JSON decoder.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import inspect
import json
import math
import sys
import traceback
import typing
import uuid
from collections.abc import Callable, Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "Unstorable",
    "NotReplayable",
    "encode_result",
    "decode_result",
    "describe_error",
]

_MAX_DEPTH = 200  # one Python frame per level; well inside the default recursion limit
_MAX_TRACEBACK_CHARS = 20_000
_MAX_MESSAGE_CHARS = 10_000
# Python refuses to print or parse ints of more than 4300 decimal digits by
# default; ints beyond 2**14000 (about 4215 digits) are stored in hex.
_BIG_INT = 1 << 14000


class Unstorable(Exception):
    """A result (or part of it) cannot be stored so that it replays equal.

    Raised by :func:`encode_result`; the message names the path of the part
    (``result['items'][2]``) and says why.
    """


class NotReplayable(Exception):
    """A stored result cannot be rebuilt in this process.

    Usually a class named in the stored result is not loaded here; the
    message names the class and the module to import.
    """


# "module:qualname" -> class, filled as classes are encoded so that a result
# stored by this process can be rebuilt even when the class is local or the
# function has no return annotation.
_REGISTRY: dict[str, type] = {}


def _class_name(t: type) -> str:
    return f"{t.__module__}:{t.__qualname__}"


def _type_name(t: type) -> str:
    module = getattr(t, "__module__", None)
    if module in (None, "builtins"):
        return t.__qualname__
    return f"{module}.{t.__qualname__}"


def _a(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


# ---------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------


class _Bad(Exception):
    """Internal: a part of the result cannot be stored; the path grows while unwinding."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what
        self.segments: list[str] = []

    def message(self) -> str:
        return "result" + "".join(reversed(self.segments)) + " " + self.what


_BUILTIN_BASES: tuple[type, ...] = (bool, int, float, str, bytes, bytearray, list, tuple, dict, set, frozenset)
_BUILTIN_BASES += (datetime, date, time, timedelta, Decimal, uuid.UUID)


def _unsupported(v: Any) -> _Bad:
    t = type(v)
    name = _type_name(t)
    for base in _BUILTIN_BASES:
        if isinstance(v, base):
            base_name = _type_name(base)
            return _Bad(
                f"is {_a(name)} (a subclass of {base_name}), which tbay cannot store: "
                f"a replay would return a plain {base_name}. Return a plain {base_name}, "
                "a dataclass or a pydantic model instead."
            )
    return _Bad(
        f"is {_a(name)}, which tbay cannot store. Return value types (str, int, float, "
        "list, dict, tuple, datetime, Decimal, dataclass, pydantic model, ...) instead."
    )


def _enter(v: Any, depth: int, active: set[int]) -> int:
    if depth >= _MAX_DEPTH:
        raise _Bad(f"is nested more than {_MAX_DEPTH} levels deep, which tbay cannot store")
    i = id(v)
    if i in active:
        raise _Bad("contains itself (a cyclic structure), which tbay cannot store")
    active.add(i)
    return i


def _enc(v: Any, depth: int, active: set[int]) -> Any:
    t = type(v)
    if t is str or t is bool or v is None:
        return v
    if t is int:
        if -_BIG_INT < v < _BIG_INT:
            return v
        return {"$int": format(v, "x")}
    if t is float:
        if math.isfinite(v):
            return v  # json keeps 1.0 a float and -0.0 negative
        return {"$float": "nan" if v != v else ("inf" if v > 0 else "-inf")}
    if t is list:
        return _enc_items(v, depth, active)
    if t is dict:
        return _enc_dict(v, depth, active)
    handler = _ENCODERS.get(t)
    if handler is None:
        handler = _encoder_for(t)
    return handler(v, depth, active)


def _enc_items(v: Any, depth: int, active: set[int]) -> list[Any]:
    i = _enter(v, depth, active)
    depth += 1
    out: list[Any] = []
    append = out.append
    idx = 0
    try:
        for idx, x in enumerate(v):  # noqa: B007 - idx is read in the handler
            t = type(x)
            if t is str or t is bool or x is None or (t is float and math.isfinite(x)):
                append(x)
            else:
                append(_enc(x, depth, active))
    except _Bad as e:
        e.segments.append(f"[{idx}]")
        raise
    active.discard(i)
    return out


def _enc_dict(v: dict[Any, Any], depth: int, active: set[int]) -> Any:
    i = _enter(v, depth, active)
    depth += 1
    for k in v:
        if type(k) is not str:
            break
    else:
        out: dict[str, Any] = {}
        k = None
        try:
            for k, x in v.items():
                t = type(x)
                if t is str or t is bool or x is None or (t is float and math.isfinite(x)):
                    out["$" + k if k[:1] == "$" else k] = x
                else:
                    out["$" + k if k[:1] == "$" else k] = _enc(x, depth, active)
        except _Bad as e:
            e.segments.append(f"[{k!r}]")
            raise
        active.discard(i)
        return out
    pairs: list[list[Any]] = []
    n = 0
    try:
        for n, k in enumerate(v):  # noqa: B007
            pairs.append([_enc(k, depth, active), None])
    except _Bad as e:
        e.segments.append(f".keys()[{n}]")
        raise
    try:
        for pair, (k, x) in zip(pairs, v.items(), strict=True):  # noqa: B007
            pair[1] = _enc(x, depth, active)
    except _Bad as e:
        e.segments.append(f"[{_short_repr(k)}]")
        raise
    active.discard(i)
    return {"$map": pairs}


def _short_repr(k: Any) -> str:
    try:
        text = repr(k)
    except Exception:
        return f"<{_type_name(type(k))}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _enc_tuple(v: Any, depth: int, active: set[int]) -> Any:
    return {"$tuple": _enc_items(v, depth, active)}


def _enc_set(v: Any, depth: int, active: set[int]) -> Any:
    try:
        return {"$set": _enc_items(v, depth, active)}
    except _Bad as e:
        _set_segment(e)
        raise


def _enc_frozenset(v: Any, depth: int, active: set[int]) -> Any:
    try:
        return {"$frozenset": _enc_items(v, depth, active)}
    except _Bad as e:
        _set_segment(e)
        raise


def _set_segment(e: _Bad) -> None:
    # Sets have no index a reader could use; say "an element" instead.
    if e.segments and e.segments[-1].startswith("[") and e.segments[-1][1:-1].isdigit():
        e.segments[-1] = "[<set element>]"


def _enc_bytes(v: Any, depth: int, active: set[int]) -> Any:
    return {"$bytes": base64.b64encode(v).decode("ascii")}


def _enc_bytearray(v: Any, depth: int, active: set[int]) -> Any:
    return {"$bytearray": base64.b64encode(v).decode("ascii")}


def _enc_datetime(v: datetime, depth: int, active: set[int]) -> Any:
    out: dict[str, Any] = {"$datetime": v.isoformat()}
    key = _zone_key(v.tzinfo)
    if key is not None:
        out["tz"] = key
    return out


def _zone_key(tz: Any) -> str | None:
    """The IANA key of a zoneinfo zone, so a replay keeps the zone, not just the offset."""
    if tz is None or type(tz).__module__ != "zoneinfo":
        return None
    key = getattr(tz, "key", None)
    return key if isinstance(key, str) else None


def _enc_date(v: date, depth: int, active: set[int]) -> Any:
    return {"$date": v.isoformat()}


def _enc_time(v: time, depth: int, active: set[int]) -> Any:
    if _zone_key(v.tzinfo) is not None:
        # A time with a zone (not an offset) has no offset until it has a
        # date; isoformat() would drop the zone silently.
        raise _Bad("is a datetime.time with a zoneinfo zone, which tbay cannot store exactly")
    return {"$time": v.isoformat()}


def _enc_timedelta(v: timedelta, depth: int, active: set[int]) -> Any:
    return {"$timedelta": [v.days, v.seconds, v.microseconds]}


def _enc_decimal(v: Decimal, depth: int, active: set[int]) -> Any:
    return {"$decimal": str(v)}  # not normalised: Decimal("10.50") replays as "10.50"


def _enc_uuid(v: uuid.UUID, depth: int, active: set[int]) -> Any:
    return {"$uuid": str(v)}


def _register(t: type) -> str:
    name = _class_name(t)
    if _REGISTRY.get(name) is not t:
        _REGISTRY[name] = t
    return name


def _enc_enum(v: enum.Enum, depth: int, active: set[int]) -> Any:
    name = _register(type(v))
    try:
        value = _enc(v.value, depth + 1, active)
    except _Bad as e:
        e.segments.append(".value")
        raise
    return {"$enum": name, "value": value}


def _enc_namedtuple(v: Any, depth: int, active: set[int]) -> Any:
    name = _register(type(v))
    return {"$namedtuple": name, "items": _enc_items(v, depth, active)}


def _make_dataclass_encoder(t: type) -> Callable[[Any, int, set[int]], Any]:
    fields = dataclasses.fields(t)
    names = tuple(f.name for f in fields)
    init_names = {f.name for f in fields if f.init}
    problem = None
    params: Iterable[inspect.Parameter]
    try:
        params = inspect.signature(t).parameters.values()
    except (TypeError, ValueError):
        params = ()
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name not in init_names and p.default is p.empty:
            # An InitVar or a hand-written __init__ needs a value tbay does not store.
            problem = (
                f"is a dataclass {_type_name(t)} whose __init__ requires {p.name!r}, "
                "which is not a field, so tbay cannot rebuild it on replay"
            )
            break

    def encode(v: Any, depth: int, active: set[int]) -> Any:
        if problem is not None:
            raise _Bad(problem)
        name = _register(t)
        i = _enter(v, depth, active)
        depth += 1
        out: dict[str, Any] = {}
        field_name = ""
        try:
            for field_name in names:
                out[field_name] = _enc(getattr(v, field_name), depth, active)
        except _Bad as e:
            e.segments.append("." + field_name)
            raise
        active.discard(i)
        return {"$dataclass": name, "fields": out}

    return encode


def _enc_model(v: Any, depth: int, active: set[int]) -> Any:
    t = type(v)
    name = _register(t)
    i = _enter(v, depth, active)
    try:
        data = v.model_dump(mode="json", by_alias=True)
    except Exception as exc:
        raise _Bad(
            f"is a pydantic model {_type_name(t)} that model_dump(mode='json') cannot "
            f"serialise ({type(exc).__name__}: {exc}), so tbay cannot store it"
        ) from None
    # JSON mode is lossy for some models (strict fields, Any fields holding
    # tuples, private attributes, inf/nan): rebuild once now, so a model that
    # would replay different is refused at store time, not at replay time.
    try:
        same = t.model_validate(data) == v
        detail = "the rebuilt model is not equal to the original"
    except Exception as exc:
        same = False
        detail = f"model_validate failed: {type(exc).__name__}: {_first_line(exc)}"
    if not same:
        raise _Bad(
            f"is a pydantic model {_type_name(t)} that does not survive "
            f"model_dump(mode='json') / model_validate unchanged ({detail}), "
            "so tbay cannot store it"
        )
    encoded = _enc(data, depth + 1, active)  # escapes "$" keys inside the data
    active.discard(i)
    return {"$model": name, "data": encoded}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _enc_unsupported(v: Any, depth: int, active: set[int]) -> Any:
    raise _unsupported(v)


_ENCODERS: dict[type, Callable[[Any, int, set[int]], Any]] = {
    tuple: _enc_tuple,
    set: _enc_set,
    frozenset: _enc_frozenset,
    bytes: _enc_bytes,
    bytearray: _enc_bytearray,
    datetime: _enc_datetime,
    date: _enc_date,
    time: _enc_time,
    timedelta: _enc_timedelta,
    Decimal: _enc_decimal,
    uuid.UUID: _enc_uuid,
}
_BUILTIN_ENCODER_COUNT = len(_ENCODERS)
_MAX_CACHED_TYPES = 4096


def _encoder_for(t: type) -> Callable[[Any, int, set[int]], Any]:
    """Pick (and cache) the encoder of a type outside the exact built-in set."""
    handler: Callable[[Any, int, set[int]], Any]
    if issubclass(t, enum.Enum):
        handler = _enc_enum
    elif issubclass(t, tuple) and hasattr(t, "_fields") and hasattr(t, "_make"):
        handler = _enc_namedtuple
    elif dataclasses.is_dataclass(t):
        handler = _make_dataclass_encoder(t)
    elif (
        hasattr(t, "model_fields") and hasattr(t, "model_dump") and hasattr(t, "model_validate")
    ):  # pydantic v2, detected without importing it
        handler = _enc_model
    else:
        handler = _enc_unsupported
    if len(_ENCODERS) > _MAX_CACHED_TYPES:
        for key in list(_ENCODERS)[_BUILTIN_ENCODER_COUNT:]:
            _ENCODERS.pop(key, None)
    _ENCODERS[t] = handler
    return handler


_JSON_ENC = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, check_circular=False, separators=(",", ":")
)
_JSON_ENC_ASCII = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, check_circular=False, separators=(",", ":")
)


def encode_result(value: Any) -> str:
    """Encode a result as tagged JSON text that :func:`decode_result` turns back into an equal value.

    Raises :class:`Unstorable` naming the part of the result that cannot be
    stored exactly. Dict order is preserved (also for non-string keys).
    """
    try:
        tree = _enc(value, 0, set())
    except _Bad as e:
        raise Unstorable(e.message()) from None
    except RecursionError:
        raise Unstorable("result is nested too deeply for tbay to store") from None
    text = _JSON_ENC.encode(tree)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (e.g. a surrogateescape'd file name) cannot be
        # written to a database as UTF-8; \u escapes keep it exact.
        text = _JSON_ENC_ASCII.encode(tree)
    return text


# ---------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------


def _resolve(name: Any, classes: dict[str, type], kind: str, check: Callable[[type], bool]) -> Any:
    """Find the class a stored tag names, without importing anything."""
    if not isinstance(name, str):
        raise NotReplayable(f"stored result is corrupt: a {kind} tag names {name!r}")
    cls = classes.get(name) or _REGISTRY.get(name)
    if cls is None:
        module_name, _, qualname = name.partition(":")
        obj: Any = sys.modules.get(module_name)
        for part in qualname.split("."):
            # __dict__ look-ups only: a module-level __getattr__ could import.
            namespace = getattr(obj, "__dict__", None) if obj is not None else None
            obj = namespace.get(part) if namespace is not None else None
            if obj is None:
                break
        if isinstance(obj, type) and _class_name(obj) == name:
            cls = obj
    if cls is None:
        module_name, _, qualname = name.partition(":")
        where = (
            "it is defined inside a function, so only the process that stored it "
            "(or a return annotation naming the class) can rebuild it"
            if "<locals>" in qualname
            else f"import the module '{module_name}' that defines it before replaying, "
            "or give the tool a return annotation that names the class"
        )
        raise NotReplayable(
            f"the stored result contains {_a(kind)} '{qualname}' from module '{module_name}', "
            f"which is not loaded in this process: {where}. tbay never imports modules "
            "named by stored data."
        )
    if not check(cls):
        raise NotReplayable(f"the stored result names {name!r} as {_a(kind)}, but it is not one")
    return cls


def _is_enum(c: type) -> bool:
    return issubclass(c, enum.Enum)


def _is_dataclass(c: type) -> bool:
    return dataclasses.is_dataclass(c)


def _is_model(c: type) -> bool:
    return hasattr(c, "model_validate") and hasattr(c, "model_fields")


def _is_namedtuple(c: type) -> bool:
    return issubclass(c, tuple) and hasattr(c, "_make")


def _dec_datetime(d: dict[str, Any], classes: dict[str, type]) -> Any:
    value = datetime.fromisoformat(d["$datetime"])
    key = d.get("tz")
    if key is not None:
        try:
            import zoneinfo  # stdlib; the key is validated by ZoneInfo itself

            value = value.astimezone(zoneinfo.ZoneInfo(key))
        except Exception:  # an unknown zone here: the fixed offset is still exact
            pass
    return value


def _dec_enum(d: dict[str, Any], classes: dict[str, type]) -> Any:
    cls = _resolve(d["$enum"], classes, "Enum", _is_enum)
    try:
        return cls(d["value"])
    except ValueError as exc:
        raise NotReplayable(
            f"the stored result holds {cls.__qualname__} value {d['value']!r}, which that "
            f"Enum no longer has: {exc}"
        ) from None


def _dec_dataclass(d: dict[str, Any], classes: dict[str, type]) -> Any:
    cls = _resolve(d["$dataclass"], classes, "dataclass", _is_dataclass)
    values = d["fields"]
    fields = dataclasses.fields(cls)
    try:
        obj = cls(**{f.name: values[f.name] for f in fields if f.init and f.name in values})
    except Exception as exc:
        raise NotReplayable(
            f"the stored {cls.__qualname__} could not be rebuilt "
            f"({type(exc).__name__}: {exc}); did the dataclass change since it was stored?"
        ) from None
    for f in fields:
        if not f.init and f.name in values:
            object.__setattr__(obj, f.name, values[f.name])  # also works when frozen
    return obj


def _dec_model(d: dict[str, Any], classes: dict[str, type]) -> Any:
    cls = _resolve(d["$model"], classes, "pydantic model", _is_model)
    try:
        return cls.model_validate(d["data"])
    except Exception as exc:
        raise NotReplayable(
            f"the stored {cls.__qualname__} could not be rebuilt with model_validate "
            f"({type(exc).__name__}: {_first_line(exc)}); did the model change since it was stored?"
        ) from None


def _dec_namedtuple(d: dict[str, Any], classes: dict[str, type]) -> Any:
    cls = _resolve(d["$namedtuple"], classes, "namedtuple", _is_namedtuple)
    return cls._make(d["items"])


_TAGS: dict[str, Callable[[dict[str, Any], dict[str, type]], Any]] = {
    "$tuple": lambda d, c: tuple(d["$tuple"]),
    "$set": lambda d, c: set(d["$set"]),
    "$frozenset": lambda d, c: frozenset(d["$frozenset"]),
    "$map": lambda d, c: {k: v for k, v in d["$map"]},
    "$bytes": lambda d, c: base64.b64decode(d["$bytes"]),
    "$bytearray": lambda d, c: bytearray(base64.b64decode(d["$bytearray"])),
    "$datetime": _dec_datetime,
    "$date": lambda d, c: date.fromisoformat(d["$date"]),
    "$time": lambda d, c: time.fromisoformat(d["$time"]),
    "$timedelta": lambda d, c: timedelta(*d["$timedelta"]),
    "$decimal": lambda d, c: Decimal(d["$decimal"]),
    "$uuid": lambda d, c: uuid.UUID(d["$uuid"]),
    "$float": lambda d, c: float(d["$float"]),
    "$int": lambda d, c: int(d["$int"], 16),
    "$enum": _dec_enum,
    "$dataclass": _dec_dataclass,
    "$model": _dec_model,
    "$namedtuple": _dec_namedtuple,
}


def _make_hook(classes: dict[str, type]) -> Callable[[dict[str, Any]], Any]:
    tags = _TAGS

    def hook(d: dict[str, Any]) -> Any:
        # json calls this bottom-up, so a tag's contents are already decoded.
        for first in d:  # noqa: B007 - the first key, cheaply
            break
        else:
            return d
        if first[:1] == "$" and first[1:2] != "$":
            decode = tags.get(first)
            if decode is None:
                raise NotReplayable(
                    f"the stored result has an unknown tag {first!r}: it was written by a "
                    "newer tbay or is corrupt"
                )
            return decode(d, classes)
        for k in d:
            if k[:1] == "$":
                return {(k[1:] if k[:1] == "$" else k): v for k, v in d.items()}
        return d

    return hook


_EMPTY: dict[str, type] = {}
_PLAIN_DECODE = json.JSONDecoder().decode
_DEFAULT_DECODE = json.JSONDecoder(object_hook=_make_hook(_EMPTY)).decode
_ANNOTATION_DECODERS: dict[Any, Callable[[str], Any]] = {}
_MAX_CACHED_ANNOTATIONS = 1024


def _collect_classes(ann: Any, out: dict[str, type], seen: set[int], depth: int = 0) -> None:
    """Every Enum/dataclass/pydantic/namedtuple class an annotation mentions, fields included."""
    if depth > 50 or id(ann) in seen or ann is None or isinstance(ann, str):
        return
    seen.add(id(ann))
    if isinstance(ann, enum.Enum):  # Literal[Color.RED]
        ann = type(ann)
    origin = typing.get_origin(ann)
    if origin is not None:
        for arg in typing.get_args(ann):
            _collect_classes(arg, out, seen, depth + 1)
        if isinstance(origin, type) and origin.__module__ not in (
            "builtins",
            "typing",
            "collections.abc",
        ):
            _collect_classes(origin, out, seen, depth + 1)  # a generic user class
        return
    if not isinstance(ann, type):
        return
    hints: Any = ()
    if issubclass(ann, enum.Enum):
        out[_class_name(ann)] = ann
    elif dataclasses.is_dataclass(ann):
        out[_class_name(ann)] = ann
        hints = _type_hints(ann) or [f.type for f in dataclasses.fields(ann)]
    elif _is_model(ann):
        out[_class_name(ann)] = ann
        try:
            hints = [f.annotation for f in ann.model_fields.values()]  # type: ignore[attr-defined]
        except Exception:
            hints = ()
    elif issubclass(ann, tuple) and hasattr(ann, "_fields") and hasattr(ann, "_make"):
        out[_class_name(ann)] = ann
        hints = _type_hints(ann)
    for hint in hints:
        _collect_classes(hint, out, seen, depth + 1)


def _type_hints(cls: type) -> list[Any]:
    try:
        return list(typing.get_type_hints(cls).values())
    except Exception:  # unresolvable forward references: use what is there
        return [h for h in getattr(cls, "__annotations__", {}).values() if not isinstance(h, str)]


def _decoder_for(annotation: Any) -> Callable[[str], Any]:
    try:
        cached = _ANNOTATION_DECODERS.get(annotation)
    except TypeError:  # unhashable annotation (e.g. Annotated with a dict): no cache
        cached = None
        hashable = False
    else:
        hashable = True
    if cached is not None:
        return cached
    classes: dict[str, type] = {}
    _collect_classes(annotation, classes, set())
    decode = (
        json.JSONDecoder(object_hook=_make_hook(classes)).decode if classes else _DEFAULT_DECODE
    )
    if hashable:
        if len(_ANNOTATION_DECODERS) >= _MAX_CACHED_ANNOTATIONS:
            _ANNOTATION_DECODERS.clear()
        _ANNOTATION_DECODERS[annotation] = decode
    return decode


def decode_result(text: str, annotation: Any = None) -> Any:
    """Turn text from :func:`encode_result` back into an equal value of the same type.

    ``annotation`` (usually the tool's return annotation) names the classes
    that may be rebuilt, before the classes this process encoded and the
    modules already imported. Raises :class:`NotReplayable` when a class
    cannot be found or rebuilt.
    """
    try:
        if '"$' not in text:
            return _PLAIN_DECODE(text)  # no tag and no escaped key anywhere
        decode = _DEFAULT_DECODE if annotation is None else _decoder_for(annotation)
        return decode(text)
    except NotReplayable:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise NotReplayable(f"the stored result is corrupt ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def describe_error(exc: BaseException) -> tuple[str, str, str]:
    """``(error_type, error_message, traceback_text)`` of an exception, for the audit log.

    ``error_type`` is the class's qualname, prefixed with its module unless
    it is a builtin (``"ValueError"``, ``"myapp.errors.PaymentDeclined"``),
    so replayed failures can be matched by type name. Never raises: an
    exception whose ``__str__`` fails still gets recorded. Very long messages
    and tracebacks are cut (the traceback keeps its end, where the error is).
    """
    t = type(exc)
    error_type = _type_name(t)
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {error_type}>"
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 15] + "... (truncated)"
    try:
        tb = "".join(traceback.format_exception(t, exc, exc.__traceback__))
    except Exception:
        tb = f"{error_type}: {message}\n"
    if len(tb) > _MAX_TRACEBACK_CHARS:
        tb = "... (truncated)\n" + tb[-(_MAX_TRACEBACK_CHARS - 16) :]
    return error_type, message, tb
