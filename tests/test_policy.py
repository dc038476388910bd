"""Policies as users meet them: built-ins, durations, the YAML file and its error messages.

A policy mistake decides whether a refund runs twice or waits for a human, so
these tests pin down both the values a loaded file produces and that every
mistake stops loading with a message naming the file, the policy and the field.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tbay_core.errors import PolicyError, TbayError
from tbay_core.policy import (
    POLICY_FIELDS,
    Budget,
    Policy,
    RateLimit,
    builtin_policies,
    load_policies,
    parse_duration,
    parse_policies,
)

EXAMPLE_FILE = Path(__file__).parent.parent / "policy.example.yaml"


def write_policy(tmp_path: Path, text: str, name: str = "policy.yaml") -> Path:
    """Write a policy file the way a user would, and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    """Load ``text`` as a policy file, expect PolicyError, and return its message.

    The message must start with the path exactly as the caller gave it; that
    prefix is shortened to ``policy.yaml`` so assertions read like the log line.
    """
    path = write_policy(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_policies(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return "policy.yaml" + message[len(str(path)) :]


# ---------------------------------------------------------------------------
# built-ins
# ---------------------------------------------------------------------------


def test_builtin_policies_have_the_documented_values():
    policies = builtin_policies()
    assert list(policies) == ["readonly", "mutating", "destructive", "volatile"]

    readonly = policies["readonly"]
    assert (readonly.cache_ttl, readonly.max_retries, readonly.retry_backoff) == (300.0, 2, 1.0)
    assert readonly.after_crash == "rerun"
    assert readonly.idempotent and readonly.singleflight and not readonly.approval_required

    mutating = policies["mutating"]
    assert mutating == Policy(name="mutating")
    assert mutating.cache_ttl is None  # kept forever
    assert mutating.after_crash == "fail"
    assert mutating.max_retries == 0

    destructive = policies["destructive"]
    assert destructive.approval_required is True
    assert destructive.approval_timeout == 3600.0
    assert destructive.approval_mode == "block"
    assert destructive.after_crash == "approve"
    assert destructive.cache_ttl is None

    volatile = policies["volatile"]
    assert volatile.idempotent is False
    assert volatile.cache_ttl is None
    assert volatile.local_cache is False
    assert volatile.after_crash == "fail"

    for name, policy in policies.items():
        assert policy.name == name
        policy.validate()


def test_builtin_policies_are_fresh_copies_each_call():
    first = builtin_policies()
    first["readonly"].cache_ttl = 1
    first["destructive"].redact_args = ("x",)
    del first["volatile"]

    second = builtin_policies()
    assert second["readonly"].cache_ttl == 300.0
    assert second["destructive"].redact_args == ()
    assert "volatile" in second
    assert second["readonly"] is not builtin_policies()["readonly"]


def test_load_policies_without_a_file_gives_the_builtins_in_a_new_dict():
    loaded = load_policies()
    assert loaded == builtin_policies()
    loaded["mutating"].max_retries = 5
    assert load_policies()["mutating"].max_retries == 0


def test_policy_fields_are_the_yaml_keys():
    assert "name" not in POLICY_FIELDS
    assert POLICY_FIELDS[-1] == "extends"
    assert set(POLICY_FIELDS) == {
        "idempotent", "cache_ttl", "singleflight", "max_retries", "retry_backoff",
        "approval_required", "approval_timeout", "approval_mode", "approval_bypass_arg",
        "approval_bypass_max", "approval_webhook", "approval_webhook_secret", "rate_limit",
        "max_concurrent", "concurrency_wait_timeout", "budget", "lease_timeout", "after_crash",
        "execution_timeout", "redact_args", "redact_patterns", "audit_replays", "local_cache",
        "extends",
    }  # fmt: skip


def test_policy_errors_are_tbay_errors():
    """An agent loop catching TbayError also catches policy mistakes."""
    assert issubclass(PolicyError, TbayError)


# ---------------------------------------------------------------------------
# durations
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1ms", 0.001),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("2.5", 2.5),
        ("10", 10.0),
        (" 5 m ", 300.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("1e3", 1000.0),
        (0, 0.0),
        (30, 30.0),
        (2.5, 2.5),
        (datetime.timedelta(minutes=2), 120.0),
    ],
)
def test_parse_duration_accepts_the_documented_forms(text, seconds):
    result = parse_duration(text)
    assert result == seconds
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    ["-1s", "-5", -1, -0.5, "", "   ", "abc", "5x", "1h30m", "5M", "1 hour", "s", "ms",
     True, False, None, [5], {"s": 5}, float("inf"), float("nan"), "1" + "0" * 400],
)  # fmt: skip
def test_parse_duration_rejects_bad_values_naming_where_and_the_forms(value):
    where = "policy.yaml: policy 'x', field 'cache_ttl'"
    with pytest.raises(PolicyError) as info:
        parse_duration(value, where=where)
    message = str(info.value)
    assert message.startswith(where)
    assert "500ms" in message and "1d" in message


