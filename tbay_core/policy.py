"""Policies: what tbay may do with a tool call, and the YAML file that tunes them.

A :class:`Policy` is a plain mutable dataclass so that code can adjust a
loaded policy in place (``client.policies["readonly"].cache_ttl = 60``). Every
assignment goes through the same converter the YAML loader uses, so a policy
never holds a value of the wrong type: ``policy.cache_ttl = "10m"`` stores
``600.0`` and ``policy.max_retries = "two"`` raises :class:`PolicyError` at
the line that made the mistake, not at the first tool call hours later.
Cross-field contradictions (``idempotent: false`` with a ``cache_ttl``...) are
only checked by :meth:`Policy.validate`, because a caller changing two fields
one after the other passes through a contradictory state in between.

Every error is a :class:`~tbay_core.errors.PolicyError` whose message names
the source (the YAML file, or ``<code>``), the policy and the field, and
suggests the closest valid name for typos: the reader is an engineer looking
at a start-up failure who should not need to open this module.

Decisions the design left open (kept here so they are easy to find):

* ``cache_ttl`` of ``0``, ``null`` or absent means "kept forever"; in code the
  same holds (assigning ``0`` stores ``None``), so there is one spelling of
  forever for the engine to check.
* ``execution_timeout: 0`` is rejected rather than read as "no timeout";
  write ``null`` (or leave it out) for no timeout.
* ``approval_mode: defer`` is rejected with ``idempotent: false``: a deferred
  call is picked up again by its key when the caller repeats it, and a
  volatile policy has no key.
* ``singleflight: false`` is rejected on a non-cached *idempotent* policy
  only; on a volatile policy (``idempotent: false``) there is no key to share,
  so singleflight has no effect either way and is not an error.
* A duplicated key in the YAML file (two ``payments:`` entries, or
  ``cache_ttl`` twice in one policy) is an error naming both lines, because
  PyYAML would otherwise keep the last one silently.
* An empty policy file is accepted and yields the built-ins.
* ``approval_webhook`` must be an ``http://`` or ``https://`` URL, since the
  webhook fires in the background and a typo would otherwise never surface.
* ``approval_webhook_secret`` may embed ``${VAR}`` references anywhere in the
  string; a reference to an unset (or empty) variable is an error when the
  secret is resolved, never an unsigned webhook.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import datetime
import difflib
import math
import numbers
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tbay_core.errors import PolicyError

__all__ = [
    "POLICY_FIELDS",
    "Budget",
    "Policy",
    "RateLimit",
    "builtin_policies",
    "load_policies",
    "parse_duration",
    "parse_policies",
]

# ---------------------------------------------------------------------------
# durations
# ---------------------------------------------------------------------------

_UNIT_SECONDS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(
    r"(?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>ms|s|m|h|d)?"
)
_DURATION_FORMS = (
    "a number of seconds (30, 2.5) or a number with a unit: '500ms', '30s', '5m', '1h', '1d'"
)


def _prefix(where: str) -> str:
    """Return ``where`` followed by ': ', or nothing, so messages read well with or without it."""
    return f"{where}: " if where else ""


def parse_duration(value: Any, *, where: str = "") -> float:
    """Turn a duration as people write it into seconds (a float).

    Accepts a plain number of seconds (``30``, ``2.5``, or the string
    ``"2.5"``), a number with a unit (``"500ms"``, ``"30s"``, ``"5m"``,
    ``"1h"``, ``"1d"``; whitespace between them is fine) or a
    :class:`datetime.timedelta`. Units are lowercase only, so ``"1M"`` is never
    silently read as one minute by someone who meant a month.

    Raises :class:`PolicyError` naming ``where`` and the accepted forms for a
    negative, non-finite, boolean, empty or unparseable value: a duration that
    is quietly wrong (a TTL of zero, a lease of forever) is worse than a
    start-up error.
    """
    bad = f"{_prefix(where)}invalid duration {value!r}; use {_DURATION_FORMS}"
    if isinstance(value, bool):
        # bool is an int subclass: `cache_ttl: yes` must not mean one second.
        raise PolicyError(bad)
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, numbers.Real):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise PolicyError(
                f"{_prefix(where)}duration {value!r} is negative; use {_DURATION_FORMS}"
            )
        match = _DURATION_RE.fullmatch(text)
        if match is None:
            raise PolicyError(bad)
        number = float(match["num"])
        unit = match["unit"]
        # Divide for milliseconds so that "7ms" == 7 / 1000 exactly, not 7 * 0.001.
        seconds = number / 1000 if unit == "ms" else number * _UNIT_SECONDS[unit or "s"]
    else:
        raise PolicyError(bad)
    if not math.isfinite(seconds):
        raise PolicyError(bad)
    if seconds < 0:
        raise PolicyError(f"{_prefix(where)}duration {value!r} is negative; use {_DURATION_FORMS}")
    return seconds


def _format_duration(seconds: float) -> str:
    """Render seconds back in the largest unit that divides them, for readable messages."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


