"""Audit-copy redaction: secrets are masked, nothing else changes, the input is untouched."""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import re
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from tbay_core.errors import PolicyError
from tbay_core.redact import DEFAULT_SECRET_KEY_PATTERN, MASK, Redactor, looks_like_card_number

VISA = "4111111111111111"  # Luhn-valid test numbers
AMEX = "378282246310005"


def redact(arguments: dict[str, Any], **options: Any) -> Any:
    return Redactor(**options).redact(arguments)


# ---------------------------------------------------------------------------
# default masking
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "Password",
        "db_passwd",
        "passphrase",
        "pwd",
        "userPwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refreshToken",
        "api_key",
        "apikey",
        "X-Api-Key",
        "Authorization",
        "auth",
        "auth_header",
        "private_key",
        "privateKey",
        "aws_access_key_id",
        "cookie",
        "Set-Cookie",
        "session_id",
        "sessionId",
        "card_number",
        "cardnumber",
        "cardNumber",
        "cc_number",
        "cvv",
        "cvc",
        "ssn",
        "customerSSN",
        "credentials",
        "bearer_token",
    ],
)
def test_default_secret_key_names_are_masked(name):
    assert re.search(DEFAULT_SECRET_KEY_PATTERN, name, re.IGNORECASE)
    assert redact({name: "value"}) == {name: MASK}


@pytest.mark.parametrize(
    "name",
    [
        "query",
        "author",
        "oauth_provider",
        "max_tokens",
        "total_tokens",
        "token_count",
        "tokenizer",
        "classname",
        "lessons",
        "cardinality",
        "cardholder_name",
        "secretary",
        "amount",
        "customer_id",
    ],
)
def test_ordinary_names_are_not_masked(name):
    assert redact({name: "value"}) == {name: "value"}


def test_secret_names_are_masked_at_any_depth_and_regardless_of_type():
    arguments = {
        "request": {"headers": {"Authorization": "Bearer abc", "Accept": "json"}},
        "accounts": [{"user": "a", "password": "p1"}, {"user": "b", "password": {"nested": 1}}],
        "api_key": 12345,
        "credentials": {"user": "x", "pass": "y"},
    }
    assert redact(arguments) == {
        "request": {"headers": {"Authorization": MASK, "Accept": "json"}},
        "accounts": [{"user": "a", "password": MASK}, {"user": "b", "password": MASK}],
        "api_key": MASK,
        "credentials": MASK,
    }


def test_card_numbers_are_masked_wherever_they_appear():
    arguments = {
        "note": f"charge {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]} please",
        "raw": VISA,
        "dashed": "3782-822463-10005",
        "list": [AMEX, "hello"],
        "deep": {"x": [{"y": VISA}]},
        "not_luhn": "4111111111111112",
        "too_short": "411111111111",
        "order_id": "12345",
        "too_long": "41111111111111111111111",
        "date": "2024-01-15 10:30:00",
    }
    out = redact(arguments)
    assert out["note"] == f"charge {MASK} please"
    assert out["raw"] == MASK
    assert out["dashed"] == MASK
    assert out["list"] == [MASK, "hello"]
    assert out["deep"] == {"x": [{"y": MASK}]}
    for name in ("not_luhn", "too_short", "order_id", "too_long", "date"):
        assert out[name] == arguments[name]


def test_looks_like_card_number():
    assert looks_like_card_number(VISA)
    assert looks_like_card_number("4111 1111 1111 1111")
    assert not looks_like_card_number("4111 1111 1111 1112")
    assert not looks_like_card_number("my card 4111111111111111")


# ---------------------------------------------------------------------------
# configured masking
# ---------------------------------------------------------------------------


def test_redact_args_names_match_at_any_depth():
    out = redact({"email": "a@b.c", "customer": {"email": "x@y.z", "id": 1}}, redact_args=["email"])
    assert out == {"email": MASK, "customer": {"email": MASK, "id": 1}}


def test_dotted_paths_start_at_the_top():
    arguments = {
        "card": {"number": "1234", "expiry": "12/30"},
        "other": {"card": {"number": "keep"}},
        "customer": {"address": {"zip": "75001", "city": "Paris"}},
    }
    out = redact(arguments, redact_args=["card.number", "customer.address.zip"])
    assert out == {
        "card": {"number": MASK, "expiry": "12/30"},
        "other": {"card": {"number": "keep"}},
        "customer": {"address": {"zip": MASK, "city": "Paris"}},
    }