def test_parse_duration_says_negative_for_negative_values():
    with pytest.raises(PolicyError, match="negative"):
        parse_duration("-30s")


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_duration_round_trips_integers_in_every_unit(n):
    assert parse_duration(f"{n}ms") == n / 1000
    assert parse_duration(f"{n}s") == n
    assert parse_duration(f"{n}m") == n * 60
    assert parse_duration(f"{n}h") == n * 3600
    assert parse_duration(f"{n}d") == n * 86400
    assert parse_duration(str(n)) == n
    assert parse_duration(n) == n


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_parse_duration_round_trips_float_seconds(x):
    assert parse_duration(repr(x)) == x
    assert parse_duration(f"{x!r}s") == x
    assert parse_duration(x) == x


# ---------------------------------------------------------------------------
# RateLimit and Budget
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "per"),
    [("30/1m", 30, 60.0), ("5/10s", 5, 10.0), ("100/1h", 100, 3600.0), ("1/1d", 1, 86400.0),
     ("10 / 500ms", 10, 0.5), ("3/m", 3, 60.0), ("7/90", 7, 90.0)],
)  # fmt: skip
def test_rate_limit_parse(text, count, per):
    assert RateLimit.parse(text) == RateLimit(count=count, per=per)


@pytest.mark.parametrize(
    "text", ["30", "0/1m", "-1/1m", "3/0s", "a/1m", "3.5/1m", "3/xx", "1/2/3", ""]
)
def test_rate_limit_parse_rejects_bad_text_naming_where(text):
    with pytest.raises(PolicyError) as info:
        RateLimit.parse(text, where="here")
    assert str(info.value).startswith("here: ")
    assert text in str(info.value)


def test_rate_limit_renders_like_the_yaml_form():
    assert str(RateLimit.parse("30/1m")) == "30/1m"
    assert str(RateLimit.parse("5/10s")) == "5/10s"


def test_hand_built_rate_limit_and_budget_are_checked():
    with pytest.raises(PolicyError):
        RateLimit(count=0, per=60)
    assert Budget("amount", 1000, "1d") == Budget(arg="amount", max=1000.0, per=86400.0)
    with pytest.raises(PolicyError, match="on_exceed"):
        Budget("amount", 1000, "1d", on_exceed="ask")


# ---------------------------------------------------------------------------
# loading YAML: values
# ---------------------------------------------------------------------------


def test_overriding_a_builtin_keeps_its_unspecified_fields(tmp_path):
    path = write_policy(tmp_path, "policies:\n  readonly:\n    cache_ttl: 10m\n")
    policies = load_policies(path)
    readonly = policies["readonly"]
    assert readonly.cache_ttl == 600.0
    assert readonly.max_retries == 2
    assert readonly.retry_backoff == 1.0
    assert readonly.after_crash == "rerun"
    assert policies["mutating"] == builtin_policies()["mutating"]


def test_new_policy_without_extends_starts_from_the_defaults(tmp_path):
    path = write_policy(tmp_path, "policies:\n  billing:\n    max_retries: 1\n")
    billing = load_policies(path)["billing"]
    assert billing == Policy(name="billing", max_retries=1)