# ---------------------------------------------------------------------------
# small value checkers shared by the YAML loader, assignments and validate()
# ---------------------------------------------------------------------------


def _and_then(word: object, choices: list[str] | tuple[str, ...]) -> str:
    """Join a suggestion (if any) to the sentence that follows it: "; did you mean 'x'? " or ". "."""
    hint = _suggest(word, choices)
    return f"{hint} " if hint else ". "


def _suggest(word: object, choices: list[str] | tuple[str, ...]) -> str:
    """Return "; did you mean 'x'?" for the closest choice, or "" when nothing is close."""
    if not isinstance(word, str):
        return ""
    matches = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{matches[0]}'?" if matches else ""


def _type_name(value: object) -> str:
    """Name a value's type the way a YAML author thinks of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _check_bool(value: Any, where: str) -> bool:
    """Accept only real booleans: a string like "sure" or "false" is more likely a mistake than a choice."""
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: expected true or false, got {_type_name(value)} ({value!r})")
    return value


def _int_at_least(minimum: int) -> Callable[[Any, str], int]:
    """Build a checker for an integer field with a lower bound (counts and caps)."""

    def check(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyError(
                f"{where}: expected a whole number >= {minimum}, got {_type_name(value)} ({value!r})"
            )
        if value < minimum:
            raise PolicyError(f"{where}: must be >= {minimum}, got {value}")
        return value

    return check


def _number(value: Any, where: str) -> float:
    """Accept a non-negative finite number; numeric strings too, since YAML reads ``1e3`` as a string."""
    number: float | None = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise PolicyError(f"{where}: expected a number, got {_type_name(value)} ({value!r})")
    if number < 0:
        raise PolicyError(f"{where}: must not be negative, got {value!r}")
    return number


def _duration(value: Any, where: str) -> float:
    """A duration that may be zero (pauses and waits)."""
    if value is None:
        raise PolicyError(f"{where}: expected a duration, got null; use {_DURATION_FORMS}")
    return parse_duration(value, where=where)


def _positive_duration(value: Any, where: str) -> float:
    """A duration that must be above zero (timeouts and leases: zero would fail every call)."""
    seconds = _duration(value, where)
    if seconds <= 0:
        raise PolicyError(f"{where}: must be greater than zero, got {value!r}")
    return seconds


def _cache_ttl(value: Any, where: str) -> float | None:
    """None, 0 and absent all mean "kept forever", so the engine only has to test for None."""
    if value is None:
        return None
    seconds = parse_duration(value, where=where)
    return None if seconds == 0 else seconds


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    """Build a checker for a field with a fixed set of string values."""

    def check(value: Any, where: str) -> str:
        if value not in choices or not isinstance(value, str):
            raise PolicyError(
                f"{where}: {value!r} is not one of {', '.join(choices)}{_suggest(value, choices)}"
            )
        return value

    return check


def _arg_path(value: Any, where: str) -> str:
    """An argument name or dotted path (``order.amount``) with no empty segments."""
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(
            f"{where}: expected an argument name or dotted path such as 'amount' or 'order.amount', "
            f"got {_type_name(value)} ({value!r})"
        )
    if value != value.strip() or any(not part for part in value.split(".")):
        raise PolicyError(
            f"{where}: {value!r} is not a valid argument path (empty segment or surrounding spaces)"
        )
    return value


def _url(value: Any, where: str) -> str:
    """An http(s) URL: the webhook fires in the background, so a typo would otherwise never show."""
    if isinstance(value, str):
        parsed = urllib.parse.urlsplit(value.strip())
        if parsed.scheme in ("http", "https") and parsed.netloc:
            return value.strip()
    raise PolicyError(f"{where}: expected an http:// or https:// URL, got {value!r}")


_ENV_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _secret(value: Any, where: str) -> str:
    """A literal secret or one with ``${VAR}`` references, checked for shape but not resolved.

    Resolution is left to :meth:`Policy.resolved_webhook_secret` so that a
    file can be loaded (for ``tbay`` commands, tests, linting) on a machine
    that does not hold the secret.
    """
    if not isinstance(value, str) or not value:
        raise PolicyError(
            f"{where}: expected a non-empty string (a literal or '${{ENV_VAR}}'), got {value!r}; "
            "use null for no secret"
        )
    if "${" in _ENV_REF_RE.sub("", value):
        raise PolicyError(
            f"{where}: malformed environment reference; write '${{NAME}}' with NAME made of letters, "
            "digits and underscores"
        )
    return value


def _str_tuple(value: Any, where: str) -> tuple[str, ...]:
    """A list of non-empty strings; a single string is read as a one-item list."""
    if isinstance(value, str):
        value = [value]
    if value is None or not isinstance(value, (list, tuple)):
        raise PolicyError(
            f"{where}: expected a list of strings, got {_type_name(value)} ({value!r})"
        )
    for item in value:
        if not isinstance(item, str) or not item:
            raise PolicyError(f"{where}: every entry must be a non-empty string, got {item!r}")
    return tuple(value)


def _regex_tuple(value: Any, where: str) -> tuple[str, ...]:
    """A list of regular expressions, compiled now so a bad one fails at load, not at the first audit write."""
    patterns = _str_tuple(value, where)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PolicyError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None
    return patterns


def _optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """Let null through (it switches the feature off), otherwise apply ``check``."""

    def optional(value: Any, where: str) -> Any:
        return None if value is None else check(value, where)

    return optional


# ---------------------------------------------------------------------------
# RateLimit and Budget
# ---------------------------------------------------------------------------


@dataclass
class RateLimit:
    """At most ``count`` executions started per ``per`` seconds (per tool and tenant)."""

    count: int
    per: float

    def __post_init__(self) -> None:
        """Check the values so a hand-built ``RateLimit(0, 60)`` fails where it is written."""
        self._check("")

    def _check(self, where: str) -> None:
        """Validate count and window; also run by :meth:`Policy.validate` to catch later mutation."""
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise PolicyError(
                f"{_prefix(where)}rate limit count must be a whole number >= 1, got {self.count!r}"
            )
        per = parse_duration(self.per, where=where)
        if per <= 0:
            raise PolicyError(
                f"{_prefix(where)}rate limit window must be greater than zero, got {self.per!r}"
            )
        self.per = per

    @classmethod
    def parse(cls, text: str, *, where: str = "") -> RateLimit:
        """Parse ``"30/1m"`` (count, slash, window duration); ``"30/m"`` means one minute.

        Raises :class:`PolicyError` naming ``where`` for anything else, because
        a misread rate limit either blocks a tool or lets it run unchecked.
        """
        usage = "write it as 'COUNT/WINDOW', e.g. '30/1m', '5/10s' or '100/1h'"
        if not isinstance(text, str) or text.count("/") != 1:
            raise PolicyError(f"{_prefix(where)}invalid rate limit {text!r}; {usage}")
        count_text, window_text = (part.strip() for part in text.split("/"))
        if not re.fullmatch(r"[0-9]+", count_text):
            raise PolicyError(
                f"{_prefix(where)}invalid rate limit {text!r}: count must be a whole number; {usage}"
            )
        if window_text in _UNIT_SECONDS:
            window_text = "1" + window_text
        try:
            per = parse_duration(window_text, where="")
        except PolicyError:
            raise PolicyError(
                f"{_prefix(where)}invalid rate limit {text!r}: bad window {window_text!r}; {usage}"
            ) from None
        count = int(count_text)
        if count < 1:
            raise PolicyError(
                f"{_prefix(where)}invalid rate limit {text!r}: count must be at least 1"
            )
        if per <= 0:
            raise PolicyError(
                f"{_prefix(where)}invalid rate limit {text!r}: window must be greater than zero"
            )
        return cls(count=count, per=per)

    def __str__(self) -> str:
        """Render in the same form the YAML file uses, e.g. ``30/1m``."""
        return f"{self.count}/{_format_duration(self.per)}"


_BUDGET_KEYS = ("arg", "max", "per", "on_exceed")


def _sub_where(where: str, key: str) -> str:
    """Name a budget key inside its policy field: "..., field 'budget'" -> "..., field 'budget.max'"."""
    if where.endswith("'"):
        return f"{where[:-1]}.{key}'"
    return f"{where}, budget.{key}" if where else f"budget.{key}"


_ON_EXCEED = ("refuse", "approve")


@dataclass
class Budget:
    """The sum of argument ``arg`` over executions started in the last ``per`` seconds stays <= ``max``.

    ``on_exceed`` says what happens to a call that would go over: ``refuse``
    raises ``BudgetExceeded``; ``approve`` sends it to a human instead.
    """

    arg: str
    max: float
    per: float
    on_exceed: str = "refuse"

    def __post_init__(self) -> None:
        """Normalise and check, so ``Budget("amount", 1000, "1d")`` works and a bad one fails at once."""
        self._check("")

    def _check(self, where: str) -> None:
        """Validate every field; also run by :meth:`Policy.validate` to catch later mutation."""
        self.arg = _arg_path(self.arg, _sub_where(where, "arg"))
        self.max = _number(self.max, _sub_where(where, "max"))
        self.per = _positive_duration(self.per, _sub_where(where, "per"))
        self.on_exceed = _choice(_ON_EXCEED)(self.on_exceed, _sub_where(where, "on_exceed"))

    @classmethod
    def parse(cls, data: Any, *, where: str = "") -> Budget:
        """Build a budget from its YAML mapping ``{arg, max, per, on_exceed}``.

        Unknown keys get a close-match suggestion and missing required keys are
        listed, since a budget that silently lost its ``max`` would not limit anything.
        """
        if isinstance(data, Budget):
            data._check(where)
            return data
        if not isinstance(data, Mapping):
            raise PolicyError(
                f"{_prefix(where)}expected a mapping like {{arg: amount, max: 1000, per: 1d, "
                f"on_exceed: refuse}}, got {_type_name(data)} ({data!r})"
            )
        for key in data:
            if key not in _BUDGET_KEYS:
                raise PolicyError(
                    f"{_sub_where(where, str(key))}: unknown budget key{_and_then(key, _BUDGET_KEYS)}"
                    f"Valid budget keys: {', '.join(_BUDGET_KEYS)}"
                )
        missing = [key for key in ("arg", "max", "per") if key not in data]
        if missing:
            raise PolicyError(
                f"{_prefix(where)}budget is missing {', '.join(repr(k) for k in missing)}; "
                "a budget needs arg, max and per (on_exceed is optional, default refuse)"
            )
        budget = cls.__new__(cls)
        budget.arg = data["arg"]
        budget.max = data["max"]
        budget.per = data["per"]
        budget.on_exceed = data.get("on_exceed", "refuse")
        budget._check(where)
        return budget


def _check_rate_limit(value: Any, where: str) -> RateLimit:
    """Accept a RateLimit object (checked again) or its ``"30/1m"`` text."""
    if isinstance(value, RateLimit):
        value._check(where)
        return value
    if not isinstance(value, str):
        raise PolicyError(
            f"{where}: expected a string like '30/1m', got {_type_name(value)} ({value!r})"
        )
    return RateLimit.parse(value, where=where)


# ---------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------

_FIELD_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "idempotent": _check_bool,
    "cache_ttl": _cache_ttl,
    "singleflight": _check_bool,
    "max_retries": _int_at_least(0),
    "retry_backoff": _duration,
    "approval_required": _check_bool,
    "approval_timeout": _positive_duration,
    "approval_mode": _choice(("block", "defer")),
    "approval_bypass_arg": _optional(_arg_path),
    "approval_bypass_max": _optional(_number),
    "approval_webhook": _optional(_url),
    "approval_webhook_secret": _optional(_secret),
    "rate_limit": _optional(_check_rate_limit),
    "max_concurrent": _optional(_int_at_least(1)),
    "concurrency_wait_timeout": _duration,
    "budget": _optional(lambda value, where: Budget.parse(value, where=where)),
    "lease_timeout": _positive_duration,
    "after_crash": _choice(("rerun", "fail", "approve")),
    "execution_timeout": _optional(_positive_duration),
    "redact_args": _str_tuple,
    "redact_patterns": _regex_tuple,
    "audit_replays": _check_bool,
    "local_cache": _check_bool,
}


def _where(source: str, policy: str, field: str) -> str:
    """The standard location prefix: "policy.yaml: policy 'payments', field 'budget'"."""
    return f"{source}: policy '{policy}', field '{field}'"


@dataclass
class Policy:
    """Everything tbay decides about a tool's calls: caching, retries, approval and guardrails.

    Field meanings and defaults are documented in ``policy.example.yaml``.
    The defaults are those of the ``mutating`` built-in: a result is kept
    forever, a crash mid-run is marked LOST rather than rerun, and nothing
    needs approval. Assignments are converted and checked field by field (see
    the module docstring); call :meth:`validate` after changing several.
    """

    name: str
    idempotent: bool = True
    cache_ttl: float | None = None
    singleflight: bool = True
    max_retries: int = 0
    retry_backoff: float = 0.0
    approval_required: bool = False
    approval_timeout: float = 3600.0
    approval_mode: str = "block"
    approval_bypass_arg: str | None = None
    approval_bypass_max: float | None = None
    approval_webhook: str | None = None
    approval_webhook_secret: str | None = None
    rate_limit: RateLimit | None = None
    max_concurrent: int | None = None
    concurrency_wait_timeout: float = 0.0
    budget: Budget | None = None
    lease_timeout: float = 30.0
    after_crash: str = "fail"
    execution_timeout: float | None = None
    redact_args: tuple[str, ...] = ()
    redact_patterns: tuple[str, ...] = ()
    audit_replays: bool = False
    local_cache: bool = False

    def __setattr__(self, field: str, value: Any) -> None:
        """Convert and check each assignment, and refuse unknown names.

        Without this, ``policy.cach_ttl = 60`` would quietly create a new
        attribute and the real TTL would stay unchanged.
        """
        check = _FIELD_CHECKS.get(field)
        if check is not None:
            value = check(value, _where("<code>", self.__dict__.get("name", "?"), field))
        elif field == "name":
            if not isinstance(value, str) or not value:
                raise PolicyError(f"<code>: policy name must be a non-empty string, got {value!r}")
        elif not field.startswith("_"):
            raise PolicyError(
                f"<code>: policy '{self.__dict__.get('name', '?')}', field '{field}': unknown field"
                f"{_and_then(field, POLICY_FIELDS)}Valid fields: {', '.join(_FIELD_NAMES)}"
            )
        object.__setattr__(self, field, value)

    def validate(self, *, source: str = "<code>") -> None:
        """Raise :class:`PolicyError` if a field is invalid or two fields contradict each other.

        Each field is checked again (a nested ``budget.max`` may have been
        changed in place), then the combinations that cannot mean what the
        author intended are refused, each message saying which field to change.
        """
        for field, check in _FIELD_CHECKS.items():
            check(getattr(self, field), _where(source, self.name, field))

        def fail(field: str, message: str) -> None:
            raise PolicyError(f"{_where(source, self.name, field)}: {message}")

        if not self.idempotent:
            if self.cache_ttl is not None:
                fail(
                    "cache_ttl",
                    f"idempotent: false means results are never stored or replayed, but cache_ttl is "
                    f"{_format_duration(self.cache_ttl)}; remove cache_ttl (set it to null or 0) "
                    "or make the policy idempotent",
                )
            if self.approval_mode == "defer":
                fail(
                    "approval_mode",
                    "approval_mode: defer needs idempotent: true: the approved call is found again "
                    "by its key when the caller repeats it, and a non-idempotent policy has no key; "
                    "use approval_mode: block or make the policy idempotent",
                )
            if self.local_cache:
                fail(
                    "local_cache",
                    "idempotent: false means results are never cached, so local_cache: true "
                    "cannot apply; remove local_cache or make the policy idempotent",
                )
        elif not self.singleflight and self.cache_ttl is None:
            fail(
                "singleflight",
                "singleflight: false is only allowed on a cached policy (one with a cache_ttl): "
                "without a TTL, results are kept forever and identical calls running at once "
                "would repeat the side effect; remove singleflight: false or set a cache_ttl",
            )
        if self.local_cache and self.cache_ttl is None:
            fail(
                "local_cache",
                "local_cache: true needs a cache_ttl (the in-process cache only holds results "
                "that expire); set a cache_ttl or remove local_cache",
            )
        if self.approval_bypass_max is not None and self.approval_bypass_arg is None:
            fail(
                "approval_bypass_max",
                "approval_bypass_max needs approval_bypass_arg (the argument compared with it); "
                "set both or neither",
            )
        if self.approval_bypass_arg is not None and self.approval_bypass_max is None:
            fail(
                "approval_bypass_arg",
                "approval_bypass_arg needs approval_bypass_max (values at or below it skip "
                "approval); set both or neither",
            )

    def copy(self, **changes: Any) -> Policy:
        """Return a validated copy with ``changes`` applied (same value forms as the YAML file).

        The copy shares nothing mutable with this policy, so tuning a copy for
        one tool never changes the policy other tools use.
        """
        for field in changes:
            if field != "name" and field not in _FIELD_CHECKS:
                raise PolicyError(
                    f"<code>: policy '{self.name}', field '{field}': unknown field"
                    f"{_and_then(field, POLICY_FIELDS)}Valid fields: {', '.join(_FIELD_NAMES)}"
                )
        new = dataclasses.replace(_copy.deepcopy(self), **changes)
        new.validate()
        return new

    def resolved_webhook_secret(self) -> str | None:
        """Return the webhook secret with every ``${VAR}`` replaced from the environment.

        A missing or empty variable raises :class:`PolicyError` naming it:
        sending an unsigned (or empty-key signed) webhook would let anyone who
        can reach the approval endpoint forge approvals.
        """
        secret = self.approval_webhook_secret
        if secret is None:
            return None

        def expand(match: re.Match[str]) -> str:
            name = match.group(1)
            value = os.environ.get(name)
            if value is None:
                raise PolicyError(
                    f"policy '{self.name}', field 'approval_webhook_secret': environment variable "
                    f"{name} is not set; export it before tbay sends approval webhooks"
                )
            if not value:
                raise PolicyError(
                    f"policy '{self.name}', field 'approval_webhook_secret': environment variable "
                    f"{name} is empty; an empty key would make the webhook signature worthless"
                )
            return value

        return _ENV_REF_RE.sub(expand, secret)


_FIELD_NAMES: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Policy) if f.name != "name"
)

POLICY_FIELDS: tuple[str, ...] = (*_FIELD_NAMES, "extends")
"""The keys a policy may have in the YAML file: every :class:`Policy` field except ``name``, plus ``extends``."""


# ---------------------------------------------------------------------------
# built-ins
# ---------------------------------------------------------------------------


def builtin_policies() -> dict[str, Policy]:
    """Return fresh copies of the four built-in policies, so callers may change them freely.

    * ``readonly``: results replayed for 5 minutes, failed calls may be
      retried twice a second apart, a crashed run is simply run again.
    * ``mutating``: the defaults; results kept forever, a crashed run is LOST
      (it may or may not have happened, so nobody reruns it blindly).
    * ``destructive``: a human approves each call (1 hour to decide), and a
      crashed run goes back to a human.
    * ``volatile``: not idempotent: no key, no cache, no dedup.
    """
    return {
        "readonly": Policy(
            name="readonly", cache_ttl=300.0, max_retries=2, retry_backoff=1.0, after_crash="rerun"
        ),
        "mutating": Policy(name="mutating"),
        "destructive": Policy(
            name="destructive",
            approval_required=True,
            approval_timeout=3600.0,
            after_crash="approve",
        ),
        "volatile": Policy(name="volatile", idempotent=False, after_crash="fail"),
    }


# ---------------------------------------------------------------------------
# YAML
# ---------------------------------------------------------------------------

_TOP_LEVEL_KEYS = ("version", "policies")


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicated mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Check for duplicate keys (merge keys ``<<`` excepted) before building the mapping."""
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable key: SafeLoader reports it below
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first defined on line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(exc: yaml.MarkedYAMLError) -> str:
    """Say where the YAML broke, and where the construct it broke inside began (often the real culprit)."""
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    message = f"{where}invalid YAML: {exc.problem or exc.context or 'unreadable'}"
    if exc.context and exc.problem:
        started = exc.context_mark
        if started is not None and (mark is None or started.line != mark.line):
            message += f" ({exc.context} started on line {started.line + 1})"
        else:
            message += f" ({exc.context})"
    return message


