"""Result codec: replayed results are equal to the fresh ones, type included."""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
import math
import os
import subprocess
import sys
import types
import typing
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple, Optional
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tbay_core.codec as codec
from tbay_core.codec import (
    NotReplayable,
    Unstorable,
    decode_result,
    describe_error,
    encode_result,
)


def roundtrip(value: Any, annotation: Any = None) -> Any:
    text = encode_result(value)
    json.loads(text)  # always valid, strict JSON (no NaN literals)
    return decode_result(text, annotation)


def assert_same(a: Any, b: Any) -> None:
    """Equal, and of the same type all the way down (sets and dict keys included)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
        return
    if type(a) in (list, tuple) or isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
        return
    if type(a) is dict:
        assert list(a) == list(b)  # order preserved
        for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True):
            assert_same(ka, kb)
            assert_same(va, vb)
        return
    if type(a) in (set, frozenset):
        assert a == b
        by_value = {x: x for x in b}
        for x in a:
            assert_same(x, by_value[x])
        return
    assert a == b
    if isinstance(a, float):
        assert math.copysign(1, a) == math.copysign(1, b)  # -0.0 stays negative


def _param_id(value: Any) -> str:
    try:
        return repr(value)[:40]
    except ValueError:  # a huge int has no repr under the default digit limit
        return type(value).__name__


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: str = "EUR"


@dataclasses.dataclass
class Line:
    sku: str
    qty: int
    price: Money
    tags: tuple[str, ...] = ()
    total: Decimal = dataclasses.field(init=False, default=Decimal(0))

    def __post_init__(self):
        self.total = self.price.amount * self.qty


class Coord(NamedTuple):
    lat: float
    lon: float


Pair = collections.namedtuple("Pair", "left right")


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------


def test_the_design_example_round_trips():
    value = {
        "a": (1, 2),
        3: {b"x"},
        "when": datetime.now(timezone.utc),
        "amount": Decimal("10.50"),
        "id": uuid4(),
    }
    back = roundtrip(value)
    assert_same(value, back)
    assert str(back["amount"]) == "10.50"  # not normalised


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        1,
        -(2**70),
        2**20000,  # beyond Python's 4300-digit str limit
        1.0,
        -0.0,
        0.1,
        float("inf"),
        float("-inf"),
        "",
        "héllo \u2603",
        "\ud800 lone surrogate",
        [],
        (),
        {},
        (1,),
        [(1, 2), [3, (4,)]],
        {1: "a", 2: "b"},
        {
            (1, 2): "tuple key",
            frozenset({1}): "frozenset key",
            None: "none",
            True: "bool",
            1.5: "float",
        },
        {"b": 1, "a": 2},
        set(),
        {1, 2, 3},
        frozenset({"a", frozenset({1})}),
        b"\x00\xff",
        bytearray(b"ab"),
        datetime(2024, 1, 2, 3, 4, 5, 6),
        datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
        date(2024, 2, 29),
        time(23, 59, 59, 999999),
        time(1, 2, tzinfo=timezone.utc),
        timedelta(days=-3, seconds=5, microseconds=7),
        Decimal("10.50"),
        Decimal("-0"),
        Decimal("1E+5"),
        Decimal("3.14159265358979323846264338327950288419716939937510"),
        UUID(int=42),
        Color.RED,
        Level.HIGH,
        [Color.RED, Color.GREEN, Level.LOW],
        Coord(1.5, 2.0),
        Pair([1], {"x": (2,)}),
        {"$tuple": [1, 2]},
        {"$$tuple": 1, "$": 2, "$$": 3, "normal": {"$set": [], "$map": {}}},
        {"$datetime": "2024-01-01"},
        [{"$x": (1,)}],
    ],
    ids=lambda v: _param_id(v),
)
def test_round_trip_preserves_value_and_type(value):
    assert_same(value, roundtrip(value))


def test_floats_stay_floats_and_ints_stay_ints():
    back = roundtrip([1.0, 1, True, 2.5])
    assert [type(x) for x in back] == [float, int, bool, float]
    assert math.isnan(roundtrip(float("nan")))


def test_escaping_keeps_user_keys_apart_from_tags():
    value = {"$tuple": [1, 2], "$set": {"a"}, "x": (1, 2)}
    text = encode_result(value)
    assert '"$$tuple"' in text and '"$$set"' in text
    back = decode_result(text)
    assert_same(value, back)
    assert type(back["$tuple"]) is list


def test_dataclasses_round_trip_including_init_false_fields():
    line = Line("sku-1", 3, Money(Decimal("2.50")), tags=("a", "b"))
    back = roundtrip(line)
    assert back == line and type(back) is Line
    assert type(back.price) is Money and type(back.tags) is tuple
    assert back.total == Decimal("7.50")


def test_zoneinfo_zone_survives():
    zoneinfo = pytest.importorskip("zoneinfo")
    try:
        paris = zoneinfo.ZoneInfo("Europe/Paris")
    except Exception:
        pytest.skip("no time zone database")
    value = datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=paris)  # the repeated hour
    back = roundtrip(value)
    assert back == value and back.tzinfo == paris and back.utcoffset() == value.utcoffset()


try:
    import pydantic
except ImportError:  # pragma: no cover - pydantic is a dev dependency
    pydantic = None

needs_pydantic = pytest.mark.skipif(pydantic is None, reason="pydantic not installed")

if pydantic is not None:

    class Address(pydantic.BaseModel):
        city: str
        zip_code: str = pydantic.Field(alias="zip")

    class Customer(pydantic.BaseModel):
        name: str
        since: datetime
        balance: Decimal
        address: Address
        tags: tuple[str, ...] = ()
        level: Level = Level.LOW

    @dataclasses.dataclass
    class Account:
        owner: Customer
        history: list[Customer]
        colors: list[Color]


@needs_pydantic
def test_pydantic_models_nested_in_dataclasses_round_trip():
    owner = Customer(
        name="Ada",
        since=datetime(2020, 5, 1, tzinfo=timezone.utc),
        balance=Decimal("12.30"),
        address=Address(city="Paris", zip="75001"),
        tags=("vip",),
        level=Level.HIGH,
    )
    account = Account(owner=owner, history=[owner, owner], colors=[Color.GREEN, Color.RED])
    back = roundtrip(account)
    assert back == account
    assert type(back.owner) is Customer and type(back.owner.address) is Address
    assert str(back.owner.balance) == "12.30" and type(back.owner.tags) is tuple
    # The return annotation alone is enough to find every class, the nested
    # ones through field annotations (as in a process that never encoded it):
    text = encode_result(account)
    saved = dict(codec._REGISTRY)
    try:
        codec._REGISTRY.clear()
        assert decode_result(text, Optional[Account]) == account  # noqa: UP045
    finally:
        codec._REGISTRY.update(saved)


@needs_pydantic
def test_pydantic_models_that_would_not_replay_equal_are_unstorable():
    class Loose(pydantic.BaseModel):
        payload: Any

    with pytest.raises(Unstorable, match=r"result\[0\] is a pydantic model .*Loose"):
        encode_result([Loose(payload=(1, 2))])  # the tuple would come back as a list
    assert roundtrip(Loose(payload=[1, {"a": None}])) == Loose(payload=[1, {"a": None}])

    class Strict(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(strict=True)
        when: datetime

    with pytest.raises(Unstorable, match="model_validate"):
        encode_result(Strict(when=datetime(2024, 1, 1)))


# ---------------------------------------------------------------------------
# unstorable results
# ---------------------------------------------------------------------------


class Opaque:
    pass


def test_unstorable_names_the_path_and_the_type():
    import socket

    sock = socket.socket()
    try:
        with pytest.raises(Unstorable) as info:
            encode_result({"items": [1, 2, sock]})
    finally:
        sock.close()
    assert str(info.value).startswith(
        "result['items'][2] is a socket.socket, which tbay cannot store"
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (object(), "result is an object"),
        ({"a": {"b": Opaque()}}, f"result['a']['b'] is a {__name__}.Opaque"),
        ([1, (2, {3: lambda: 1})], "result[1][1][3] is a function"),
        ({Opaque(): 1}, "result.keys()[0] is a"),
        ({frozenset({Opaque()})}, "result[<set element>][<set element>]"),
        (collections.OrderedDict(a=1), "subclass of dict"),
        (collections.defaultdict(list), "subclass of dict"),
        (type("Name", (str,), {})("x"), "subclass of str"),
        (type("Count", (int,), {})(1), "subclass of int"),
        (Line("s", 1, Money(Decimal(1)), tags=(Opaque(),)), "result.tags[0]"),
    ],
)
def test_unstorable_values(value, fragment):
    with pytest.raises(Unstorable) as info:
        encode_result(value)
    assert fragment in str(info.value)


def test_cyclic_and_too_deep_results_are_unstorable():
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(Unstorable, match="cyclic"):
        encode_result(cyclic)
    deep: Any = 1
    for _ in range(500):
        deep = [deep]
    with pytest.raises(Unstorable, match="levels deep"):
        encode_result(deep)


def test_dataclass_that_cannot_be_rebuilt_is_unstorable():
    @dataclasses.dataclass
    class WithInitVar:
        x: int
        seed: dataclasses.InitVar[int]

        def __post_init__(self, seed):
            pass

    with pytest.raises(Unstorable, match="requires 'seed'"):
        encode_result(WithInitVar(1, 2))


# ---------------------------------------------------------------------------
# class resolution when decoding
# ---------------------------------------------------------------------------


@pytest.fixture
def fake_module():
    """A module that can be 'unloaded' to simulate a process that never imported it."""
    module = types.ModuleType("tbay_test_fake_models")
    sys.modules[module.__name__] = module
    saved = dict(codec._REGISTRY)
    yield module
    sys.modules.pop(module.__name__, None)
    codec._REGISTRY.clear()
    codec._REGISTRY.update(saved)


def _define_in(module: types.ModuleType):
    @dataclasses.dataclass
    class Invoice:
        number: str
        lines: list[Item]

    @dataclasses.dataclass
    class Item:
        sku: str

    for cls in (Invoice, Item):
        cls.__module__ = module.__name__
        cls.__qualname__ = cls.__name__
        setattr(module, cls.__name__, cls)
    Invoice.__annotations__["lines"] = list[Item]
    Invoice.__dataclass_fields__["lines"].type = list[Item]
    return Invoice, Item


def test_classes_resolve_from_registry_then_annotation_then_loaded_modules(fake_module):
    Invoice, Item = _define_in(fake_module)
    invoice = Invoice("I-1", [Item("a"), Item("b")])
    text = encode_result(invoice)
    assert '"$dataclass":"tbay_test_fake_models:Invoice"' in text
    assert decode_result(text) == invoice  # registry filled while encoding

    codec._REGISTRY.clear()
    assert decode_result(text) == invoice  # the module is loaded: found there

    del sys.modules[fake_module.__name__]
    with pytest.raises(NotReplayable) as info:
        decode_result(text)
    message = str(info.value)
    # Decoding is bottom-up, so the first class missing is the innermost one.
    assert "dataclass 'Item'" in message and "tbay_test_fake_models" in message
    assert "import the module" in message

    # The return annotation names Invoice, and Invoice's field annotation names Item.
    assert decode_result(text, Invoice) == invoice
    assert decode_result(text, Optional[list[Invoice]]) == invoice  # noqa: UP045
    assert decode_result(text, typing.Annotated[Invoice, "meta"]) == invoice


def test_decoding_never_imports_or_calls_what_stored_data_names():
    assert "antigravity" not in sys.modules
    with pytest.raises(NotReplayable, match="antigravity"):
        decode_result('{"$enum":"antigravity:Thing","value":1}')
    assert "antigravity" not in sys.modules
    # A loaded module, but the name points at a function, not a dataclass:
    with pytest.raises(NotReplayable):
        decode_result('{"$dataclass":"os:system","fields":{"command":"echo pwned"}}')
    with pytest.raises(NotReplayable):
        decode_result('{"$model":"builtins:dict","data":{}}')


_CHILD_SCRIPT = """
import sys
from tbay_core.codec import decode_result, NotReplayable
text = sys.stdin.read()
if "plistlib" not in sys.modules:
    try:
        decode_result(text)
        print("DECODED WITHOUT THE MODULE")
    except NotReplayable as e:
        print("NOT REPLAYABLE:", e)
    assert "plistlib" not in sys.modules, "decoding must not import"