def test_every_field_reads_its_yaml_form(tmp_path):
    path = write_policy(
        tmp_path,
        """
version: 1
policies:
  everything:
    idempotent: true
    cache_ttl: 1h
    singleflight: false
    max_retries: 3
    retry_backoff: 500ms
    approval_required: true
    approval_timeout: 2h
    approval_mode: defer
    approval_bypass_arg: order.amount
    approval_bypass_max: 25.5
    approval_webhook: https://example.com/hook
    approval_webhook_secret: literal-secret
    rate_limit: 10/1s
    max_concurrent: 4
    concurrency_wait_timeout: 2
    budget: {arg: order.amount, max: 1e3, per: 1d}
    lease_timeout: 1m
    after_crash: approve
    execution_timeout: 90s
    redact_args: ssn
    redact_patterns: ["^x-", "(?i)cookie"]
    audit_replays: yes
    local_cache: true
""",
    )
    p = load_policies(path)["everything"]
    assert p == Policy(
        name="everything", idempotent=True, cache_ttl=3600.0, singleflight=False, max_retries=3,
        retry_backoff=0.5, approval_required=True, approval_timeout=7200.0, approval_mode="defer",
        approval_bypass_arg="order.amount", approval_bypass_max=25.5,
        approval_webhook="https://example.com/hook", approval_webhook_secret="literal-secret",
        rate_limit=RateLimit(10, 1.0), max_concurrent=4, concurrency_wait_timeout=2.0,
        budget=Budget(arg="order.amount", max=1000.0, per=86400.0, on_exceed="refuse"),
        lease_timeout=60.0, after_crash="approve", execution_timeout=90.0, redact_args=("ssn",),
        redact_patterns=("^x-", "(?i)cookie"), audit_replays=True, local_cache=True,
    )  # fmt: skip


@pytest.mark.parametrize("ttl", ["0", "0s", "null", "~"])
def test_cache_ttl_zero_or_null_means_forever(tmp_path, ttl):
    path = write_policy(tmp_path, f"policies:\n  keep:\n    cache_ttl: {ttl}\n")
    assert load_policies(path)["keep"].cache_ttl is None


def test_null_switches_off_an_inherited_feature(tmp_path):
    path = write_policy(
        tmp_path,
        """
policies:
  base:
    budget: {arg: amount, max: 10, per: 1h}
    rate_limit: 5/1m
  child:
    extends: base
    budget: null
    rate_limit: ~
""",
    )
    policies = load_policies(path)
    assert policies["base"].budget is not None
    assert policies["child"].budget is None
    assert policies["child"].rate_limit is None


def test_empty_file_and_empty_policies_give_the_builtins(tmp_path):
    assert load_policies(write_policy(tmp_path, "")) == builtin_policies()
    assert load_policies(write_policy(tmp_path, "version: 1\npolicies:\n")) == builtin_policies()


def test_new_policies_follow_the_builtins_in_file_order(tmp_path):
    path = write_policy(tmp_path, "policies:\n  zeta: {}\n  alpha:\n  readonly: {}\n")
    assert list(load_policies(path)) == [
        "readonly",
        "mutating",
        "destructive",
        "volatile",
        "zeta",
        "alpha",
    ]


def test_parse_policies_takes_already_parsed_data_and_names_the_source():
    policies = parse_policies({"policies": {"x": {"extends": "readonly"}}}, source="settings")
    assert policies["x"].cache_ttl == 300.0
    with pytest.raises(PolicyError, match=r"^settings: policy 'x', field 'max_retries'"):
        parse_policies({"policies": {"x": {"max_retries": -1}}}, source="settings")


# ---------------------------------------------------------------------------
# extends
# ---------------------------------------------------------------------------


