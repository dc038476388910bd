"""Idempotency keys: binding, canonical form, exclusion of injected arguments, stability."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import inspect
import json
import os
import subprocess
import sys
from collections import namedtuple
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Optional
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tbay_core.keys as keys_module
from tbay_core.errors import KeyDerivationError
from tbay_core.keys import (
    KEY_VERSION,
    CallIdentity,
    KeyDeriver,
    canonical_json,
    canonicalize,
)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_of(fn, *args, tool_name="tool", tenant=None, **kwargs) -> str:
    identity = KeyDeriver(fn, tool_name=tool_name).derive(args, kwargs, tenant=tenant)
    assert identity.key is not None
    return identity.key


def one(value: Any) -> None:
    """A one-argument tool used to compare keys of argument values."""


def value_key(value: Any) -> str:
    return key_of(one, value)


# Dummy classes named like the framework-injected types: the deriver must
# recognise them by name, never by importing a framework.
class ToolRuntime:
    pass


class InjectedToolCallId:
    pass


class RunnableConfig(dict):
    pass


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Point:
    x: int
    y: int
    cache: Any = dataclasses.field(default=None, compare=False)


Pair = namedtuple("Pair", "a b")


# ---------------------------------------------------------------------------
# binding
# ---------------------------------------------------------------------------


def add(a, b, c=3):
    return a + b + c


def test_positional_keyword_and_mixed_calls_are_one_call():
    deriver = KeyDeriver(add, tool_name="add")
    ids = [
        deriver.derive((1, 2), {}, tenant=None),
        deriver.derive((), {"a": 1, "b": 2}, tenant=None),
        deriver.derive((1,), {"b": 2}, tenant=None),
        deriver.derive((), {"b": 2, "a": 1}, tenant=None),
        deriver.derive((1, 2, 3), {}, tenant=None),
        deriver.derive((1, 2), {"c": 3}, tenant=None),
    ]
    assert len({i.key for i in ids}) == 1
    assert len({i.fingerprint for i in ids}) == 1
    for identity in ids:
        assert identity.arguments == {"a": 1, "b": 2, "c": 3}
        assert list(identity.arguments) == ["a", "b", "c"]  # signature order


def test_defaults_are_applied_and_change_the_key_when_overridden():
    deriver = KeyDeriver(add, tool_name="add")
    assert deriver.derive((1, 2), {}, tenant=None).arguments["c"] == 3
    assert (
        deriver.derive((1, 2), {}, tenant=None).key
        != deriver.derive((1, 2, 4), {}, tenant=None).key
    )


def test_var_positional_is_bound_under_its_name_and_var_keyword_beside_named_arguments():
    def tool(a, *rest, flag=False, **options):
        pass

    deriver = KeyDeriver(tool, tool_name="tool")
    identity = deriver.derive((1, 2, 3), {"x": 1, "flag": True}, tenant=None)
    assert identity.arguments == {"a": 1, "rest": [2, 3], "flag": True, "x": 1}
    assert identity.key == deriver.derive((1, 2, 3), {"flag": True, "x": 1}, tenant=None).key
    assert identity.key != deriver.derive((1, 2), {"flag": True, "x": 1}, tenant=None).key
    empty = deriver.derive((1,), {}, tenant=None)
    assert empty.arguments == {"a": 1, "rest": [], "flag": False}


def test_var_keyword_clashing_with_a_positional_only_name_stays_nested():
    def tool(a, /, **options):
        pass

    deriver = KeyDeriver(tool, tool_name="tool")
    assert deriver.derive((1,), {"a": 2}, tenant=None).arguments == {"a": 1, "options": {"a": 2}}


def test_keyword_only_and_positional_only_parameters():
    def tool(a, /, b, *, c, d=4):
        pass

    deriver = KeyDeriver(tool, tool_name="tool")
    assert deriver.derive((1, 2), {"c": 3}, tenant=None).arguments == {
        "a": 1,
        "b": 2,
        "c": 3,
        "d": 4,
    }
    assert (
        deriver.derive((1,), {"b": 2, "c": 3}, tenant=None).key
        == deriver.derive((1, 2), {"c": 3, "d": 4}, tenant=None).key
    )
    with pytest.raises(TypeError):
        deriver.derive((), {"a": 1, "b": 2, "c": 3}, tenant=None)  # a is positional-only


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        ((1,), {}, "missing a required argument: 'b'"),
        ((1, 2), {"zzz": 1}, "unexpected keyword argument 'zzz'"),
        ((1, 2, 3, 4), {}, "too many positional arguments"),
        ((1, 2), {"a": 1}, "multiple values for argument 'a'"),
    ],
)
def test_wrong_arguments_raise_the_signature_type_error(args, kwargs, fragment):
    deriver = KeyDeriver(add, tool_name="add")
    with pytest.raises(TypeError, match=fragment) as info:
        deriver.derive(args, kwargs, tenant=None)
    assert "add()" in str(info.value)


def test_bound_methods_are_guarded_after_binding():
    class Service:
        def search(self, query: str, limit: int = 5):
            return query

    service = Service()
    deriver = KeyDeriver(service.search, tool_name="search")
    identity = deriver.derive(("tbay",), {}, tenant=None)
    assert identity.arguments == {"query": "tbay", "limit": 5}


def test_callable_without_signature_binds_args_and_kwargs():
    deriver = KeyDeriver(max, tool_name="max")
    identity = deriver.derive((1, 2), {}, tenant=None)
    assert identity.arguments == {"args": [1, 2], "kwargs": {}}
    assert identity.key == deriver.derive((1, 2.0), {}, tenant=None).key


# ---------------------------------------------------------------------------
# excluded and injected arguments
# ---------------------------------------------------------------------------


def test_exclude_args_removes_arguments_from_key_fingerprint_and_arguments():
    def tool(query, trace_id=None):
        pass

    deriver = KeyDeriver(tool, tool_name="tool", exclude_args=["trace_id"])
    a = deriver.derive(("x",), {"trace_id": "t1"}, tenant=None)
    b = deriver.derive(("x",), {"trace_id": "t2"}, tenant=None)
    assert a.key == b.key and a.fingerprint == b.fingerprint
    assert a.arguments == {"query": "x"}


def test_callbacks_and_run_manager_are_excluded_by_name():
    def tool(query, callbacks=None, run_manager=None):
        pass

    deriver = KeyDeriver(tool, tool_name="tool")
    a = deriver.derive(("x",), {"callbacks": [object()], "run_manager": object()}, tenant=None)
    b = deriver.derive(("x",), {}, tenant=None)
    assert a.key == b.key and a.fingerprint == b.fingerprint
    assert a.arguments == {"query": "x"}


def test_injected_annotations_given_as_strings_are_excluded():
    # This module uses `from __future__ import annotations`, so these are strings.
    def tool(
        query: str,
        runtime: ToolRuntime,
        call_id: Annotated[str, InjectedToolCallId],
        config: Optional[RunnableConfig] = None,  # noqa: UP045 - the typing form is what is tested
        state: Annotated[dict, InjectedState] = None,  # noqa: F821 - never evaluated
        ctx: RunContextWrapper[Any] = None,  # noqa: F821
        store: InjectedStore | None = None,  # noqa: F821
        tool_context: ToolContext = None,  # noqa: F821
    ):
        pass

    assert isinstance(inspect.signature(tool).parameters["runtime"].annotation, str)
    deriver = KeyDeriver(tool, tool_name="tool")
    a = deriver.derive(("x", ToolRuntime(), "call-1"), {"config": RunnableConfig(a=1)}, tenant=None)
    b = deriver.derive(
        ("x", ToolRuntime(), "call-2"), {"state": {"m": [1]}, "ctx": object()}, tenant=None
    )
    assert a.key == b.key and a.fingerprint == b.fingerprint
    assert a.arguments == {"query": "x"}


def test_injected_annotations_given_as_objects_are_excluded():
    def tool(query, runtime, call_id, config=None, maybe_runtime=None):
        pass

    tool.__annotations__ = {
        "query": str,
        "runtime": ToolRuntime,
        "call_id": Annotated[str, InjectedToolCallId],
        "config": Optional[RunnableConfig],  # noqa: UP045
        "maybe_runtime": list[ToolRuntime] | None,
    }
    deriver = KeyDeriver(tool, tool_name="tool")
    a = deriver.derive(("x", ToolRuntime(), "call-1"), {"config": RunnableConfig()}, tenant=None)
    b = deriver.derive(("x", object(), "call-2"), {"maybe_runtime": [object()]}, tenant=None)
    assert a.key == b.key and a.fingerprint == b.fingerprint
    assert a.arguments == {"query": "x"}


def test_annotated_metadata_instance_is_recognised():
    class InjectedToolArg:
        pass

    def tool(query, user_id):
        pass

    tool.__annotations__ = {"query": str, "user_id": Annotated[str, InjectedToolArg()]}

    deriver = KeyDeriver(tool, tool_name="tool")
    assert deriver.derive(("x", "u1"), {}, tenant=None).arguments == {"query": "x"}


def test_a_parameter_named_like_an_injected_type_is_not_excluded():
    def tool(runtime: int):  # the *name* runtime alone does not mean injected
        pass

    deriver = KeyDeriver(tool, tool_name="tool")
    assert deriver.derive((1,), {}, tenant=None).key != deriver.derive((2,), {}, tenant=None).key


def test_excluded_names_are_dropped_from_var_keyword_arguments():
    def tool(query, **kwargs):
        pass

    deriver = KeyDeriver(tool, tool_name="tool")
    a = deriver.derive(("x",), {"run_manager": object(), "extra": 1}, tenant=None)
    assert a.arguments == {"query": "x", "extra": 1}


# ---------------------------------------------------------------------------
# key composition
# ---------------------------------------------------------------------------


def test_key_and_fingerprint_are_the_documented_hashes():
    deriver = KeyDeriver(add, tool_name="adder")
    identity = deriver.derive((1, 2.5), {"c": {"z": 1, "a": (1, 2)}}, tenant="acme")
    canon_args = canonicalize(identity.arguments)
    assert identity.key == sha(canonical_json([KEY_VERSION, "adder", "acme", canon_args]))
    assert identity.fingerprint == sha(canonical_json(["tbay-fp-v1", canon_args]))
    assert identity.canonical_arguments == canonical_json(identity.arguments)


def test_key_is_pinned_across_versions():
    # Keys are stored; a change to the canonical form silently splits every
    # existing key. Changing this value requires a new KEY_VERSION.
    deriver = KeyDeriver(add, tool_name="add")
    identity = deriver.derive((1, {"b": [1.0, (2, 3)], "a": {3, 1}}), {}, tenant="acme")
    assert canonical_json(identity.arguments) == (
        '{"a":1,"b":{"a":{"$set":[1,3]},"b":[1,[2,3]]},"c":3}'
    )
    assert identity.key == sha(
        '["tbay-key-v1","add","acme",{"a":1,"b":{"a":{"$set":[1,3]},"b":[1,[2,3]]},"c":3}]'
    )


def test_tenant_and_tool_name_change_the_key_but_not_the_fingerprint():
    a = KeyDeriver(add, tool_name="add").derive((1, 2), {}, tenant="acme")
    b = KeyDeriver(add, tool_name="add").derive((1, 2), {}, tenant="globex")
    c = KeyDeriver(add, tool_name="add").derive((1, 2), {}, tenant=None)
    d = KeyDeriver(add, tool_name="plus").derive((1, 2), {}, tenant="acme")
    assert len({a.key, b.key, c.key, d.key}) == 4
    assert a.fingerprint == b.fingerprint == c.fingerprint == d.fingerprint


def test_key_fn_chooses_the_key_and_the_fingerprint_keeps_all_arguments():
    seen = []

    def key_fn(*args, **kwargs):
        seen.append((args, kwargs))
        return args[0] if args else kwargs["customer_id"]

    def refund(customer_id: str, amount: float):
        pass

    deriver = KeyDeriver(refund, tool_name="refund", key_fn=key_fn)
    a = deriver.derive(("c1", 10.0), {}, tenant=None)
    b = deriver.derive((), {"customer_id": "c1", "amount": 20.0}, tenant=None)
    c = deriver.derive(("c2", 10.0), {}, tenant=None)
    assert a.key == b.key != c.key
    assert a.fingerprint != b.fingerprint
    assert seen[0] == (("c1", 10.0), {}) and seen[1] == ((), {"customer_id": "c1", "amount": 20.0})
    assert a.key == sha(canonical_json([KEY_VERSION, "refund", None, "c1"]))


def test_key_fn_receives_injected_arguments_too():
    def tool(query: str, runtime: ToolRuntime):
        pass

    received = []
    deriver = KeyDeriver(tool, tool_name="tool", key_fn=lambda q, r: received.append(r) or q)
    rt = ToolRuntime()
    deriver.derive(("x", rt), {}, tenant=None)
    assert received == [rt]


def test_key_fn_errors_are_key_derivation_errors():
    deriver = KeyDeriver(add, tool_name="add", key_fn=lambda a, b, c=3: 1 / 0)
    with pytest.raises(KeyDerivationError, match="key_fn raised ZeroDivisionError"):
        deriver.derive((1, 2), {}, tenant=None)

    deriver = KeyDeriver(add, tool_name="add", key_fn=lambda a, b, c=3: [a, object()])
    with pytest.raises(KeyDerivationError, match=r"key_fn\(\.\.\.\)\[1\]"):
        deriver.derive((1, 2), {}, tenant=None)


def test_unkeyed_calls_have_no_key_and_tolerate_opaque_arguments():
    deriver = KeyDeriver(add, tool_name="add", key_fn=lambda *a: pytest.fail("not called"))
    identity = deriver.derive((1, 2), {}, tenant=None, keyed=False)
    assert identity.key is None
    assert (
        identity.fingerprint
        == KeyDeriver(add, tool_name="add").derive((1, 2), {}, tenant=None).fingerprint
    )
    opaque = deriver.derive((object(), 2), {}, tenant=None, keyed=False)
    assert opaque.key is None and len(opaque.fingerprint) == 64
    assert opaque.canonical_arguments == ""


def test_call_identity_shape():
    identity = KeyDeriver(add, tool_name="add").derive((1, 2), {}, tenant=None)
    assert isinstance(identity, CallIdentity)
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity.key = "x"  # type: ignore[misc]
    assert len(identity.key or "") == 64 and len(identity.fingerprint) == 64


# ---------------------------------------------------------------------------
# canonical form
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"x": 1, "y": 2}, {"y": 2, "x": 1}),
        ([1, 2], (1, 2)),
        (1, 1.0),
        (0, -0.0),
        (Decimal("1.5"), Decimal("1.50")),
        (Decimal("100"), Decimal("1E+2")),
        (Decimal("0"), Decimal("-0.00")),
        ({1, 2, 3}, frozenset({3, 2, 1})),
        ({"a", "b"}, {"b", "a"}),
        ({1: "a", 2: "b"}, {2: "b", 1: "a"}),
        ({1: "a"}, {1.0: "a"}),
        (Pair(1, 2), (1, 2)),
        (timedelta(seconds=90), timedelta(minutes=1.5)),
        ([{"k": {1.0, 2.0}}], ({"k": frozenset({1, 2})},)),
        (Point(1, 2, cache="a"), Point(1, 2, cache="b")),  # compare=False fields do not count
        (float("nan"), float("nan")),
    ],
)
def test_equal_values_have_equal_keys(a, b):
    assert canonical_json(a) == canonical_json(b)
    assert value_key(a) == value_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (True, 1),
        (False, 0),
        ({True: "x"}, {1: "x"}),
        ("1", 1),
        (b"a", "a"),
        (bytearray(b"a"), "YQ=="),
        ([1, 2], [2, 1]),
        ([1, 2], {1, 2}),
        ({"1": "a"}, {1: "a"}),
        (None, "null"),
        (Decimal("1"), 1),
        (Decimal("1.00000000000000000000000000000001"), Decimal("1")),
        (Color.RED, "red"),
        (date(2024, 1, 2), "2024-01-02"),
        (Path("/tmp/x"), "/tmp/x"),
        (1.5, 1.5000000000000002),
        (float("inf"), float("-inf")),
        (UUID(int=1), str(UUID(int=1))),
        (Point(1, 2), {"x": 1, "y": 2}),
        # User data can never look like a tag:
        ({"$set": [1, 2]}, {1, 2}),
        ({"$bytes": "YQ=="}, b"a"),
        ({"$$x": 1}, {"$x": 1}),
    ],
)
def test_different_values_have_different_keys(a, b):
    assert canonical_json(a) != canonical_json(b)
    assert value_key(a) != value_key(b)


def test_canonical_forms_of_rich_types():
    class Plain(enum.IntEnum):
        ONE = 1

    tz = timezone(timedelta(hours=2))
    assert canonicalize(datetime(2024, 1, 2, 3, 4, 5, tzinfo=tz)) == {
        "$datetime": "2024-01-02T03:04:05+02:00"
    }
    assert canonicalize(date(2024, 1, 2)) == {"$date": "2024-01-02"}
    assert canonicalize(time(3, 4)) == {"$time": "03:04:00"}
    assert canonicalize(timedelta(seconds=1.5)) == {"$timedelta": 1.5}
    assert canonicalize(Decimal("10.50")) == {"$decimal": "10.5"}
    assert canonicalize(UUID(int=0)) == {"$uuid": "00000000-0000-0000-0000-000000000000"}
    assert canonicalize(PurePosixPath("/a/b")) == {"$path": "/a/b"}
    assert canonicalize(b"\x00") == {"$bytes": "AA=="}
    assert canonicalize(float("-inf")) == {"$float": "-inf"}
    assert canonicalize(Color.RED) == {"$enum": [f"{__name__}.Color", "red"]}
    assert canonicalize(Plain.ONE)["$enum"][1] == 1
    assert canonicalize(Point(1, 2)) == {"$dataclass": [f"{__name__}.Point", {"x": 1, "y": 2}]}
    assert canonicalize({(1, 2): "a", (0,): "b"}) == {"$map": [[[0], "b"], [[1, 2], "a"]]}
    assert canonicalize({"$a": {"$$b": 1}}) == {"$$a": {"$$$b": 1}}


def test_pydantic_models_are_canonical_by_value():
    pydantic = pytest.importorskip("pydantic")

    class Customer(pydantic.BaseModel):
        name: str
        tags: set[str] = set()

    a = Customer(name="x", tags={"b", "a"})
    b = Customer(name="x", tags={"a", "b"})
    assert canonical_json(a) == canonical_json(b)
    assert canonicalize(a)["$model"][1] == {"name": "x", "tags": {"$set": ["a", "b"]}}
    assert value_key(a) != value_key(Customer(name="y"))


def test_subclasses_of_builtin_values_canonicalise_by_value():
    class Name(str):
        pass

    class Count(int):
        pass

    assert canonical_json(Name("x")) == canonical_json("x")
    assert canonical_json(Count(3)) == canonical_json(3)
    assert canonical_json({Name("k"): 1}) == canonical_json({"k": 1})


# ---------------------------------------------------------------------------
# values with no stable identity
# ---------------------------------------------------------------------------


class Client:
    """A plain class: its instances are only identified by their address."""

    def __init__(self, url):
        self.url = url


class Money:
    def __init__(self, amount):
        self.amount = amount

    def __eq__(self, other):
        return isinstance(other, Money) and other.amount == self.amount

    __hash__ = None  # type: ignore[assignment]


def test_object_argument_raises_key_derivation_error_naming_the_argument():
    def tool(query, client):
        pass

    deriver = KeyDeriver(tool, tool_name="search")
    with pytest.raises(KeyDerivationError) as info:
        deriver.derive(("x", object()), {}, tenant=None)
    message = str(info.value)
    assert "tool 'search'" in message
    assert "argument 'client'" in message
    assert "key_fn" in message
    assert "no stable value" in message


def test_plain_instance_nested_in_a_structure_names_its_path():
    def tool(payload):
        pass

    deriver = KeyDeriver(tool, tool_name="send")
    with pytest.raises(KeyDerivationError) as info:
        deriver.derive(({"items": [1, {"client": Client("u")}]},), {}, tenant=None)
    message = str(info.value)
    assert "argument 'payload.items[1].client'" in message
    assert f"{__name__}.Client" in message
    assert "key_fn" in message


def test_custom_eq_without_canonical_form_raises():
    with pytest.raises(KeyDerivationError, match="defines its own equality") as info:
        value_key(Money(3))
    assert "key_fn" in str(info.value)


def test_never_falls_back_to_str_or_repr():
    class Loud:
        def __str__(self):
            raise AssertionError("str() must not be used")

        __repr__ = __str__

    with pytest.raises(KeyDerivationError):
        value_key(Loud())
    with pytest.raises(KeyDerivationError):
        value_key(lambda: 1)


def test_cycles_and_excessive_depth_raise():
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    with pytest.raises(KeyDerivationError, match="cyclic"):
        value_key(cyclic)

    wide: dict[str, Any] = {}
    wide["a"] = [wide, wide, wide]
    with pytest.raises(KeyDerivationError, match="cyclic"):
        value_key(wide)

    deep: Any = 0
    for _ in range(150):
        deep = [deep]
    with pytest.raises(KeyDerivationError, match="levels deep"):
        value_key(deep)

    ok: Any = 0
    for _ in range(50):
        ok = [ok]
    value_key(ok)


def test_shared_but_acyclic_substructures_are_fine():
    shared = [1, 2]
    assert canonical_json([shared, shared]) == "[[1,2],[1,2]]"


def test_canonicalize_error_names_given_path():
    with pytest.raises(KeyDerivationError, match=r"argument 'root\.a\[0\]'"):
        canonicalize({"a": [object()]}, path="root")


# ---------------------------------------------------------------------------
# differing fields
# ---------------------------------------------------------------------------


def test_differing_fields_names_top_level_arguments_that_changed():
    def tool(a, b, c=None, **extra):
        pass

    deriver = KeyDeriver(tool, tool_name="tool")
    first = deriver.derive((1, {"x": 1}), {}, tenant=None)
    stored = deriver.argument_digests_json(first.arguments)
    assert all(len(digest) == 64 for digest in json.loads(stored).values())  # digests, never values
    same = deriver.derive((1.0, {"x": 1}), {}, tenant=None)
    assert deriver.differing_fields(stored, same.arguments) == ()
    changed = deriver.derive((1, {"x": 2}), {"c": True}, tenant=None)
    assert deriver.differing_fields(stored, changed.arguments) == ("b", "c")
    # True is not 1:
    assert deriver.differing_fields(deriver.argument_digests_json({"a": 1}), {"a": True}) == (
        "a",
    )
    # present on one side only:
    assert deriver.differing_fields(
        deriver.argument_digests_json({"a": 1, "b": 2}), {"a": 1, "z": 2}
    ) == ("b", "z")
    assert deriver.differing_fields("not json", {"a": 1}) == ()


# ---------------------------------------------------------------------------
# properties and cross-process stability
# ---------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=True),
    st.text(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.binary(max_size=8),
)
_hashables = st.recursive(
    _scalars.filter(lambda v: not isinstance(v, float) or v == v),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.dictionaries(st.integers(-5, 5), inner, max_size=4),
        st.sets(_hashables, max_size=4),
        st.frozensets(_hashables, max_size=4),
    ),
    max_leaves=20,
)


def _variant(value: Any) -> Any:
    """An equal value, built differently: other insertion orders, tuple<->list, 1<->1.0, 1.5<->1.50."""
    t = type(value)
    if t is bool or value is None or t is str or t is bytes:
        return value
    if t is int:
        return float(value) if abs(value) < 2**53 else value
    if t is float:
        return int(value) if value.is_integer() else value
    if t is Decimal:
        sign, digits, exponent = value.as_tuple()
        return Decimal((sign, (*digits, 0, 0), exponent - 2))  # 1.5 -> 1.500, exactly
    if t is list:
        return tuple(_variant(v) for v in value)
    if t is tuple:
        return [_variant(v) for v in value]
    if t is dict:
        return {_hashable_variant(k): _variant(v) for k, v in reversed(list(value.items()))}
    if t in (set, frozenset):
        return t(_hashable_variant(v) for v in reversed(list(value)))
    raise AssertionError(t)


def _hashable_variant(value: Any) -> Any:
    if type(value) is tuple:
        return tuple(_hashable_variant(x) for x in value)  # stay hashable
    return _variant(value)


@settings(max_examples=200, deadline=None)
@given(_values)
def test_property_equal_values_built_differently_have_equal_keys(value):
    other = _variant(value)
    assert canonical_json(value) == canonical_json(other)
    assert value_key(value) == value_key(other)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=4), st.integers(), max_size=6), st.randoms())
def test_property_dict_insertion_order_does_not_matter(d, rnd):
    items = list(d.items())
    rnd.shuffle(items)
    assert value_key(d) == value_key(dict(items))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=4), max_size=8, unique=True), st.randoms())
def test_property_set_construction_order_does_not_matter(items, rnd):
    shuffled = list(items)
    rnd.shuffle(shuffled)
    s1: set[str] = set()
    for x in items:
        s1.add(x)
    s2: set[str] = set()
    for x in shuffled:
        s2.add(x)
    assert value_key(s1) == value_key(s2) == value_key(frozenset(shuffled))


_CROSS_PROCESS_SCRIPT = """
import json, sys
from tbay_core.keys import KeyDeriver
def tool(tags, meta, frozen, nested):
    pass