def test_dotted_paths_traverse_lists_transparently():
    arguments = {
        "items": [{"ref": "a", "qty": 1}, {"ref": "b", "qty": 2}, "plain", [{"ref": "c"}]],
        "ref": "top-level stays",
    }
    out = redact(arguments, redact_args=["items.ref"])
    assert out == {
        "items": [{"ref": MASK, "qty": 1}, {"ref": MASK, "qty": 2}, "plain", [{"ref": MASK}]],
        "ref": "top-level stays",
    }


def test_a_dotted_path_can_mask_a_whole_subtree():
    out = redact(
        {"customer": {"address": {"zip": 1, "city": "x"}}}, redact_args=["customer.address"]
    )
    assert out == {"customer": {"address": MASK}}


def test_redact_patterns_are_case_insensitive_regexes_on_key_names():
    arguments = {"X_Internal_Ref": 1, "meta": {"x_internal_note": "n", "y": 2}, "email_home": "e"}
    out = redact(arguments, redact_patterns=[r"^x_internal", r"email"])
    assert out == {
        "X_Internal_Ref": MASK,
        "meta": {"x_internal_note": MASK, "y": 2},
        "email_home": MASK,
    }


def test_invalid_pattern_is_a_policy_error():
    with pytest.raises(PolicyError, match=r"redact_patterns: '\(unclosed'"):
        Redactor(redact_patterns=["(unclosed"])


# ---------------------------------------------------------------------------
# display and safety
# ---------------------------------------------------------------------------


class Tier(enum.Enum):
    GOLD = "gold"


@dataclasses.dataclass
class Card:
    number: str
    holder: str
    token: str


class Handle:
    pass


def test_display_is_json_friendly():
    arguments = {
        "tuple": (1, 2),
        "set": {3, 1, 2},
        "when": datetime(2024, 1, 2, 3, 4, tzinfo=timezone.utc),
        "day": date(2024, 1, 2),
        "amount": Decimal("10.50"),
        "id": UUID(int=1),
        "blob": b"abc",
        "tier": Tier.GOLD,
        "handle": Handle(),
        "nan": float("nan"),
        "int_keys": {1: "a", (2, 3): "b"},
        "card": Card(number=VISA, holder="Ada", token="t"),
    }
    out = redact(arguments, redact_args=["card.number"])
    json.dumps(out, allow_nan=False)  # strictly JSON-able
    assert out["tuple"] == [1, 2]
    assert out["set"] == [1, 2, 3]
    assert out["when"] == "2024-01-02T03:04:00+00:00"
    assert out["day"] == "2024-01-02"
    assert out["amount"] == "10.50"
    assert out["id"] == str(UUID(int=1))
    assert out["blob"] == "<3 bytes>"
    assert out["tier"] == "gold"
    assert out["handle"] == f"<{__name__}.Handle>"
    assert out["nan"] == "nan"
    assert out["int_keys"] == {"1": "a", "(2, 3)": "b"}
    assert out["card"] == {"number": MASK, "holder": "Ada", "token": MASK}


def test_pydantic_models_are_shown_as_dicts_and_masked_inside():
    pydantic = pytest.importorskip("pydantic")

    class Login(pydantic.BaseModel):
        user: str
        password: str

    out = redact({"login": Login(user="ada", password="hunter2")})
    assert out == {"login": {"user": "ada", "password": MASK}}


def test_input_is_never_mutated():
    arguments = {
        "password": "p",
        "card": {"number": VISA, "items": [{"token": "t", "keep": [1, 2]}]},
        "tuple": ({"secret": 1},),
        "obj": Card(number=VISA, holder="h", token="t"),
    }
    snapshot = copy.deepcopy(arguments)
    out = redact(arguments, redact_args=["card.items.keep"])
    assert arguments == snapshot
    assert arguments["obj"].token == "t"
    assert out["card"]["items"][0] == {"token": MASK, "keep": MASK}
    assert out["card"] is not arguments["card"]


def test_cycles_do_not_hang():
    looped: dict[str, Any] = {"name": "x"}
    looped["self"] = looped
    out = redact({"a": looped})
    assert out["a"]["name"] == "x"
    assert "cycle" in out["a"]["self"]


def test_redactor_is_reusable():
    r = Redactor(redact_args=["email"])
    assert r.redact({"email": "a"}) == {"email": MASK}
    assert r.redact({"email": "b", "x": 1}) == {"email": MASK, "x": 1}