def test_extends_a_builtin_and_a_forward_reference_chain(tmp_path):
    path = write_policy(
        tmp_path,
        """
policies:
  small_refunds:          # extends a policy defined further down
    extends: refunds
    approval_bypass_arg: amount
    approval_bypass_max: 20
  refunds:
    extends: payments
    rate_limit: 5/1m
  payments:
    extends: destructive
    max_concurrent: 1
""",
    )
    policies = load_policies(path)
    small = policies["small_refunds"]
    assert small.name == "small_refunds"
    assert small.approval_required is True  # from destructive
    assert small.after_crash == "approve"  # from destructive
    assert small.max_concurrent == 1  # from payments
    assert small.rate_limit == RateLimit(5, 60.0)  # from refunds
    assert small.approval_bypass_max == 20.0  # its own
    assert policies["payments"].rate_limit is None  # children do not leak into bases


def test_extends_sees_the_overridden_builtin(tmp_path):
    path = write_policy(
        tmp_path,
        "policies:\n  search: {extends: readonly}\n  readonly: {cache_ttl: 1m}\n",
    )
    assert load_policies(path)["search"].cache_ttl == 60.0


def test_extended_policies_do_not_share_mutable_parts(tmp_path):
    path = write_policy(
        tmp_path,
        "policies:\n  base:\n    budget: {arg: a, max: 5, per: 1h}\n  child: {extends: base}\n",
    )
    policies = load_policies(path)
    policies["child"].budget.max = 99
    assert policies["base"].budget.max == 5.0


@pytest.mark.parametrize(
    ("text", "cycle"),
    [
        ("policies:\n  a: {extends: b}\n  b: {extends: a}\n", "a -> b -> a"),
        (
            "policies:\n  a: {extends: b}\n  b: {extends: c}\n  c: {extends: a}\n",
            "a -> b -> c -> a",
        ),
        ("policies:\n  a: {extends: a}\n", "a -> a"),
    ],
)
def test_extends_cycles_are_named(tmp_path, text, cycle):
    message = load_error(tmp_path, text)
    assert "policy.yaml" in message
    assert "field 'extends'" in message
    assert f"cycle: {cycle}" in message


def test_a_builtin_override_may_extend_itself(tmp_path):
    path = write_policy(tmp_path, "policies:\n  readonly: {extends: readonly, max_retries: 0}\n")
    readonly = load_policies(path)["readonly"]
    assert (readonly.cache_ttl, readonly.max_retries) == (300.0, 0)


def test_extends_an_unknown_policy_suggests_a_close_name(tmp_path):
    message = load_error(tmp_path, "policies:\n  payments:\n    extends: destructve\n")
    assert "policy.yaml: policy 'payments', field 'extends'" in message
    assert "did you mean 'destructive'?" in message


def test_a_merged_policy_is_validated_as_a_whole(tmp_path):
    """idempotent: false on top of readonly inherits a cache_ttl, which volatile policies cannot have."""
    message = load_error(
        tmp_path, "policies:\n  live:\n    extends: readonly\n    idempotent: false\n"
    )
    assert "policy.yaml: policy 'live', field 'cache_ttl'" in message
    assert "extends 'readonly'" in message


def test_overriding_a_builtin_into_a_contradiction_fails(tmp_path):
    message = load_error(tmp_path, "policies:\n  readonly:\n    idempotent: false\n")
    assert "policy 'readonly', field 'cache_ttl'" in message


# ---------------------------------------------------------------------------
# validation errors: each names the file, the policy and the field
# ---------------------------------------------------------------------------

