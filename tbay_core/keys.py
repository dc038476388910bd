"""Idempotency keys and argument fingerprints.

Two calls are "the same call" when their arguments are equal *values*, so the
key is derived from a canonical form of the bound arguments, not from how the
caller spelled the call: ``f(1, 2)``, ``f(a=1, b=2)`` and ``f(1, b=2)`` bind to
the same arguments, dict insertion order and set iteration order do not
matter, tuples and lists are alike and ``1 == 1.0``. The canonical form must be
identical in every process and under every hash seed, because a key written
by one worker is looked up by another: sets and non-string-keyed dicts are
therefore sorted by the canonical JSON of their elements, never by Python's
hash order.

An argument whose only identity is its memory address (``object()``, a
client, a socket) has no value a key could be derived from. Such arguments
raise :class:`~tbay_core.errors.KeyDerivationError` naming the argument path
and suggesting ``key_fn``; tbay never falls back to ``str()``/``repr()``,
which would silently give every call a fresh key (or, worse, collide).

Bound methods: :class:`KeyDeriver` treats the first parameter like any other,
so guard a method *after* binding it (``guarded(...)(client.search)``), where
``self`` is no longer a parameter; an unbound method whose ``self`` is an
ordinary object raises :class:`KeyDerivationError` at the first call.

This module is on the hot path of every cache hit, so the work that does not
depend on the call (signature analysis, injected-argument detection, JSON
prefixes) is done once per guarded function, and canonicalisation takes a
fast path for str/int/float/bool/None/list/dict.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import decimal
import enum
import hashlib
import inspect
import json
import json.encoder
import math
import re
import typing
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import PurePath
from typing import Any

from .errors import KeyDerivationError

__all__ = [
    "KEY_VERSION",
    "FINGERPRINT_VERSION",
    "INJECTED_TYPE_NAMES",
    "INJECTED_PARAMETER_NAMES",
    "CallIdentity",
    "KeyDeriver",
    "canonicalize",
    "canonical_json",
]

KEY_VERSION = "tbay-key-v1"
FINGERPRINT_VERSION = "tbay-fp-v1"

#: Annotation names of arguments that agent frameworks inject at call time.
#: They differ on every call (run ids, callback managers, runtime handles) and
#: say nothing about *what* the tool does, so they never enter a key.
INJECTED_TYPE_NAMES = frozenset(
    {
        "ToolRuntime",
        "Runtime",
        "RunnableConfig",
        "CallbackManagerForToolRun",
        "AsyncCallbackManagerForToolRun",
        "InjectedToolCallId",
        "InjectedToolArg",
        "InjectedState",
        "InjectedStore",
        "RunContextWrapper",
        "ToolContext",
    }
)

#: Parameter names that LangChain fills in regardless of annotation.
INJECTED_PARAMETER_NAMES = frozenset({"callbacks", "run_manager"})

_MAX_DEPTH = 100
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# One encoder instance: json.dumps() with non-default options builds a new
# JSONEncoder on every call, which is measurable on the hot path.
_ENC = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    check_circular=False,  # canonical forms are trees we built ourselves
)


def _no_default(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _make_encode() -> Callable[[Any], str]:
    """The fastest exact equivalent of ``_ENC.encode``.

    ``JSONEncoder.encode`` rebuilds its C encoder on every call; building it
    once saves about a third of the encoding time of a small argument dict.
    Falls back to the public API where the C accelerator is missing.
    """
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    c_encode_basestring = getattr(json.encoder, "c_encode_basestring", None)
    if c_make_encoder is None or c_encode_basestring is None:
        return _ENC.encode
    try:
        c_encoder = c_make_encoder(
            None, _no_default, c_encode_basestring, None, ":", ",", True, False, False
        )
    except Exception:  # a different private signature: use the public path
        return _ENC.encode
    join = "".join

    def encode(o: Any) -> str:
        return join(c_encoder(o, 0))

    if encode({"b": [1, 2.5, None, True], "a": "\u00e9"}) != _ENC.encode(
        {"b": [1, 2.5, None, True], "a": "\u00e9"}
    ):
        return _ENC.encode
    return encode


_encode = _make_encode()


def _encode_tree(tree: Any) -> str:
    """Encode a canonical tree; the only possible failure is an int too long to print."""
    try:
        return _encode(tree)
    except ValueError:  # more digits than sys.get_int_max_str_digits() allows
        raise _Unstable("huge_int", "int") from None


def _sha256(text: str) -> str:
    # surrogatepass: a str holding a lone surrogate is still a value; hash it
    # deterministically instead of failing.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------------------
# canonicalisation
# ---------------------------------------------------------------------------


class _Unstable(Exception):
    """Internal: a part of a value has no canonical form.

    The path is collected on the way out (each container appends its own
    segment while the exception unwinds), so a successful canonicalisation
    never pays for building path strings.
    """

    def __init__(self, reason: str, type_name: str):
        super().__init__(reason)
        self.reason = reason
        self.type_name = type_name
        self.segments: list[str] = []

    def path(self, root: str) -> str:
        return root + "".join(reversed(self.segments))


def _type_name(t: type) -> str:
    module = getattr(t, "__module__", None)
    qualname = str(getattr(t, "__qualname__", None) or getattr(t, "__name__", repr(t)))
    if module in (None, "builtins"):
        return qualname
    return f"{module}.{qualname}"


def _key_segment(k: Any) -> str:
    """Path segment of a dict entry, for error messages only."""
    if type(k) is str:
        return "." + k if _PLAIN_KEY.match(k) else f"[{k!r}]"
    try:
        text = repr(k)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{_type_name(type(k))}>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"[{text}]"


def _canon(v: Any, depth: int, active: set[int]) -> Any:
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return v
    if t is float:
        return _canon_float(v)
    handler = _HANDLERS.get(t)
    if handler is None:
        handler = _handler_for(t)
    return handler(v, depth, active)


def _canon_float(v: float) -> Any:
    if v.is_integer():  # False for nan and +-inf
        return int(v)  # 1.0 -> 1, -0.0 -> 0
    if math.isfinite(v):
        return v
    if v != v:
        return {"$float": "nan"}
    return {"$float": "inf" if v > 0 else "-inf"}


def _enter(v: Any, depth: int, active: set[int]) -> int:
    if depth >= _MAX_DEPTH:
        raise _Unstable("deep", _type_name(type(v)))
    i = id(v)
    if i in active:
        raise _Unstable("cycle", _type_name(type(v)))
    active.add(i)
    return i


def _canon_seq(v: Any, depth: int, active: set[int]) -> list[Any]:
    i = _enter(v, depth, active)
    depth += 1
    out: list[Any] = []
    append = out.append
    idx = 0
    try:
        for idx, x in enumerate(v):  # noqa: B007 - idx is read in the handler
            t = type(x)
            if t is str or t is int or t is bool or x is None:
                append(x)
            else:
                append(_canon(x, depth, active))
    except _Unstable as e:
        e.segments.append(f"[{idx}]")
        raise
    active.discard(i)
    return out


def _canon_dict(v: dict[Any, Any], depth: int, active: set[int]) -> Any:
    i = _enter(v, depth, active)
    depth += 1
    out: dict[str, Any] = {}
    k: Any = None
    try:
        for k, x in v.items():
            if type(k) is not str:
                break
            t = type(x)
            cx = x if t is str or t is int or t is bool or x is None else _canon(x, depth, active)
            out["$" + k if k[:1] == "$" else k] = cx
        else:
            active.discard(i)
            return out
    except _Unstable as e:
        e.segments.append(_key_segment(k))
        raise
    # Some key is not an exact str: canonicalise the keys; if they all turn
    # out to be strings (str subclasses) keep the dict form, else use $map
    # sorted by the canonical JSON of the key.
    pairs: list[tuple[Any, Any]] = []
    n = 0
    try:
        for n, (k, x) in enumerate(v.items()):  # noqa: B007
            ck = _canon(k, depth, active)
            pairs.append((ck, k))
    except _Unstable as e:
        e.segments.append(f".keys()[{n}]")
        raise
    try:
        if all(type(ck) is str for ck, _ in pairs):
            out = {}
            for ck, k in pairs:
                out["$" + ck if ck[:1] == "$" else ck] = _canon(v[k], depth, active)
            active.discard(i)
            return out
        entries = []
        for ck, k in pairs:
            entries.append((_encode_tree(ck), [ck, _canon(v[k], depth, active)]))
    except _Unstable as e:
        e.segments.append(_key_segment(k))
        raise
    entries.sort(key=_first)
    active.discard(i)
    return {"$map": [entry for _, entry in entries]}


def _first(item: tuple[str, Any]) -> str:
    return item[0]


def _canon_set(v: Any, depth: int, active: set[int]) -> Any:
    i = _enter(v, depth, active)
    depth += 1
    by_json: dict[str, Any] = {}
    try:
        for x in v:
            cx = _canon(x, depth, active)
            by_json[_encode_tree(cx)] = cx
    except _Unstable as e:
        e.segments.append("[<set element>]")
        raise
    active.discard(i)
    return {"$set": [by_json[s] for s in sorted(by_json)]}


def _canon_bytes(v: Any, depth: int, active: set[int]) -> Any:
    return {"$bytes": base64.b64encode(bytes(v)).decode("ascii")}


def _canon_datetime(v: Any, depth: int, active: set[int]) -> Any:
    return {"$datetime": v.isoformat()}


def _canon_date(v: Any, depth: int, active: set[int]) -> Any:
    return {"$date": v.isoformat()}


def _canon_time(v: Any, depth: int, active: set[int]) -> Any:
    return {"$time": v.isoformat()}


def _canon_timedelta(v: Any, depth: int, active: set[int]) -> Any:
    return {"$timedelta": _canon_float(v.total_seconds())}


def _canon_decimal(v: decimal.Decimal, depth: int, active: set[int]) -> Any:
    # Decimal('1.50') == Decimal('1.5') and Decimal('-0') == Decimal('0'), so
    # they share a key. normalize() under the default context would round to
    # 28 digits and merge distinct values, hence a context as wide as the
    # number itself. Decimals stay distinct from ints and floats on purpose:
    # a tool that takes Decimal amounts is not called with floats.
    if v.is_zero():
        return {"$decimal": "0"}
    if v.is_finite():
        digits = len(v.as_tuple().digits)
        ctx = decimal.Context(prec=max(digits, 1), Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
        return {"$decimal": str(v.normalize(ctx))}
    return {"$decimal": str(v)}  # NaN, sNaN, Infinity, -Infinity


def _canon_uuid(v: Any, depth: int, active: set[int]) -> Any:
    return {"$uuid": str(v)}


def _canon_path(v: Any, depth: int, active: set[int]) -> Any:
    return {"$path": str(v)}


def _canon_enum(v: enum.Enum, depth: int, active: set[int]) -> Any:
    t = type(v)
    try:
        value = _canon(v.value, depth + 1, active)
    except _Unstable as e:
        e.segments.append(".value")
        raise
    return {"$enum": [f"{t.__module__}.{t.__qualname__}", value]}


def _canon_model(v: Any, depth: int, active: set[int]) -> Any:
    i = _enter(v, depth, active)
    t = type(v)
    try:
        dumped = v.model_dump(mode="python")
    except Exception:  # a field pydantic itself cannot serialise
        raise _Unstable("model_dump", _type_name(t)) from None
    data = _canon(dumped, depth + 1, active)
    active.discard(i)
    return {"$model": [_type_name(t), data]}


def _make_dataclass_handler(t: type) -> Callable[[Any, int, set[int]], Any]:
    # Only fields that take part in the dataclass's own __eq__ (compare=True):
    # fields excluded from equality are caches, locks or handles, and two
    # equal instances must share a key.
    names = tuple(f.name for f in dataclasses.fields(t) if f.compare)
    tname = _type_name(t)

    def handler(v: Any, depth: int, active: set[int]) -> Any:
        i = _enter(v, depth, active)
        depth += 1
        out: dict[str, Any] = {}
        name = ""
        try:
            for name in names:
                out[name] = _canon(getattr(v, name), depth, active)
        except _Unstable as e:
            e.segments.append("." + name)
            raise
        active.discard(i)
        return {"$dataclass": [tname, out]}

    return handler


def _make_error_handler(reason: str, t: type) -> Callable[[Any, int, set[int]], Any]:
    tname = _type_name(t)

    def handler(v: Any, depth: int, active: set[int]) -> Any:
        raise _Unstable(reason, tname)

    return handler


def _int_sub(v: Any, depth: int, active: set[int]) -> Any:
    return int.__int__(v)


def _float_sub(v: Any, depth: int, active: set[int]) -> Any:
    return _canon_float(float.__float__(v))


def _str_sub(v: Any, depth: int, active: set[int]) -> Any:
    return str.__str__(v)


_HANDLERS: dict[type, Callable[[Any, int, set[int]], Any]] = {
    list: _canon_seq,
    tuple: _canon_seq,
    dict: _canon_dict,
    set: _canon_set,
    frozenset: _canon_set,
    bytes: _canon_bytes,
    bytearray: _canon_bytes,
    datetime: _canon_datetime,
    date: _canon_date,
    time: _canon_time,
    timedelta: _canon_timedelta,
    decimal.Decimal: _canon_decimal,
    uuid.UUID: _canon_uuid,
}
_BUILTIN_HANDLER_COUNT = len(_HANDLERS)
_MAX_CACHED_TYPES = 4096


def _handler_for(t: type) -> Callable[[Any, int, set[int]], Any]:
    """Pick (and cache) the handler for a type outside the exact fast path."""
    handler: Callable[[Any, int, set[int]], Any]
    if issubclass(t, enum.Enum):
        handler = _canon_enum
    elif issubclass(t, int):  # bool cannot be subclassed; int subclasses are ints by value
        handler = _int_sub
    elif issubclass(t, float):  # e.g. numpy.float64
        handler = _float_sub
    elif issubclass(t, str):
        handler = _str_sub
    elif issubclass(t, (bytes, bytearray)):
        handler = _canon_bytes
    elif issubclass(t, datetime):
        handler = _canon_datetime
    elif issubclass(t, date):
        handler = _canon_date
    elif issubclass(t, time):
        handler = _canon_time
    elif issubclass(t, timedelta):
        handler = _canon_timedelta
    elif issubclass(t, decimal.Decimal):
        handler = _canon_decimal
    elif issubclass(t, uuid.UUID):
        handler = _canon_uuid
    elif issubclass(t, PurePath):
        handler = _canon_path
    elif issubclass(t, (list, tuple)):  # namedtuples, list subclasses
        handler = _canon_seq
    elif issubclass(t, dict):  # OrderedDict, defaultdict, ...
        handler = _canon_dict
    elif issubclass(t, (set, frozenset)):
        handler = _canon_set
    elif dataclasses.is_dataclass(t):
        handler = _make_dataclass_handler(t)
    elif hasattr(t, "model_fields") and hasattr(t, "model_dump"):  # pydantic v2, not imported
        handler = _canon_model
    elif getattr(t, "__eq__", None) is object.__eq__:
        handler = _make_error_handler("opaque", t)
    else:
        handler = _make_error_handler("custom_eq", t)
    if len(_HANDLERS) > _MAX_CACHED_TYPES:
        # Bounded: programs that create classes dynamically must not grow
        # this cache forever. Keep the built-in entries.
        for key in list(_HANDLERS)[_BUILTIN_HANDLER_COUNT:]:
            _HANDLERS.pop(key, None)
    _HANDLERS[t] = handler
    return handler


_HINT = (
    "Pass key_fn=... to @guarded to choose the key, or pass a value type "
    "(str, int, dict, dataclass, ...)."
)


def _a(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def _describe(e: _Unstable, subject: str) -> str:
    """The sentence after 'tool X: ' for an _Unstable failure."""
    if e.reason == "opaque":
        what = (
            f"is {_a(e.type_name)} with no stable value (its only identity is its address), "
            "so tbay cannot derive an idempotency key from it."
        )
    elif e.reason == "custom_eq":
        what = (
            f"is {_a(e.type_name)}, which defines its own equality but has no canonical form "
            "tbay knows, so tbay cannot derive an idempotency key from it."
        )
    elif e.reason == "model_dump":
        what = (
            f"is a pydantic model {e.type_name} whose model_dump() fails, "
            "so tbay cannot derive an idempotency key from it."
        )
    elif e.reason == "huge_int":
        what = (
            "contains an int with more digits than Python will print "
            "(sys.get_int_max_str_digits()), so tbay cannot derive an idempotency key from it."
        )
    elif e.reason == "deep":
        what = (
            f"({_a(e.type_name)}) is nested more than {_MAX_DEPTH} levels deep, "
            "so tbay cannot derive an idempotency key from it."
        )
    else:
        what = (
            f"({_a(e.type_name)}) contains itself (a cyclic structure), "
            "so tbay cannot derive an idempotency key from it."
        )
    return f"{subject} {what} {_HINT}"


def _argument_subject(e: _Unstable) -> str:
    where = e.path("")
    return f"argument '{where}'" if where else "one of the arguments"


def canonicalize(value: Any, *, path: str = "") -> Any:
    """Return the canonical, JSON-able form of ``value``.

    Equal values (in the sense tbay keys on, see the module docstring) have
    equal canonical forms; tags such as ``{"$set": [...]}`` keep types apart
    that JSON alone would merge, and a user dict key starting with ``$`` is
    escaped with an extra ``$`` so user data can never look like a tag.
    Raises :class:`KeyDerivationError` naming ``path`` (the location of the
    offending part, rooted at ``path``) when some part has no stable value.
    """
    try:
        return _canon(value, 0, set())
    except _Unstable as e:
        where = e.path(path)
        subject = f"argument '{where}'" if where else "the value"
        raise KeyDerivationError(_describe(e, subject)) from None


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``: what keys and fingerprints hash."""
    tree = canonicalize(value)
    try:
        return _encode_tree(tree)
    except _Unstable as e:
        raise KeyDerivationError(_describe(e, "the value")) from None