import plistlib
print(repr(decode_result(text)["format"]))
"""


def test_decoding_in_another_process_needs_the_module_loaded_there():
    import plistlib  # a stdlib Enum that a fresh interpreter has not imported

    text = encode_result({"format": plistlib.PlistFormat.FMT_XML})
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(codec.__file__)))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD_SCRIPT],
        input=text,
        env=dict(os.environ, PYTHONPATH=package_root),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "DECODED WITHOUT THE MODULE" not in out
    if "NOT REPLAYABLE:" in out:  # unless the package itself imported plistlib
        assert "'plistlib'" in out and "PlistFormat" in out
    assert "<PlistFormat.FMT_XML: 1>" in out


def test_unknown_tags_and_corrupt_text_are_not_replayable():
    with pytest.raises(NotReplayable, match="unknown tag"):
        decode_result('{"$frobnicate": 1}')
    with pytest.raises(NotReplayable, match="corrupt"):
        decode_result('{"$tuple": 1')
    with pytest.raises(NotReplayable, match="corrupt"):
        decode_result("[1,")
    with pytest.raises(NotReplayable, match="no longer has"):
        decode_result(encode_result(Color.RED).replace('"red"', '"purple"'))


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


class PaymentDeclined(Exception):
    pass


def test_describe_error():
    try:
        raise ValueError("bad amount")
    except ValueError as exc:
        error_type, message, tb = describe_error(exc)
    assert error_type == "ValueError" and message == "bad amount"
    assert tb.startswith("Traceback") and "ValueError: bad amount" in tb

    try:
        raise PaymentDeclined("card expired")
    except PaymentDeclined as exc:
        error_type, message, _ = describe_error(exc)
    assert (
        error_type == f"{PaymentDeclined.__module__}.PaymentDeclined" and message == "card expired"
    )

    class Broken(Exception):
        def __str__(self):
            raise RuntimeError("no")

    error_type, message, tb = describe_error(Broken())
    assert error_type.endswith("test_describe_error.<locals>.Broken")
    assert message.startswith("<unprintable")

    error_type, message, tb = describe_error(KeyError("x" * 50_000))
    assert len(message) <= 10_000 and len(tb) <= 20_000


# ---------------------------------------------------------------------------
# property
# ---------------------------------------------------------------------------

_tz = st.one_of(
    st.none(),
    st.just(timezone.utc),
    st.builds(
        timezone,
        st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)).map(
            lambda d: timedelta(minutes=d // timedelta(minutes=1))
        ),
    ),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
    st.datetimes(timezones=_tz),
    st.dates(),
    st.times(),
    st.timedeltas(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
)
_hashables = st.recursive(
    _scalars,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.sets(_hashables, max_size=4),
        st.frozensets(_hashables, max_size=4),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
        st.dictionaries(st.sampled_from(["$tuple", "$$x", "$", "$set"]), inner, max_size=3),
        st.dictionaries(st.integers(), inner, max_size=4),
        st.dictionaries(_hashables, inner, max_size=3),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_property_decode_encode_is_identity_with_types(value):
    assert_same(value, roundtrip(value))