INVALID_FIELDS = [
    # (field line(s) under policy 'p', field named in the message, extra text expected)
    ("cach_ttl: 5m", "cach_ttl", "did you mean 'cache_ttl'?"),
    ("singleflght: false", "singleflght", "did you mean 'singleflight'?"),
    ("extend: readonly", "extend", "did you mean 'extends'?"),
    ("max_retires: 2", "max_retires", "did you mean 'max_retries'?"),
    ("cache_ttl: soon", "cache_ttl", "500ms"),
    ("cache_ttl: -5m", "cache_ttl", "negative"),
    ("retry_backoff: -1", "retry_backoff", "negative"),
    ("approval_timeout: 0", "approval_timeout", "greater than zero"),
    ("approval_timeout: null", "approval_timeout", "null"),
    ("lease_timeout: 0s", "lease_timeout", "greater than zero"),
    ("lease_timeout: -1s", "lease_timeout", "negative"),
    ("execution_timeout: 0", "execution_timeout", "greater than zero"),
    ("concurrency_wait_timeout: forever", "concurrency_wait_timeout", "1h"),
    ("max_retries: -1", "max_retries", ">= 0"),
    ("max_retries: two", "max_retries", "whole number"),
    ("max_retries: 1.5", "max_retries", "whole number"),
    ("max_retries: true", "max_retries", "whole number"),
    ("max_concurrent: 0", "max_concurrent", ">= 1"),
    ("idempotent: sure", "idempotent", "true or false"),
    ("idempotent: 'true'", "idempotent", "true or false"),
    ("audit_replays: 1", "audit_replays", "true or false"),
    ("local_cache: [true]", "local_cache", "true or false"),
    ("approval_mode: blok", "approval_mode", "did you mean 'block'?"),
    ("approval_mode: later", "approval_mode", "block, defer"),
    ("after_crash: retry", "after_crash", "rerun, fail, approve"),
    ("after_crash: rerunn", "after_crash", "did you mean 'rerun'?"),
    ("approval_bypass_max: -5\n    approval_bypass_arg: amount", "approval_bypass_max", "negative"),
    ("approval_bypass_max: lots\n    approval_bypass_arg: amount", "approval_bypass_max", "number"),
    ("approval_bypass_arg: ''\n    approval_bypass_max: 5", "approval_bypass_arg", "argument"),
    (
        "approval_bypass_arg: order..amount\n    approval_bypass_max: 5",
        "approval_bypass_arg",
        "order..amount",
    ),
    ("approval_webhook: hooks.example.com", "approval_webhook", "http"),
    ("approval_webhook_secret: ''", "approval_webhook_secret", "non-empty"),
    ("approval_webhook_secret: '${NOT CLOSED'", "approval_webhook_secret", "malformed"),
    ("rate_limit: 30", "rate_limit", "'30/1m'"),
    ("rate_limit: 30 per minute", "rate_limit", "COUNT/WINDOW"),
    ("rate_limit: 0/1m", "rate_limit", "at least 1"),
    ("redact_args: 5", "redact_args", "list of strings"),
    ("redact_args: [ok, 5]", "redact_args", "non-empty string"),
    ("redact_patterns: ['[unclosed']", "redact_patterns", "invalid regular expression '[unclosed'"),
    ("redact_patterns: ['ok', '(?P<x']", "redact_patterns", "'(?P<x'"),
    ("budget: 1000", "budget", "mapping"),
    (
        "budget: {arg: amount, max: 10, per: 1d, on_exeed: approve}",
        "budget.on_exeed",
        "did you mean 'on_exceed'?",
    ),
    (
        "budget: {arg: amount, max: 10, per: 1d, on_exceed: ask}",
        "budget.on_exceed",
        "refuse, approve",
    ),
    ("budget: {arg: amount, per: 1d}", "budget", "'max'"),
    ("budget: {max: 10}", "budget", "'arg', 'per'"),
    ("budget: {arg: amount, max: -1, per: 1d}", "budget.max", "negative"),
    ("budget: {arg: amount, max: 10, per: 0}", "budget.per", "greater than zero"),
    ("budget: {arg: amount, max: 10, per: someday}", "budget.per", "500ms"),
    ("budget: {arg: '', max: 10, per: 1d}", "budget.arg", "argument"),
    # contradictions
    ("singleflight: false", "singleflight", "cache_ttl"),
    ("idempotent: false\n    cache_ttl: 5m", "cache_ttl", "idempotent: false"),
    ("idempotent: false\n    local_cache: true", "local_cache", "idempotent: false"),
    ("idempotent: false\n    approval_mode: defer", "approval_mode", "idempotent"),
    ("local_cache: true", "local_cache", "cache_ttl"),
    ("approval_bypass_max: 50", "approval_bypass_max", "approval_bypass_arg"),
    ("approval_bypass_arg: amount", "approval_bypass_arg", "approval_bypass_max"),
]