# ---------------------------------------------------------------------------
# injected-argument detection
# ---------------------------------------------------------------------------


def _annotation_names(ann: Any, out: set[str], depth: int = 0) -> None:
    """Collect every identifier an annotation mentions, without evaluating it."""
    if depth > 20 or ann is inspect.Parameter.empty:
        return
    if isinstance(ann, str):
        out.update(_IDENTIFIER.findall(ann))
        return
    forward = getattr(ann, "__forward_arg__", None)  # typing.ForwardRef
    if isinstance(forward, str):
        out.update(_IDENTIFIER.findall(forward))
        return
    name = getattr(ann, "__name__", None)
    if isinstance(name, str):
        out.add(name)
    if not isinstance(ann, type):
        # Instances used as Annotated metadata, e.g. InjectedToolArg().
        out.add(type(ann).__name__)
    with contextlib.suppress(Exception):  # an exotic annotation with a broken __str__
        out.update(_IDENTIFIER.findall(str(ann)))
    for meta in getattr(ann, "__metadata__", ()) or ():  # Annotated[...] metadata
        _annotation_names(meta, out, depth + 1)
    try:
        args = typing.get_args(ann)
    except Exception:
        args = ()
    for arg in args:
        _annotation_names(arg, out, depth + 1)


def _is_injected(param: inspect.Parameter) -> bool:
    if param.name in INJECTED_PARAMETER_NAMES:
        return True
    names: set[str] = set()
    _annotation_names(param.annotation, names)
    return not names.isdisjoint(INJECTED_TYPE_NAMES)