def load_policies(path: str | os.PathLike[str] | None = None) -> dict[str, Policy]:
    """Return the built-in policies, overridden and extended by the YAML file at ``path`` if given.

    Every problem with the file (missing, unreadable, bad YAML with its line,
    wrong structure, bad field) is a :class:`PolicyError` naming the file, so
    a misconfigured deployment stops at start-up instead of running with the
    wrong guarantees.
    """
    if path is None:
        return builtin_policies()
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise PolicyError(
            f"policy file not found: {source} (looked in {os.path.abspath(source)})"
        ) from None
    except IsADirectoryError:
        raise PolicyError(f"policy file {source} is a directory, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise PolicyError(f"{source}: cannot read policy file: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        raise PolicyError(f"{source}: {_describe_yaml_error(exc)}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: invalid YAML: {exc}") from None
    return parse_policies(data, source=source)


def parse_policies(data: Any, *, source: str) -> dict[str, Policy]:
    """Build the policy table from already-parsed YAML ``data``; ``source`` names it in messages.

    Returns the built-ins first (overridden where the data says so), then the
    new policies in the order they appear. ``extends`` may refer to a built-in
    or to any policy in the same data, before or after it; each policy is
    validated as a whole after its base's fields are merged in.
    """
    policies = builtin_policies()
    if data is None:
        return policies
    if not isinstance(data, Mapping):
        raise PolicyError(
            f"{source}: the top level must be a mapping with a 'policies' key, got {_type_name(data)}"
        )
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            hint = _and_then(key, _TOP_LEVEL_KEYS)
            if hint == ". " and (key in policies or isinstance(data[key], Mapping)):
                hint = f"; policies go under 'policies:' (policies: {{{key}: ...}}). "
            raise PolicyError(
                f"{source}: unknown top-level key {key!r}{hint}Valid top-level keys: "
                f"{', '.join(_TOP_LEVEL_KEYS)}"
            )
    version = data.get("version", 1)
    if isinstance(version, bool) or version != 1:
        raise PolicyError(
            f"{source}: field 'version': unsupported version {version!r}; only 1 is accepted"
        )
    raw = data.get("policies")
    if raw is None:
        return policies
    if not isinstance(raw, Mapping):
        raise PolicyError(
            f"{source}: 'policies' must be a mapping from policy name to its fields, got {_type_name(raw)}"
        )

    # First pass: shape and per-field values, so a typo is reported as a typo
    # even when the policy's base is also wrong.
    bodies: dict[str, dict[str, Any]] = {}
    bases: dict[str, str | None] = {}
    for name, body in raw.items():
        if not isinstance(name, str) or not name.strip():
            raise PolicyError(f"{source}: policy name {name!r} must be a non-empty string")
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise PolicyError(
                f"{source}: policy '{name}' must be a mapping of fields, got {_type_name(body)} ({body!r})"
            )
        converted: dict[str, Any] = {}
        for field, value in body.items():
            where = _where(source, name, str(field))
            if field == "extends":
                if not isinstance(value, str) or not value:
                    raise PolicyError(
                        f"{where}: expected the name of another policy, got {value!r}"
                    )
                continue
            check = _FIELD_CHECKS.get(field) if isinstance(field, str) else None
            if check is None:
                raise PolicyError(
                    f"{where}: unknown field{_and_then(field, POLICY_FIELDS)}"
                    f"Valid fields: {', '.join(POLICY_FIELDS)}"
                )
            converted[field] = check(value, where)
        bodies[name] = converted
        bases[name] = body.get("extends")

    builtins = builtin_policies()
    resolved: dict[str, Policy] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> Policy:
        """Build policy ``name`` from its base, following ``extends`` and refusing cycles."""
        if name in resolved:
            return resolved[name]
        base_name = bases[name]
        if base_name is None or (base_name == name and name in builtins):
            # No base, or a built-in override that names itself: start from the built-in.
            base = builtins[name] if name in builtins else Policy(name=name)
        elif base_name in bodies:
            if base_name in chain:
                cycle = " -> ".join((*chain[chain.index(base_name) :], base_name))
                raise PolicyError(
                    f"{_where(source, name, 'extends')}: extends cycle: {cycle}; "
                    "one of these policies must extend a built-in or nothing"
                )
            base = resolve(base_name, (*chain, base_name))
        elif base_name in builtins:
            base = builtins[base_name]
        else:
            known = sorted({*builtins, *bodies})
            raise PolicyError(
                f"{_where(source, name, 'extends')}: unknown policy {base_name!r}"
                f"{_and_then(base_name, known)}Known policies: {', '.join(known)}"
            )
        policy = _copy.deepcopy(base)
        object.__setattr__(policy, "name", name)
        for field, value in bodies[name].items():
            setattr(policy, field, value)
        try:
            policy.validate(source=source)
        except PolicyError as exc:
            if base_name is not None and base_name != name:
                raise PolicyError(
                    f"{exc} (policy '{name}' extends '{base_name}'; fields not set here are inherited)"
                ) from None
            raise
        resolved[name] = policy
        return policy

    for name in bodies:
        resolve(name, (name,))
    for name in bodies:
        policies[name] = resolved[name]
    return policies