@pytest.mark.parametrize(("lines", "field", "expected"), INVALID_FIELDS)
def test_invalid_policy_names_file_policy_field_and_reason(tmp_path, lines, field, expected):
    message = load_error(tmp_path, f"policies:\n  p:\n    {lines}\n")
    assert f"policy.yaml: policy 'p', field '{field}'" in message
    assert expected in message


def test_unknown_field_lists_the_valid_fields(tmp_path):
    message = load_error(tmp_path, "policies:\n  payments:\n    cach_ttl: 5m\n")
    assert message.startswith(
        "policy.yaml: policy 'payments', field 'cach_ttl': unknown field; did you mean 'cache_ttl'? "
        "Valid fields: "
    )
    for field in POLICY_FIELDS:
        assert field in message


def test_unknown_field_without_a_close_match_still_lists_valid_fields(tmp_path):
    message = load_error(tmp_path, "policies:\n  p:\n    zzzzzz: 1\n")
    assert "field 'zzzzzz': unknown field. Valid fields: idempotent" in message


def test_singleflight_false_is_fine_on_a_cached_policy(tmp_path):
    path = write_policy(tmp_path, "policies:\n  p: {cache_ttl: 30s, singleflight: false}\n")
    assert load_policies(path)["p"].singleflight is False


def test_a_base_policy_in_the_file_is_validated_even_if_only_extended(tmp_path):
    message = load_error(
        tmp_path, "policies:\n  base: {max_concurrent: 0}\n  child: {extends: base}\n"
    )
    assert "policy 'base', field 'max_concurrent'" in message


# ---------------------------------------------------------------------------
# file-level errors
# ---------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "policy.yaml"
    with pytest.raises(PolicyError) as info:
        load_policies(missing)
    assert str(missing) in str(info.value)
    assert "not found" in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(PolicyError, match="directory"):
        load_policies(tmp_path)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    message = load_error(tmp_path, "policies:\n  readonly:\n    cache_ttl: [5m\n  mutating: {}\n")
    assert message.startswith("policy.yaml: line ")
    assert "invalid YAML" in message
    line = int(message.split("line ")[1].split(",")[0])
    assert 3 <= line <= 4


def test_bad_indentation_is_a_syntax_error_with_a_line(tmp_path):
    message = load_error(tmp_path, "policies:\n  readonly:\n    cache_ttl: 5m\n   max_retries: 1\n")
    assert "policy.yaml: line 4" in message


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    text = "policies:\n  p:\n    cache_ttl: 5m\n    cache_ttl: 10m\n"
    message = load_error(tmp_path, text)
    assert "policy.yaml: line 4" in message
    assert "duplicate key 'cache_ttl' (first defined on line 3)" in message


def test_duplicate_policy_names_are_refused(tmp_path):
    message = load_error(tmp_path, "policies:\n  p: {}\n  q: {}\n  p: {max_retries: 1}\n")
    assert "duplicate key 'p'" in message


def test_yaml_merge_keys_still_work(tmp_path):
    path = write_policy(
        tmp_path,
        "policies:\n  a: &a {max_retries: 1, lease_timeout: 1m}\n  b:\n    <<: *a\n    max_retries: 3\n",
    )
    b = load_policies(path)["b"]
    assert (b.max_retries, b.lease_timeout) == (3, 60.0)