# ---------------------------------------------------------------------------
# per-function deriver
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """Who a call is, for the store.

    ``key`` is None for calls that ask for no key (volatile tools).
    ``arguments`` holds the bound argument values (defaults applied, injected
    arguments removed) for the audit copy and budget look-ups.
    ``canonical_arguments`` is the canonical JSON that ``fingerprint`` hashes,
    kept so that the engine can store it without canonicalising twice; it is
    ``""`` when an unkeyed call's arguments have no canonical form.
    """

    key: str | None
    fingerprint: str
    arguments: dict[str, Any]
    canonical_arguments: str = field(default="", repr=False, compare=False)


_P = inspect.Parameter
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)
_FP_PREFIX = "[" + _encode(FINGERPRINT_VERSION) + ","
_MAX_TENANT_PREFIXES = 1024


class _BindError(Exception):
    """Internal: the fast binder gave up; the slow path produces the message."""


def _merge_var_keyword(out: dict[str, Any], var_name: str, extra: dict[str, Any]) -> None:
    """``**kwargs`` entries sit beside the named arguments, as the caller wrote them.

    So ``f(amount=5)`` binds to ``{"amount": 5}`` whether ``f`` names ``amount``
    or takes ``**kwargs``, and policies (budget, approval bypass, redaction)
    find the argument by its own name. Only when a name clashes with a
    positional-only parameter do the extras stay nested under ``var_name``.
    """
    if out.keys().isdisjoint(extra):
        out.update(extra)
    else:
        out[var_name] = extra


