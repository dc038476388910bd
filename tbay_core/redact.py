"""Masking secrets in the audit copy of a call's arguments.

The audit log is read by people (``tbay log``, dashboards, incident
reviews) who must not see passwords, tokens or card numbers, while keys and
fingerprints still need the real values (two refunds to different cards are
different calls). So the engine hashes the real arguments and stores only
what :meth:`Redactor.redact` returns: a new, JSON-able structure with
secrets replaced by :data:`MASK`.

What is masked:

- names in ``redact_args`` without a dot, as a key at any depth;
- dotted paths in ``redact_args`` from the top (``"card.number"``); lists
  are traversed transparently, so ``"items.token"`` masks ``token`` in every
  dict element of the list ``items``;
- keys whose name matches one of ``redact_patterns`` (``re.search``,
  case-insensitive), at any depth;
- always, in addition: keys whose name matches
  :data:`DEFAULT_SECRET_KEY_PATTERN`, and payment card numbers (13 to 19
  digits, optionally grouped with spaces or dashes, passing the Luhn check)
  anywhere in a string value, the whole value if it is one.

Dataclasses and pydantic models are shown as dicts, so paths and names reach
into them. The display is lenient (the audit copy is for reading, not for
hashing): tuples and sets become lists, datetimes ISO strings, ``Decimal``
a string, bytes ``"<N bytes>"``, and anything without a readable value
``"<type name>"``. The input is never mutated.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import uuid
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from .errors import PolicyError

__all__ = ["MASK", "DEFAULT_SECRET_KEY_PATTERN", "Redactor", "looks_like_card_number"]

MASK = "***"

# Short tokens (pwd, ssn, cvv, ...) only count at a word boundary: snake_case,
# kebab-case or a camelCase hump, so that "classname", "author" or "oauth"
# do not match. (?-i:...) keeps the camelCase test case-sensitive while the
# pattern as a whole is matched case-insensitively.
_START = r"(?:(?<![A-Za-z])|(?-i:(?<=[a-z])(?=[A-Z])))"
_END = r"(?-i:(?![a-z]))"

#: Key names that are masked by default (matched with ``re.search`` and
#: ``re.IGNORECASE``). ``token`` does not match LLM token counts such as
#: ``max_tokens``, ``total_tokens`` or ``token_count``.
DEFAULT_SECRET_KEY_PATTERN = (
    r"pass(?:word|wd|phrase)"
    r"|secret(?!ar)"
    r"|token(?!s|i[sz]e|_?(?:count|limit|usage|budget))"
    r"|api[-_ ]?key"
    r"|authori[sz]ation"
    r"|private[-_ ]?key"
    r"|access[-_ ]?key"
    r"|client[-_ ]?secret"
    r"|cookie"
    r"|session[-_ ]?id"
    r"|card[-_ ]?(?:num|number|no)(?![a-z])"
    r"|cc[-_ ]?num(?:ber)?"
    r"|credential"
    r"|bearer"
    rf"|{_START}(?:pwd|auth|cvv2?|cvc2?|ssn|jwt|sessid){_END}"
)

_DEFAULT_KEY_RE = re.compile(DEFAULT_SECRET_KEY_PATTERN, re.IGNORECASE)
_CARD_RE = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
_MAX_DEPTH = 100
_MAX_CACHED_NAMES = 4096


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_sub(m: re.Match[str]) -> str:
    text = m.group()
    digits = text.replace(" ", "").replace("-", "")
    return MASK if _luhn_ok(digits) else text


def looks_like_card_number(text: str) -> bool:
    """Whether the whole of ``text`` is a payment card number (Luhn-valid, 13 to 19 digits)."""
    m = _CARD_RE.fullmatch(text.strip())
    return m is not None and _card_sub(m) == MASK


def _mask_cards(text: str) -> str:
    if len(text) < 13:
        return text
    return _CARD_RE.sub(_card_sub, text)


def _type_label(t: type) -> str:
    module = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", t.__name__)
    return f"<{name}>" if module in (None, "builtins") else f"<{module}.{name}>"


def _json_sort_key(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


class Redactor:
    """Masks secrets in a copy of a call's arguments; built once per policy.

    Patterns are compiled here and the decision for each key name is cached,
    so redacting on every audited call costs a walk over the arguments.
    Raises :class:`~tbay_core.errors.PolicyError` for a pattern that is not a
    valid regular expression.
    """

    def __init__(self, redact_args: Iterable[str] = (), redact_patterns: Iterable[str] = ()):
        names: set[str] = set()
        paths: set[tuple[str, ...]] = set()
        for entry in redact_args:
            entry = entry.strip()
            if not entry:
                continue
            if "." in entry:
                paths.add(tuple(part for part in entry.split(".")))
            else:
                names.add(entry)
        self._names = frozenset(names)
        self._paths = frozenset(paths)
        # Every proper prefix of a path: while the walk is on one of these,
        # it keeps track of where it is; elsewhere it stops paying for it.
        self._prefixes = frozenset(p[:i] for p in paths for i in range(1, len(p)))
        patterns = [_DEFAULT_KEY_RE]
        for pattern in redact_patterns:
            try:
                patterns.append(re.compile(pattern, re.IGNORECASE))
            except re.error as exc:
                raise PolicyError(
                    f"redact_patterns: {pattern!r} is not a valid regular expression ({exc}). "
                    "Patterns are Python regular expressions matched against argument names."
                ) from None
        self._patterns = tuple(patterns)
        self._decisions: dict[str, bool] = {}

    def _masked_name(self, name: str) -> bool:
        decision = self._decisions.get(name)
        if decision is None:
            decision = name in self._names or any(p.search(name) for p in self._patterns)
            if len(self._decisions) >= _MAX_CACHED_NAMES:
                self._decisions.clear()
            self._decisions[name] = decision
        return decision

    def redact(self, arguments: dict[str, Any]) -> Any:
        """A new JSON-able copy of ``arguments`` with secrets replaced by :data:`MASK`."""
        return self._mapping(arguments.items(), () if self._paths else None, 0, set())

    # -- walk --------------------------------------------------------------

    def _mapping(
        self,
        items: Iterable[tuple[Any, Any]],
        path: tuple[str, ...] | None,
        depth: int,
        active: set[int],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            name = k if type(k) is str else _display_key(k)
            if self._masked_name(name):
                out[name] = MASK
                continue
            child: tuple[str, ...] | None = None
            if path is not None:
                full = (*path, name)
                if full in self._paths:
                    out[name] = MASK
                    continue
                if full in self._prefixes:
                    child = full
            out[name] = self._value(v, child, depth + 1, active)
        return out

    def _value(self, v: Any, path: tuple[str, ...] | None, depth: int, active: set[int]) -> Any:
        t = type(v)
        if t is str:
            return _mask_cards(v)
        if t is int or t is bool or v is None:
            return v
        if t is float:
            return v if math.isfinite(v) else repr(v)
        if isinstance(v, enum.Enum):
            return self._value(v.value, path, depth, active)
        if isinstance(v, str):
            return _mask_cards(str.__str__(v))
        if isinstance(v, int):
            return int.__int__(v)
        if isinstance(v, float):
            f = float.__float__(v)
            return f if math.isfinite(f) else repr(f)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return f"<{len(v)} bytes>"
        if isinstance(v, (datetime, date, time)):
            return v.isoformat()
        if isinstance(v, timedelta):
            return v.total_seconds()
        if isinstance(v, (Decimal, uuid.UUID, PurePath)):
            return str(v)
        container = isinstance(v, (dict, list, tuple, set, frozenset)) or (
            dataclasses.is_dataclass(v) and not isinstance(v, type)
        )
        model = not container and hasattr(t, "model_fields") and hasattr(v, "model_dump")
        if not (container or model):
            return _type_label(t)
        if depth > _MAX_DEPTH:
            return f"<{_type_label(t)[1:-1]} nested too deep>"
        i = id(v)
        if i in active:
            return f"<{_type_label(t)[1:-1]} cycle>"
        active.add(i)
        try:
            if isinstance(v, dict):
                return self._mapping(v.items(), path, depth, active)
            if isinstance(v, (list, tuple)):
                return [self._value(x, path, depth + 1, active) for x in v]
            if isinstance(v, (set, frozenset)):
                shown = [self._value(x, path, depth + 1, active) for x in v]
                return sorted(shown, key=_json_sort_key)  # stable display order
            if model:
                try:
                    data = v.model_dump(mode="python")
                except Exception:
                    return _type_label(t)
                return self._mapping(data.items(), path, depth, active)
            fields = dataclasses.fields(v)
            return self._mapping(
                ((f.name, getattr(v, f.name)) for f in fields), path, depth, active
            )
        finally:
            active.discard(i)


def _display_key(k: Any) -> str:
    """A readable string for a non-str dict key (JSON objects only have str keys)."""
    if k is None or isinstance(k, (bool, int, float)):
        return json.dumps(k)
    if isinstance(k, enum.Enum):
        return _display_key(k.value)
    if isinstance(k, (Decimal, uuid.UUID, PurePath, str)):
        return str(k)
    if isinstance(k, (datetime, date, time)):
        return k.isoformat()
    if isinstance(k, tuple):
        return "(" + ", ".join(_display_key(x) for x in k) + ")"
    if isinstance(k, frozenset):
        return "{" + ", ".join(sorted(_display_key(x) for x in k)) + "}"
    return _type_label(type(k))