@pytest.mark.parametrize("text", ["- readonly\n- mutating\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    message = load_error(tmp_path, text)
    assert message.startswith("policy.yaml: ")
    assert "mapping" in message


def test_unknown_top_level_key_suggests(tmp_path):
    message = load_error(tmp_path, "polices:\n  readonly: {cache_ttl: 1m}\n")
    assert "policy.yaml" in message and "'polices'" in message
    assert "did you mean 'policies'?" in message


def test_policies_written_at_the_top_level_get_a_hint(tmp_path):
    message = load_error(tmp_path, "readonly:\n  cache_ttl: 1m\n")
    assert "policies go under 'policies:'" in message


@pytest.mark.parametrize("version", ["2", "'1'", "true", "0"])
def test_only_version_1_is_accepted(tmp_path, version):
    message = load_error(tmp_path, f"version: {version}\npolicies: {{}}\n")
    assert "policy.yaml" in message and "version" in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("policies: [readonly]\n", "'policies' must be a mapping"),
        ("policies:\n  p: 5\n", "policy 'p' must be a mapping"),
        ("policies:\n  p: [cache_ttl]\n", "policy 'p' must be a mapping"),
        ("policies:\n  1: {}\n", "policy name 1"),
        ("policies:\n  p: {extends: 5}\n", "field 'extends'"),
    ],
)
def test_malformed_structure(tmp_path, text, fragment):
    message = load_error(tmp_path, text)
    assert message.startswith("policy.yaml: ")
    assert fragment in message


# ---------------------------------------------------------------------------
# policy.example.yaml
# ---------------------------------------------------------------------------


def test_example_file_loads_and_has_the_documented_policies(monkeypatch):
    monkeypatch.delenv("TBAY_WEBHOOK_SECRET", raising=False)
    policies = load_policies(EXAMPLE_FILE)

    assert policies["readonly"].cache_ttl == 600.0
    assert policies["readonly"].max_retries == 2  # unspecified, kept from the built-in
    assert policies["destructive"].approval_timeout == 1800.0

    payments = policies["payments"]
    assert payments.approval_required is True
    assert payments.after_crash == "approve"
    assert payments.approval_timeout == 1800.0  # inherited from the overridden destructive
    assert (payments.approval_bypass_arg, payments.approval_bypass_max) == ("amount", 50.0)
    assert payments.approval_webhook.startswith("https://")
    assert payments.approval_webhook_secret == "${TBAY_WEBHOOK_SECRET}"
    assert payments.budget == Budget(arg="amount", max=1000.0, per=86400.0, on_exceed="approve")
    assert payments.rate_limit == RateLimit(count=30, per=60.0)
    assert payments.max_concurrent == 2
    assert "card.number" in payments.redact_args

    search = policies["search_cached"]
    assert search.local_cache is True
    assert search.cache_ttl == 30.0
    assert search.singleflight is False
    assert search.max_retries == 2  # from readonly

    assert policies["send_email"].idempotent is False
    assert policies["send_email"].approval_required is True

    # The reference policy documents the defaults, so it must equal them.
    assert policies["all_fields_reference"] == Policy(name="all_fields_reference")


def test_example_file_documents_every_field():
    text = EXAMPLE_FILE.read_text(encoding="utf-8")
    reference = yaml.safe_load(text)["policies"]["all_fields_reference"]
    assert set(reference) == set(POLICY_FIELDS) - {"extends"}
    for field in POLICY_FIELDS:
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{field}:"))
        assert "#" in line, f"{field} has no comment"


# ---------------------------------------------------------------------------
# webhook secret
# ---------------------------------------------------------------------------


def test_resolved_webhook_secret_reads_the_environment(tmp_path, monkeypatch):
    path = write_policy(
        tmp_path,
        "policies:\n  p:\n    approval_webhook: https://h.example/x\n"
        "    approval_webhook_secret: '${TBAY_TEST_SECRET}'\n",
    )
    policy = load_policies(path)["p"]
    monkeypatch.setenv("TBAY_TEST_SECRET", "s3cr3t")
    assert policy.resolved_webhook_secret() == "s3cr3t"
    assert policy.approval_webhook_secret == "${TBAY_TEST_SECRET}"  # kept as written


def test_resolved_webhook_secret_missing_variable_is_named(monkeypatch):
    monkeypatch.delenv("TBAY_TEST_SECRET", raising=False)
    policy = Policy(name="p", approval_webhook_secret="${TBAY_TEST_SECRET}")
    with pytest.raises(PolicyError) as info:
        policy.resolved_webhook_secret()
    assert "TBAY_TEST_SECRET" in str(info.value)
    assert "policy 'p'" in str(info.value)