class KeyDeriver:
    """Built once per guarded function; derives identities per call.

    Everything that depends only on the function (parameter kinds and
    defaults, which parameters are framework-injected, the JSON prefix of the
    key) is computed here, so :meth:`derive` binds arguments with a few dict
    operations instead of ``inspect.Signature.bind`` (which is only used to
    produce the exact ``TypeError`` when a call's arguments do not fit).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        tool_name: str,
        key_fn: Callable[..., Any] | None = None,
        exclude_args: Iterable[str] = (),
    ):
        self.tool_name = tool_name
        self._fn = fn
        self._key_fn = key_fn
        self._excluded_names = frozenset(exclude_args) | INJECTED_PARAMETER_NAMES
        self._fn_name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", tool_name)
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have no signature
            sig = None
        self._sig = sig

        positional: list[str] = []
        keyword_ok: set[str] = set()
        named: list[str] = []
        defaults: dict[str, Any] = {}
        out_order: list[tuple[str, Any]] = []
        var_pos: str | None = None
        var_kw: str | None = None
        excluded: set[str] = set()
        params = sig.parameters.values() if sig is not None else ()
        for p in params:
            if p.name in self._excluded_names or _is_injected(p):
                excluded.add(p.name)
            if p.kind is _P.VAR_POSITIONAL:
                var_pos = p.name
            elif p.kind is _P.VAR_KEYWORD:
                var_kw = p.name
            else:
                if p.kind in _POSITIONAL:
                    positional.append(p.name)
                if p.kind is not _P.POSITIONAL_ONLY:
                    keyword_ok.add(p.name)
                named.append(p.name)
                if p.default is not _P.empty:
                    defaults[p.name] = p.default
            if p.name not in excluded:
                out_order.append((p.name, p.kind))
        self._positional = tuple(positional)
        self._n_positional = len(positional)
        self._keyword_ok = frozenset(keyword_ok)
        self._named = tuple(named)
        self._n_named = len(named)
        self._all_positional = len(positional) == len(named)
        self._defaults = defaults
        self._var_pos = var_pos
        self._var_kw = var_kw
        self._excluded = frozenset(excluded)
        self._out_names = tuple(name for name, _ in out_order)
        # The common case: no *args/**kwargs and nothing excluded.
        self._simple = var_pos is None and var_kw is None and not excluded and sig is not None
        self._tenant_prefixes: dict[str | None, str] = {}

    # -- binding ---------------------------------------------------------

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._sig is None:
            return {
                "args": list(args),
                "kwargs": {k: v for k, v in kwargs.items() if k not in self._excluded_names},
            }
        try:
            if self._simple:
                return self._bind_simple(args, kwargs)
            return self._bind_fast(args, kwargs)
        except _BindError:
            return self._bind_slow(args, kwargs)

    def _bind_simple(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Binding for signatures without *args/**kwargs or excluded parameters."""
        if kwargs:
            if args:
                if len(args) > self._n_positional:
                    raise _BindError
                bound = dict(zip(self._positional, args))  # noqa: B905
                keyword_ok = self._keyword_ok
                for k in kwargs:
                    if k in bound or k not in keyword_ok:
                        raise _BindError
                bound.update(kwargs)
            else:
                if not self._keyword_ok.issuperset(kwargs):
                    raise _BindError
                bound = kwargs
        else:
            if len(args) == self._n_named and self._all_positional:
                return dict(zip(self._positional, args))  # noqa: B905 - already in order
            if len(args) > self._n_positional:
                raise _BindError
            bound = dict(zip(self._positional, args))  # noqa: B905
        if len(bound) != self._n_named:
            bound = {**self._defaults, **bound}
            if len(bound) != self._n_named:
                raise _BindError  # missing a required argument
        return {name: bound[name] for name in self._out_names}

    def _bind_fast(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        n = len(args)
        if n > self._n_positional and self._var_pos is None:
            raise _BindError
        bound = dict(zip(self._positional, args))  # noqa: B905
        extra_kw: dict[str, Any] | None = None
        if kwargs:
            keyword_ok = self._keyword_ok
            for k, v in kwargs.items():
                if k in keyword_ok:
                    if k in bound:
                        raise _BindError  # multiple values for one argument
                    bound[k] = v
                elif self._var_kw is not None:
                    if extra_kw is None:
                        extra_kw = {}
                    extra_kw[k] = v
                else:
                    raise _BindError
        if len(bound) != self._n_named:
            defaults = self._defaults
            for name in self._named:
                if name not in bound:
                    if name in defaults:
                        bound[name] = defaults[name]
                    else:
                        raise _BindError  # missing a required argument
        if self._simple:
            return {name: bound[name] for name in self._out_names}
        out: dict[str, Any] = {}
        var_pos, var_kw, excluded_names = self._var_pos, self._var_kw, self._excluded_names
        for name in self._out_names:
            if name == var_pos:
                out[name] = list(args[self._n_positional :])
            elif name == var_kw:
                if extra_kw:
                    _merge_var_keyword(out, name, {k: v for k, v in extra_kw.items() if k not in excluded_names})
            else:
                out[name] = bound[name]
        return out

    def _bind_slow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        assert self._sig is not None
        try:
            ba = self._sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self._fn_name}() {exc}") from None
        ba.apply_defaults()
        out: dict[str, Any] = {}
        for name in self._out_names:
            value = ba.arguments[name]
            if name == self._var_pos:
                value = list(value)
            elif name == self._var_kw:
                _merge_var_keyword(out, name, {k: v for k, v in value.items() if k not in self._excluded_names})
                continue
            out[name] = value
        return out

    # -- canonical forms -------------------------------------------------

    def _canon_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Canonical form of bound arguments; raises _Unstable with the path."""
        active: set[int] = set()
        out: dict[str, Any] = {}
        name = ""
        try:
            for name, v in arguments.items():
                t = type(v)
                if t is str or t is int or t is bool or v is None:
                    out[name] = v
                else:
                    out[name] = _canon(v, 0, active)
        except _Unstable as e:
            e.segments.append(name)
            raise
        return out

    def _error(self, e: _Unstable, subject: str) -> KeyDerivationError:
        return KeyDerivationError(f"tool '{self.tool_name}': " + _describe(e, subject))

    def argument_digests_json(self, arguments: dict[str, Any]) -> str:
        """Per-argument SHA-256 digests of the canonical values, as JSON.

        The engine stores this next to a ``key_fn`` execution so that a later
        call with the same key but a different fingerprint can be told *which*
        arguments differ (:meth:`differing_fields`) without the database ever
        holding an argument's real value (secrets are redacted in the audit
        copy, and must not leak through this one).
        """
        current = self._canon_arguments_or_raise(arguments)
        return json.dumps(
            {name: hashlib.sha256(_encode(value).encode()).hexdigest() for name, value in current.items()},
            sort_keys=True,
        )

    def differing_fields(self, stored_digests_json: str, arguments: dict[str, Any]) -> tuple[str, ...]:
        """Top-level argument names whose canonical values differ from a stored call.

        A name present on one side only counts as differing. Returns ``()``
        when the stored text cannot be read, since the conflict itself is
        still real and is reported without field names.
        """
        try:
            stored = json.loads(stored_digests_json)
        except (TypeError, ValueError):
            return ()
        if not isinstance(stored, dict):
            return ()
        current = json.loads(self.argument_digests_json(arguments))
        diff = [name for name in set(stored) | set(current) if stored.get(name) != current.get(name)]
        return tuple(sorted(diff))

    def _canon_arguments_or_raise(self, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._canon_arguments(arguments)
        except _Unstable as e:
            raise self._error(e, _argument_subject(e)) from None

    # -- derive ----------------------------------------------------------

    def _key_prefix(self, tenant: str | None) -> str:
        prefix = self._tenant_prefixes.get(tenant)
        if prefix is None:
            prefix = (
                "["
                + ",".join([_encode(KEY_VERSION), _encode(self.tool_name), _encode(tenant)])
                + ","
            )
            if len(self._tenant_prefixes) >= _MAX_TENANT_PREFIXES:
                self._tenant_prefixes.clear()
            self._tenant_prefixes[tenant] = prefix
        return prefix

    def derive(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        tenant: str | None,
        keyed: bool = True,
    ) -> CallIdentity:
        """Bind one call's arguments and derive its key and fingerprint.

        Raises the function's own ``TypeError`` when the arguments do not
        fit its signature, and :class:`KeyDerivationError` when an argument
        (or the ``key_fn`` result) has no stable value. With ``keyed=False``
        no key is derived and ``key_fn`` is not called; arguments without a
        canonical form are then tolerated (volatile tools never deduplicate)
        and get a fingerprint unique to this call.
        """
        arguments = self._bind(args, kwargs)
        try:
            text = _encode_tree(self._canon_arguments(arguments))
        except _Unstable as e:
            if not keyed:
                return CallIdentity(
                    None, _sha256(_FP_PREFIX + _encode(uuid.uuid4().hex) + "]"), arguments, ""
                )
            raise self._error(e, _argument_subject(e)) from None
        # Equal to _sha256(canonical_json([FINGERPRINT_VERSION, canon_args])),
        # without encoding the arguments twice.
        fingerprint = _sha256(_FP_PREFIX + text + "]")
        if not keyed:
            return CallIdentity(None, fingerprint, arguments, text)
        if self._key_fn is None:
            material = text
        else:
            try:
                chosen = self._key_fn(*args, **kwargs)
            except Exception as exc:
                raise KeyDerivationError(
                    f"tool '{self.tool_name}': key_fn raised {type(exc).__name__}: {exc}. "
                    "Make key_fn accept the same arguments as the tool and return a value "
                    "type (str, int, tuple, dict, ...)."
                ) from exc
            try:
                material = _encode_tree(_canon(chosen, 0, set()))
            except _Unstable as e:
                where = e.path("key_fn(...)")
                raise self._error(e, f"the key_fn result '{where}'") from None
        # Equal to _sha256(canonical_json([KEY_VERSION, tool_name, tenant, material])).
        key = _sha256(self._key_prefix(tenant) + material + "]")
        return CallIdentity(key, fingerprint, arguments, text)