d = KeyDeriver(tool, tool_name="cross")
args = (
    {"alpha", "beta", "gamma", "delta", "épsilon"},
    {"zeta": 1, "eta": {"theta", "iota"}, ("k", 1): "tuple-key"},
    frozenset({"kappa", "lambda", frozenset({"mu", "nu"})}),
    [{"xi": {b"omicron", b"pi"}}, {3: "rho", 1: "sigma"}],
)
i = d.derive(args, {}, tenant="acme")
print(json.dumps([i.key, i.fingerprint]))
"""


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_keys_are_identical_across_processes_and_hash_seeds(seed):
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(keys_module.__file__)))
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=package_root)
    out = subprocess.run(
        [sys.executable, "-c", _CROSS_PROCESS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    namespace: dict[str, Any] = {}
    local_script = _CROSS_PROCESS_SCRIPT.replace("print(json.dumps([i.key, i.fingerprint]))", "")
    exec(local_script, namespace)
    expected = [namespace["i"].key, namespace["i"].fingerprint]
    assert json.loads(out) == expected


def test_ints_too_long_to_print_raise_key_derivation_error():
    if sys.get_int_max_str_digits() == 0:  # unlimited in this interpreter
        pytest.skip("no int digit limit")
    with pytest.raises(KeyDerivationError, match="one of the arguments contains an int"):
        value_key([1, 10**5000])
    with pytest.raises(
        KeyDerivationError, match=r"argument 'value\[<set element>\]' contains an int"
    ):
        value_key({1, 10**5000})