def test_resolved_webhook_secret_empty_variable_is_refused(monkeypatch):
    monkeypatch.setenv("TBAY_TEST_SECRET", "")
    with pytest.raises(PolicyError, match="TBAY_TEST_SECRET is empty"):
        Policy(name="p", approval_webhook_secret="${TBAY_TEST_SECRET}").resolved_webhook_secret()


def test_resolved_webhook_secret_literal_embedded_and_none(monkeypatch):
    monkeypatch.setenv("TBAY_TEST_PART", "abc")
    assert Policy(name="p", approval_webhook_secret="plain").resolved_webhook_secret() == "plain"
    assert (
        Policy(name="p", approval_webhook_secret="k-${TBAY_TEST_PART}-1").resolved_webhook_secret()
        == "k-abc-1"
    )
    assert Policy(name="p").resolved_webhook_secret() is None


# ---------------------------------------------------------------------------
# mutability and copies
# ---------------------------------------------------------------------------


def test_a_loaded_policy_can_be_changed_in_place(tmp_path):
    policies = load_policies(write_policy(tmp_path, "policies:\n  readonly: {cache_ttl: 1m}\n"))
    policies["readonly"].cache_ttl = 60 * 60
    assert policies["readonly"].cache_ttl == 3600
    policies["readonly"].max_retries = 0
    policies["readonly"].validate()
    assert load_policies(write_policy(tmp_path, "{}"))["readonly"].cache_ttl == 300.0


def test_assignments_are_converted_like_the_yaml_file():
    policy = builtin_policies()["readonly"]
    policy.cache_ttl = "10m"
    assert policy.cache_ttl == 600.0
    policy.cache_ttl = 0
    assert policy.cache_ttl is None  # 0 means forever in code too
    policy.rate_limit = "30/1m"
    assert policy.rate_limit == RateLimit(30, 60.0)
    policy.redact_args = ["a", "b"]
    assert policy.redact_args == ("a", "b")


def test_bad_assignments_fail_at_once():
    policy = builtin_policies()["readonly"]
    with pytest.raises(PolicyError, match=r"policy 'readonly', field 'max_retries'"):
        policy.max_retries = "two"
    with pytest.raises(PolicyError, match=r"did you mean 'cache_ttl'\?"):
        policy.cach_ttl = 60
    assert not hasattr(policy, "cach_ttl")
    assert policy.max_retries == 2


def test_validate_catches_contradictions_made_in_code():
    policy = builtin_policies()["mutating"]
    policy.singleflight = False  # allowed one field at a time...
    with pytest.raises(PolicyError, match=r"<code>: policy 'mutating', field 'singleflight'"):
        policy.validate()  # ...but refused as a whole
    with pytest.raises(PolicyError, match=r"^app.py: policy 'mutating'"):
        policy.validate(source="app.py")
    policy.cache_ttl = "1m"
    policy.validate()


def test_validate_catches_nested_changes():
    policy = Policy(name="p", budget={"arg": "amount", "max": 10, "per": "1h"})
    policy.budget.on_exceed = "later"
    with pytest.raises(PolicyError, match=r"field 'budget.on_exceed'"):
        policy.validate()


def test_copy_applies_changes_validates_and_shares_nothing():
    base = Policy(name="pay", budget=Budget("amount", 100, "1d"))
    tuned = base.copy(name="pay_fast", max_retries=1, cache_ttl="1m", rate_limit="5/1s")
    assert (tuned.name, tuned.max_retries, tuned.cache_ttl) == ("pay_fast", 1, 60.0)
    assert tuned.rate_limit == RateLimit(5, 1.0)
    tuned.budget.max = 1
    assert base.budget.max == 100.0
    assert base.max_retries == 0

    with pytest.raises(PolicyError, match="singleflight"):
        base.copy(singleflight=False)
    with pytest.raises(PolicyError, match=r"did you mean 'max_retries'\?"):
        base.copy(max_retry=3)
