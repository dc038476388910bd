"""The pure decision layer: what a guarded call does, given the head row, the policy and the time.

No database here: every test builds a :class:`Head` by hand and calls
:func:`decide` (or :func:`approval_reason`, :func:`admit`) directly, so each
rule of the state machine in DESIGN.md sections 3 and 4 is pinned down on its
own. The built-in policies are used as shipped, or tuned through
``policy.copy(...)`` (which validates, so every policy here is one a user could
really configure).
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbay_core.decide import (
    ACTIVE_STATUSES,
    ENDED_STATUSES,
    EXPIRED,
    FAILED,
    LOST,
    REJECTED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    WAITING_APPROVAL,
    Action,
    Admission,
    Decision,
    GuardState,
    Head,
    Refusal,
    admit,
    approval_reason,
    as_number,
    decide,
    lookup_path,
)
from tbay_core.policy import Budget, Policy, RateLimit, builtin_policies

FP = "fp-same"
OTHER_FP = "fp-other"
T0 = 1_000_000.0  # when the head finished / was created; "now" is expressed relative to it


def make_head(status: str, **changes: object) -> Head:
    """A head in ``status`` with sensible values for everything else; override with ``changes``."""
    values: dict[str, object] = {
        "execution_id": "exec-1",
        "status": status,
        "attempt": 1,
        "retry_number": 0,
        "fingerprint": FP,
        "finished_at": T0 if status in ENDED_STATUSES else None,
        "lease_expires_at": T0 + 30.0 if status == RUNNING else None,
        "replayable": True,
        "approved": False,
        "approval_deadline": T0 + 3600.0 if status == WAITING_APPROVAL else None,
    }
    values.update(changes)
    return Head(**values)  # type: ignore[arg-type]


@pytest.fixture
def policies() -> dict[str, Policy]:
    return builtin_policies()


@pytest.fixture
def readonly(policies: dict[str, Policy]) -> Policy:
    return policies["readonly"]


@pytest.fixture
def mutating(policies: dict[str, Policy]) -> Policy:
    return policies["mutating"]


@pytest.fixture
def destructive(policies: dict[str, Policy]) -> Policy:
    return policies["destructive"]


# --------------------------------------------------------------------------- sanity


def test_builtin_policies_have_the_values_these_tests_rely_on(policies: dict[str, Policy]) -> None:
    readonly, mutating, destructive = (
        policies["readonly"],
        policies["mutating"],
        policies["destructive"],
    )
    assert (readonly.cache_ttl, readonly.max_retries, readonly.retry_backoff) == (300.0, 2, 1.0)
    assert readonly.after_crash == "rerun" and readonly.singleflight
    assert mutating.cache_ttl is None and mutating.max_retries == 0
    assert mutating.after_crash == "fail"
    assert destructive.approval_required and destructive.approval_timeout == 3600.0
    assert destructive.after_crash == "approve" and destructive.approval_mode == "block"


def test_status_sets_partition_the_statuses() -> None:
    assert set(STATUSES) == ENDED_STATUSES | ACTIVE_STATUSES
    assert not ENDED_STATUSES & ACTIVE_STATUSES
    assert len(STATUSES) == 7


def test_decision_defaults() -> None:
    decision = Decision(Action.START)
    assert (decision.attempt, decision.retry_number) == (1, 0)
    assert decision.supersede is None and decision.force_approval is None
    assert decision.retry_after is None


# --------------------------------------------------------------------------- no head


@pytest.mark.parametrize("name", ["readonly", "mutating", "destructive", "volatile"])
@pytest.mark.parametrize("waiting_for", [None, "exec-1"])
def test_no_head_starts_attempt_one(
    policies: dict[str, Policy], name: str, waiting_for: str | None
) -> None:
    decision = decide(None, policies[name], T0, FP, waiting_for=waiting_for)
    assert decision == Decision(Action.START, attempt=1, retry_number=0)


# --------------------------------------------------------------------------- SUCCEEDED


@pytest.mark.parametrize("age", [0.0, 1.0, 150.0, 299.999])
def test_success_inside_ttl_replays(readonly: Policy, age: float) -> None:
    head = make_head(SUCCEEDED, attempt=3)
    assert decide(head, readonly, T0 + age, FP) == Decision(Action.REPLAY)


@pytest.mark.parametrize("age", [300.0, 300.001, 10_000.0])
def test_success_at_or_after_ttl_starts_next_attempt(readonly: Policy, age: float) -> None:
    head = make_head(SUCCEEDED, attempt=3)
    decision = decide(head, readonly, T0 + age, FP)
    assert decision == Decision(Action.START, attempt=4, retry_number=0)
    assert decision.supersede is None  # the head already ended; nothing to supersede


def test_ttl_boundary_is_exactly_finished_at_plus_ttl(readonly: Policy) -> None:
    head = make_head(SUCCEEDED)
    assert decide(head, readonly, T0 + 300.0 - 1e-6, FP).action is Action.REPLAY
    assert decide(head, readonly, T0 + 300.0, FP).action is Action.START


def test_ttl_comes_from_the_policy_passed_in(readonly: Policy) -> None:
    short = readonly.copy(cache_ttl="10s")
    head = make_head(SUCCEEDED)
    assert decide(head, short, T0 + 9.9, FP).action is Action.REPLAY
    assert decide(head, short, T0 + 10.0, FP).action is Action.START
    assert decide(head, readonly, T0 + 10.0, FP).action is Action.REPLAY


@pytest.mark.parametrize("age", [0.0, 300.0, 86_400.0 * 365 * 50])
def test_mutating_success_replays_forever(mutating: Policy, age: float) -> None:
    head = make_head(SUCCEEDED)
    assert decide(head, mutating, T0 + age, FP) == Decision(Action.REPLAY)


def test_ttl_zero_in_a_copy_means_forever(readonly: Policy) -> None:
    forever = readonly.copy(cache_ttl=0)
    assert forever.cache_ttl is None
    head = make_head(SUCCEEDED)
    assert decide(head, forever, T0 + 1e9, FP).action is Action.REPLAY


@pytest.mark.parametrize("name", ["readonly", "mutating", "destructive"])
def test_unstorable_success_is_not_replayable(policies: dict[str, Policy], name: str) -> None:
    head = make_head(SUCCEEDED, replayable=False)
    assert decide(head, policies[name], T0 + 1.0, FP) == Decision(Action.NOT_REPLAYABLE)


def test_unstorable_success_expires_like_any_success(readonly: Policy) -> None:
    head = make_head(SUCCEEDED, replayable=False, attempt=2)
    assert decide(head, readonly, T0 + 300.0, FP) == Decision(Action.START, attempt=3)


@pytest.mark.parametrize("name", ["readonly", "mutating", "destructive"])
def test_live_success_with_other_fingerprint_conflicts(
    policies: dict[str, Policy], name: str
) -> None:
    head = make_head(SUCCEEDED)
    assert decide(head, policies[name], T0 + 1.0, OTHER_FP) == Decision(Action.CONFLICT)


def test_expired_success_with_other_fingerprint_starts(readonly: Policy) -> None:
    head = make_head(SUCCEEDED, attempt=5)
    decision = decide(head, readonly, T0 + 301.0, OTHER_FP)
    assert decision == Decision(Action.START, attempt=6)


def test_success_without_finished_at_never_expires(readonly: Policy) -> None:
    # Defensive: an ended row always has finished_at, but a missing one must not crash.
    head = make_head(SUCCEEDED, finished_at=None)
    assert decide(head, readonly, T0 + 1e9, FP).action is Action.REPLAY


# --------------------------------------------------------------------------- FAILED / LOST


@pytest.mark.parametrize("status", [FAILED, LOST])
@pytest.mark.parametrize("age", [0.0, 1.0, 3600.0, 1e9])
def test_mutating_failure_replays_forever(mutating: Policy, status: str, age: float) -> None:
    head = make_head(status)
    decision = decide(head, mutating, T0 + age, FP)
    assert decision == Decision(Action.REPLAY_FAILURE)
    assert decision.retry_after is None  # no retry will ever be allowed: nothing to wait for


@pytest.mark.parametrize("status", [FAILED, LOST])
def test_readonly_failure_before_backoff_replays_with_remaining_wait(
    readonly: Policy, status: str
) -> None:
    head = make_head(status)
    decision = decide(head, readonly, T0 + 0.25, FP)
    assert decision.action is Action.REPLAY_FAILURE
    assert decision.retry_after == pytest.approx(0.75)


@pytest.mark.parametrize("status", [FAILED, LOST])
def test_readonly_failure_right_at_finish_waits_full_backoff(readonly: Policy, status: str) -> None:
    decision = decide(make_head(status), readonly, T0, FP)
    assert decision.action is Action.REPLAY_FAILURE
    assert decision.retry_after == pytest.approx(1.0)


@pytest.mark.parametrize("status", [FAILED, LOST])
@pytest.mark.parametrize("age", [1.0, 1.5, 299.0])
def test_readonly_failure_after_backoff_retries(readonly: Policy, status: str, age: float) -> None:
    head = make_head(status, attempt=1, retry_number=0)
    decision = decide(head, readonly, T0 + age, FP)
    assert decision == Decision(Action.START, attempt=2, retry_number=1)
    assert decision.supersede is None


@pytest.mark.parametrize("status", [FAILED, LOST])
def test_second_retry_allowed_then_exhausted(readonly: Policy, status: str) -> None:
    # max_retries 2: retry 0 -> 1 -> 2, then the failure is final (until the TTL).
    after_first = make_head(status, attempt=2, retry_number=1)
    assert decide(after_first, readonly, T0 + 2.0, FP) == Decision(
        Action.START, attempt=3, retry_number=2
    )
    exhausted = make_head(status, attempt=3, retry_number=2)
    decision = decide(exhausted, readonly, T0 + 2.0, FP)
    assert decision == Decision(Action.REPLAY_FAILURE)
    assert decision.retry_after is None


@pytest.mark.parametrize("status", [FAILED, LOST])
def test_exhausted_readonly_failure_still_replays_just_before_ttl(
    readonly: Policy, status: str
) -> None:
    head = make_head(status, attempt=3, retry_number=2)
    assert decide(head, readonly, T0 + 299.9, FP).action is Action.REPLAY_FAILURE


@pytest.mark.parametrize("status", [FAILED, LOST])
@pytest.mark.parametrize("retry_number", [0, 1, 2])
def test_readonly_failure_after_ttl_starts_fresh(
    readonly: Policy, status: str, retry_number: int
) -> None:
    head = make_head(status, attempt=4, retry_number=retry_number)
    decision = decide(head, readonly, T0 + 300.0, FP)
    assert decision == Decision(Action.START, attempt=5, retry_number=0)


@pytest.mark.parametrize("status", [FAILED, LOST])
def test_readonly_failure_after_ttl_with_other_fingerprint_starts(
    readonly: Policy, status: str
) -> None:
    head = make_head(status, retry_number=2)
    assert decide(head, readonly, T0 + 300.0, OTHER_FP) == Decision(Action.START, attempt=2)


@pytest.mark.parametrize("status", [FAILED, LOST])
def test_live_failure_with_other_fingerprint_conflicts(readonly: Policy, status: str) -> None:
    head = make_head(status)
    assert decide(head, readonly, T0 + 5.0, OTHER_FP) == Decision(Action.CONFLICT)


def test_retry_budget_and_backoff_come_from_a_copied_policy(mutating: Policy) -> None:
    patient = mutating.copy(max_retries=3, retry_backoff="10s")
    head = make_head(FAILED, attempt=1, retry_number=0)
    early = decide(head, patient, T0 + 4.0, FP)
    assert early.action is Action.REPLAY_FAILURE
    assert early.retry_after == pytest.approx(6.0)
    assert decide(head, patient, T0 + 10.0, FP) == Decision(Action.START, attempt=2, retry_number=1)
    last = make_head(FAILED, attempt=4, retry_number=3)
    assert decide(last, patient, T0 + 1e6, FP) == Decision(Action.REPLAY_FAILURE)


def test_failure_finished_at_epoch_zero_counts(readonly: Policy) -> None:
    head = make_head(FAILED, finished_at=0.0)
    assert decide(head, readonly, 1.0, FP) == Decision(Action.START, attempt=2, retry_number=1)


def test_zero_backoff_retries_immediately(readonly: Policy) -> None:
    eager = readonly.copy(retry_backoff=0)
    head = make_head(FAILED)
    assert decide(head, eager, T0, FP) == Decision(Action.START, attempt=2, retry_number=1)


# --------------------------------------------------------------------------- RUNNING


@pytest.mark.parametrize("name", ["readonly", "mutating", "destructive"])
def test_running_with_live_lease_is_followed(policies: dict[str, Policy], name: str) -> None:
    head = make_head(RUNNING, lease_expires_at=T0 + 30.0)
    assert decide(head, policies[name], T0 + 29.9, FP) == Decision(Action.FOLLOW)


def test_running_without_singleflight_starts_alongside(readonly: Policy) -> None:
    parallel = readonly.copy(singleflight=False)
    head = make_head(RUNNING, attempt=2, lease_expires_at=T0 + 30.0)
    decision = decide(head, parallel, T0 + 1.0, FP)
    assert decision == Decision(Action.START, attempt=3)
    assert decision.supersede is None  # the running one is alive: it is not ended


def test_running_with_other_fingerprint_conflicts(readonly: Policy) -> None:
    head = make_head(RUNNING)
    assert decide(head, readonly, T0 + 1.0, OTHER_FP) == Decision(Action.CONFLICT)
    parallel = readonly.copy(singleflight=False)
    assert decide(head, parallel, T0 + 1.0, OTHER_FP) == Decision(Action.CONFLICT)


def test_lease_boundary_is_exclusive(readonly: Policy, mutating: Policy) -> None:
    head = make_head(RUNNING, lease_expires_at=T0 + 30.0)
    assert decide(head, mutating, T0 + 30.0 - 1e-6, FP).action is Action.FOLLOW
    assert decide(head, mutating, T0 + 30.0, FP).action is Action.MARK_LOST
    assert decide(head, readonly, T0 + 30.0, FP).action is Action.START


def test_expired_lease_readonly_reruns_and_supersedes_lost(readonly: Policy) -> None:
    head = make_head(RUNNING, attempt=2, lease_expires_at=T0)
    decision = decide(head, readonly, T0 + 1.0, FP)
    assert decision == Decision(Action.START, attempt=3, retry_number=0, supersede=LOST)
    assert decision.force_approval is None


def test_expired_lease_rerun_even_without_singleflight(readonly: Policy) -> None:
    parallel = readonly.copy(singleflight=False)
    head = make_head(RUNNING, lease_expires_at=T0)
    assert decide(head, parallel, T0 + 1.0, FP) == Decision(Action.START, attempt=2, supersede=LOST)


def test_expired_lease_mutating_marks_lost(mutating: Policy) -> None:
    head = make_head(RUNNING, lease_expires_at=T0)
    assert decide(head, mutating, T0 + 1.0, FP) == Decision(Action.MARK_LOST)


def test_expired_lease_destructive_starts_under_forced_approval(destructive: Policy) -> None:
    head = make_head(RUNNING, execution_id="exec-crashed", attempt=1, lease_expires_at=T0)
    decision = decide(head, destructive, T0 + 1.0, FP)
    assert decision.action is Action.START
    assert decision.attempt == 2 and decision.retry_number == 0
    assert decision.supersede == LOST
    assert decision.force_approval is not None
    assert "exec-crashed" in decision.force_approval
    assert "human" in decision.force_approval


def test_after_crash_approve_on_a_copy_forces_approval(mutating: Policy) -> None:
    careful = mutating.copy(after_crash="approve")
    assert not careful.approval_required
    decision = decide(make_head(RUNNING, lease_expires_at=T0), careful, T0 + 1.0, FP)
    assert decision.action is Action.START and decision.supersede == LOST
    assert decision.force_approval


def test_after_crash_fail_on_readonly_copy_marks_lost(readonly: Policy) -> None:
    strict = readonly.copy(after_crash="fail")
    assert decide(make_head(RUNNING, lease_expires_at=T0), strict, T0 + 1.0, FP) == Decision(
        Action.MARK_LOST
    )


def test_running_without_a_lease_counts_as_crashed(readonly: Policy, mutating: Policy) -> None:
    head = make_head(RUNNING, lease_expires_at=None)
    assert decide(head, readonly, T0, FP).supersede == LOST
    assert decide(head, mutating, T0, FP).action is Action.MARK_LOST


def test_running_ignores_ttl(readonly: Policy) -> None:
    # A long-running readonly call is followed, however old the key is.
    head = make_head(RUNNING, finished_at=T0 - 10_000.0, lease_expires_at=T0 + 30.0)
    assert decide(head, readonly, T0, FP).action is Action.FOLLOW


# --------------------------------------------------------------------------- WAITING_APPROVAL


def test_approved_head_is_run_by_the_next_caller(destructive: Policy) -> None:
    head = make_head(WAITING_APPROVAL, approved=True)
    assert decide(head, destructive, T0 + 10.0, FP) == Decision(Action.RUN_APPROVED)
    assert decide(head, destructive, T0 + 10.0, FP, waiting_for="exec-1") == Decision(
        Action.RUN_APPROVED
    )


def test_approved_head_runs_even_past_its_deadline(destructive: Policy) -> None:
    # The human approved in time; whoever picks it up late still runs it.
    head = make_head(WAITING_APPROVAL, approved=True, approval_deadline=T0 + 10.0)
    assert decide(head, destructive, T0 + 20.0, FP).action is Action.RUN_APPROVED


def test_block_mode_follows_a_waiting_head(destructive: Policy) -> None:
    head = make_head(WAITING_APPROVAL)
    assert decide(head, destructive, T0 + 10.0, FP) == Decision(Action.FOLLOW)
    assert decide(head, destructive, T0 + 10.0, FP, waiting_for="exec-1") == Decision(Action.FOLLOW)


def test_defer_mode_reports_pending(destructive: Policy) -> None:
    deferred = destructive.copy(approval_mode="defer")
    head = make_head(WAITING_APPROVAL)
    assert decide(head, deferred, T0 + 10.0, FP) == Decision(Action.PENDING)
    assert decide(head, deferred, T0 + 10.0, FP, waiting_for="exec-1") == Decision(Action.PENDING)


def test_defer_mode_approved_runs(destructive: Policy) -> None:
    deferred = destructive.copy(approval_mode="defer")
    head = make_head(WAITING_APPROVAL, approved=True)
    assert decide(head, deferred, T0 + 10.0, FP) == Decision(Action.RUN_APPROVED)


@pytest.mark.parametrize("mode", ["block", "defer"])
def test_deadline_passed_newcomer_starts_superseding_expired(
    destructive: Policy, mode: str
) -> None:
    policy = destructive.copy(approval_mode=mode)
    head = make_head(WAITING_APPROVAL, attempt=1, approval_deadline=T0 + 3600.0)
    for waiting_for in (None, "exec-someone-else"):
        decision = decide(head, policy, T0 + 3600.0, FP, waiting_for=waiting_for)
        assert decision == Decision(Action.START, attempt=2, supersede=EXPIRED)


@pytest.mark.parametrize("mode", ["block", "defer"])
def test_deadline_passed_the_waiting_caller_is_told_it_timed_out(
    destructive: Policy, mode: str
) -> None:
    policy = destructive.copy(approval_mode=mode)
    head = make_head(WAITING_APPROVAL, approval_deadline=T0 + 3600.0)
    decision = decide(head, policy, T0 + 3601.0, FP, waiting_for="exec-1")
    assert decision == Decision(Action.APPROVAL_TIMED_OUT, supersede=EXPIRED)


def test_approval_deadline_boundary(destructive: Policy) -> None:
    head = make_head(WAITING_APPROVAL, approval_deadline=T0 + 60.0)
    assert decide(head, destructive, T0 + 60.0 - 1e-6, FP).action is Action.FOLLOW
    assert decide(head, destructive, T0 + 60.0, FP).action is Action.START


def test_waiting_without_a_deadline_never_times_out(destructive: Policy) -> None:
    head = make_head(WAITING_APPROVAL, approval_deadline=None)
    assert decide(head, destructive, T0 + 1e9, FP, waiting_for="exec-1").action is Action.FOLLOW


def test_live_waiting_head_with_other_fingerprint_conflicts(destructive: Policy) -> None:
    head = make_head(WAITING_APPROVAL)
    assert decide(head, destructive, T0 + 10.0, OTHER_FP) == Decision(Action.CONFLICT)


def test_timed_out_waiting_head_frees_the_key_for_other_arguments(destructive: Policy) -> None:
    head = make_head(WAITING_APPROVAL, attempt=1, approval_deadline=T0 + 60.0)
    expired = dataclasses.replace(head, status=EXPIRED, finished_at=T0 + 60.0)
    assert decide(expired, destructive, T0 + 61.0, OTHER_FP) == Decision(Action.START, attempt=2)
    # Same moment, same row, just not yet swept to EXPIRED: should behave the same.
    assert decide(head, destructive, T0 + 61.0, OTHER_FP) == Decision(
        Action.START, attempt=2, supersede=EXPIRED
    )


# --------------------------------------------------------------------------- EXPIRED


@pytest.mark.parametrize("name", ["readonly", "mutating", "destructive"])
def test_expired_head_lets_a_newcomer_start(policies: dict[str, Policy], name: str) -> None:
    head = make_head(EXPIRED, attempt=2)
    for waiting_for in (None, "exec-other"):
        decision = decide(head, policies[name], T0 + 1.0, FP, waiting_for=waiting_for)
        assert decision == Decision(Action.START, attempt=3)
        assert decision.supersede is None  # already ended


def test_expired_head_tells_its_waiter_it_timed_out(destructive: Policy) -> None:
    head = make_head(EXPIRED, execution_id="exec-7")
    assert decide(head, destructive, T0 + 1.0, FP, waiting_for="exec-7") == Decision(
        Action.APPROVAL_TIMED_OUT
    )


def test_expired_head_frees_the_key_for_other_arguments(destructive: Policy) -> None:
    head = make_head(EXPIRED)
    assert decide(head, destructive, T0 + 1.0, OTHER_FP) == Decision(Action.START, attempt=2)


# --------------------------------------------------------------------------- REJECTED


@pytest.mark.parametrize("name", ["mutating", "destructive"])
@pytest.mark.parametrize("age", [0.0, 1e6])
def test_rejection_is_replayed(policies: dict[str, Policy], name: str, age: float) -> None:
    head = make_head(REJECTED)
    assert decide(head, policies[name], T0 + age, FP) == Decision(Action.REPLAY_REJECTION)


def test_rejection_with_other_fingerprint_conflicts(destructive: Policy) -> None:
    head = make_head(REJECTED)
    assert decide(head, destructive, T0 + 1.0, OTHER_FP) == Decision(Action.CONFLICT)


def test_rejection_is_not_dropped_by_a_ttl(readonly: Policy) -> None:
    # Observed: REJECTED is not among the statuses the TTL expires; a human said no,
    # and that answer stays on the key even under a cached policy.
    gated = readonly.copy(approval_required=True)
    assert decide(make_head(REJECTED), gated, T0 + 1e6, FP).action is Action.REPLAY_REJECTION


# --------------------------------------------------------------------------- unknown status


def test_unknown_status_is_an_error(mutating: Policy) -> None:
    with pytest.raises(ValueError, match="BOGUS"):
        decide(make_head("BOGUS"), mutating, T0, FP)


# --------------------------------------------------------------------------- approval_reason


def bypass_policy(maximum: float = 10.0, arg: str = "amount") -> Policy:
    return builtin_policies()["destructive"].copy(
        approval_bypass_arg=arg, approval_bypass_max=maximum
    )


@pytest.mark.parametrize("name", ["readonly", "mutating", "volatile"])
def test_no_approval_required_no_reason(policies: dict[str, Policy], name: str) -> None:
    assert approval_reason(policies[name], {"amount": 1e12}) is None


def test_destructive_reason_names_the_policy(destructive: Policy) -> None:
    reason = approval_reason(destructive, {})
    assert reason is not None
    assert "'destructive'" in reason and "requires approval" in reason


def test_reason_names_a_renamed_policy(destructive: Policy) -> None:
    renamed = destructive.copy(name="payments")
    reason = approval_reason(renamed, {"x": 1})
    assert reason is not None and "'payments'" in reason


@pytest.mark.parametrize("value", [0, 1, 9.99, 10, 10.0, Decimal("10"), Fraction(19, 2)])
def test_bypass_value_at_or_below_max_skips_approval(value: object) -> None:
    assert approval_reason(bypass_policy(10.0), {"amount": value}) is None


@pytest.mark.parametrize("value", [10.0001, 11, 1e9, Decimal("10.5")])
def test_bypass_value_above_max_needs_approval(value: object) -> None:
    reason = approval_reason(bypass_policy(10.0), {"amount": value})
    assert reason is not None
    assert "'destructive'" in reason and "amount" in reason and "10" in reason


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({}, id="missing"),
        pytest.param({"amount": None}, id="none"),
        pytest.param({"amount": "abc"}, id="non-numeric-string"),
        pytest.param({"amount": ""}, id="empty-string"),
        pytest.param({"amount": True}, id="bool-true"),
        pytest.param({"amount": False}, id="bool-false"),
        pytest.param({"amount": math.nan}, id="nan"),
        pytest.param({"amount": "nan"}, id="nan-string"),
        pytest.param({"amount": -math.inf}, id="minus-inf"),
        pytest.param({"amount": math.inf}, id="inf"),
        pytest.param({"amount": "-inf"}, id="minus-inf-string"),
        pytest.param({"amount": Decimal("NaN")}, id="decimal-nan"),
        pytest.param({"amount": [1]}, id="list"),
        pytest.param({"amount": {"value": 1}}, id="dict"),
        pytest.param({"amount": 1 + 0j}, id="complex"),
        pytest.param({"amount": object()}, id="object"),
        pytest.param({"Amount": 1}, id="wrong-case-name"),
    ],
)
def test_bypass_fails_closed(arguments: dict[str, object]) -> None:
    reason = approval_reason(bypass_policy(10.0), arguments)
    assert reason is not None
    assert "or missing" in reason


def test_bypass_with_an_int_too_big_for_float_fails_closed() -> None:
    reason = approval_reason(bypass_policy(10.0), {"amount": 10**400})
    assert reason is not None


def test_as_number_of_an_int_too_big_for_float_is_none() -> None:
    assert as_number(10**400) is None


def test_numeric_strings_are_accepted_as_numbers() -> None:
    # Observed (and deliberate in as_number): a string float() understands counts as
    # its number, since tool arguments often arrive as JSON strings from an LLM.
    policy = bypass_policy(50.0)
    assert approval_reason(policy, {"amount": "20"}) is None
    assert approval_reason(policy, {"amount": " 20 "}) is None
    assert approval_reason(policy, {"amount": "2e1"}) is None
    assert approval_reason(policy, {"amount": "51"}) is not None
    assert approval_reason(bypass_policy(10.0), {"amount": "20"}) is not None


def test_negative_amounts_never_bypass() -> None:
    # A negative refund is not a small one: the gate fails closed.
    assert approval_reason(bypass_policy(10.0), {"amount": -1e9}) is not None
    assert approval_reason(bypass_policy(10.0), {"amount": 0}) is None


def test_bypass_follows_dotted_paths_into_nested_dicts() -> None:
    policy = bypass_policy(100.0, arg="order.amount")
    assert approval_reason(policy, {"order": {"amount": 50}}) is None
    assert approval_reason(policy, {"order": {"amount": 150}}) is not None
    assert approval_reason(policy, {"order": {}}) is not None
    assert approval_reason(policy, {"order": None}) is not None
    assert approval_reason(policy, {"order": 50}) is not None
    assert approval_reason(policy, {"amount": 50}) is not None
    assert approval_reason(policy, {"order.amount": 50}) is not None  # a path, not a flat name


def test_bypass_follows_deep_paths_and_object_attributes() -> None:
    policy = bypass_policy(100.0, arg="payment.order.amount")
    deep = {"payment": {"order": {"amount": 5}}}
    assert approval_reason(policy, deep) is None
    as_object = {"payment": SimpleNamespace(order=SimpleNamespace(amount=5))}
    assert approval_reason(policy, as_object) is None
    too_much = {"payment": SimpleNamespace(order={"amount": 500})}
    assert approval_reason(policy, too_much) is not None


# --------------------------------------------------------------------------- lookup_path / as_number


def test_lookup_path() -> None:
    args = {"a": {"b": {"c": 3}}, "zero": 0, "empty": "", "flag": False}
    assert lookup_path(args, "a.b.c") == 3
    assert lookup_path(args, "a.b") == {"c": 3}
    assert lookup_path(args, "a.x.c") is None
    assert lookup_path(args, "missing") is None
    assert lookup_path(args, "zero") == 0  # falsy values are values, not "absent"
    assert lookup_path(args, "empty") == ""
    assert lookup_path(args, "flag") is False
    assert lookup_path({"o": SimpleNamespace(v=7)}, "o.v") == 7
    assert lookup_path({"o": SimpleNamespace()}, "o.v") is None
    assert lookup_path({"items": [1, 2]}, "items.0") is None  # no list indexing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (3, 3.0),
        (-2.5, -2.5),
        ("20", 20.0),
        ("1e3", 1000.0),
        (Decimal("1.25"), 1.25),
        (Fraction(1, 4), 0.25),
        (b"5", 5.0),  # observed: float() accepts ASCII bytes
    ],
)
def test_as_number_accepts_finite_numbers(value: object, expected: float) -> None:
    result = as_number(value)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    [None, True, False, "abc", "", math.nan, math.inf, -math.inf, "inf", [1], {}, 1j, object()],
)
def test_as_number_rejects_everything_else(value: object) -> None:
    assert as_number(value) is None


# --------------------------------------------------------------------------- admit


def guarded(**changes: object) -> Policy:
    return builtin_policies()["mutating"].copy(**changes)


def test_admit_with_no_guardrails_admits(mutating: Policy) -> None:
    assert admit(mutating, GuardState(), T0, None) == Admission()
    busy = GuardState(started_in_window=10_000, running=10_000, budget_spent=1e12)
    assert admit(mutating, busy, T0, 1e9) == Admission()


def test_paused_refuses(mutating: Policy) -> None:
    state = GuardState(paused=True, paused_reason="incident", paused_by="ops")
    admission = admit(mutating, state, T0, None)
    assert admission.refusal is Refusal.PAUSED
    assert admission.retry_after is None and admission.needs_approval is None


def test_rate_limit_below_count_admits() -> None:
    policy = guarded(rate_limit="3/1m")
    state = GuardState(started_in_window=2, oldest_start_in_window=T0 - 10.0)
    assert admit(policy, state, T0, None) == Admission()


@pytest.mark.parametrize("started", [3, 4, 100])
def test_rate_limit_reached_refuses_until_the_oldest_leaves_the_window(started: int) -> None:
    policy = guarded(rate_limit="3/1m")
    state = GuardState(started_in_window=started, oldest_start_in_window=T0 - 10.0)
    admission = admit(policy, state, T0, None)
    assert admission.refusal is Refusal.RATE_LIMITED
    assert admission.retry_after == pytest.approx(50.0)  # oldest + window - now


def test_rate_limit_retry_after_never_negative() -> None:
    policy = guarded(rate_limit=RateLimit(1, 60.0))
    state = GuardState(started_in_window=1, oldest_start_in_window=T0 - 120.0)
    admission = admit(policy, state, T0, None)
    assert admission.refusal is Refusal.RATE_LIMITED
    assert admission.retry_after == 0.0


def test_rate_limit_without_oldest_waits_a_whole_window() -> None:
    policy = guarded(rate_limit="2/30s")
    admission = admit(policy, GuardState(started_in_window=2), T0, None)
    assert admission.refusal is Refusal.RATE_LIMITED
    assert admission.retry_after == pytest.approx(30.0)


def test_concurrency_full_refuses() -> None:
    policy = guarded(max_concurrent=2)
    assert admit(policy, GuardState(running=1), T0, None) == Admission()
    for running in (2, 3):
        admission = admit(policy, GuardState(running=running), T0, None)
        assert admission.refusal is Refusal.CONCURRENCY
        assert admission.retry_after is None


def test_budget_over_max_refuses() -> None:
    policy = guarded(budget={"arg": "amount", "max": 100, "per": "1d"})
    admission = admit(policy, GuardState(budget_spent=80.0), T0, 50.0)
    assert admission.refusal is Refusal.BUDGET
    assert admission.needs_approval is None


def test_budget_within_max_admits() -> None:
    policy = guarded(budget={"arg": "amount", "max": 100, "per": "1d"})
    assert admit(policy, GuardState(budget_spent=80.0), T0, 10.0) == Admission()
    # Exactly reaching the max is allowed: only going over is refused.
    assert admit(policy, GuardState(budget_spent=80.0), T0, 20.0) == Admission()
    assert admit(policy, GuardState(budget_spent=80.0), T0, 20.001).refusal is Refusal.BUDGET


def test_budget_already_over_refuses_even_a_zero_amount() -> None:
    policy = guarded(budget={"arg": "amount", "max": 100, "per": "1d"})
    assert admit(policy, GuardState(budget_spent=120.0), T0, 0.0).refusal is Refusal.BUDGET
    assert admit(policy, GuardState(budget_spent=120.0), T0, None).refusal is Refusal.BUDGET
    assert admit(policy, GuardState(budget_spent=100.0), T0, None) == Admission()


def test_budget_on_exceed_approve_asks_a_human_instead_of_refusing() -> None:
    policy = guarded(budget=Budget("amount", 100, "1d", on_exceed="approve"))
    admission = admit(policy, GuardState(budget_spent=80.0), T0, 50.0)
    assert admission.refusal is None
    assert admission.retry_after is None
    assert admission.needs_approval is not None
    assert "'mutating'" in admission.needs_approval
    assert "80" in admission.needs_approval and "50" in admission.needs_approval
    assert "100" in admission.needs_approval
    # Within budget: no approval needed.
    assert admit(policy, GuardState(budget_spent=80.0), T0, 10.0) == Admission()


def test_paused_wins_over_everything() -> None:
    policy = guarded(
        rate_limit="1/1m",
        max_concurrent=1,
        budget={"arg": "amount", "max": 10, "per": "1d"},
    )
    state = GuardState(
        paused=True,
        started_in_window=5,
        oldest_start_in_window=T0 - 1.0,
        running=5,
        budget_spent=1000.0,
    )
    admission = admit(policy, state, T0, 1000.0)
    assert admission == Admission(Refusal.PAUSED)


def test_rate_checked_before_concurrency_and_budget() -> None:
    policy = guarded(
        rate_limit="1/1m",
        max_concurrent=1,
        budget={"arg": "amount", "max": 10, "per": "1d"},
    )
    state = GuardState(
        started_in_window=1, oldest_start_in_window=T0 - 1.0, running=1, budget_spent=1000.0
    )
    assert admit(policy, state, T0, 1000.0).refusal is Refusal.RATE_LIMITED


def test_concurrency_checked_before_budget() -> None:
    policy = guarded(max_concurrent=1, budget={"arg": "amount", "max": 10, "per": "1d"})
    state = GuardState(running=1, budget_spent=1000.0)
    assert admit(policy, state, T0, 1000.0).refusal is Refusal.CONCURRENCY


def test_a_refusal_wins_over_budget_approval() -> None:
    policy = guarded(max_concurrent=1, budget=Budget("amount", 10, "1d", on_exceed="approve"))
    admission = admit(policy, GuardState(running=1, budget_spent=1000.0), T0, 5.0)
    assert admission == Admission(Refusal.CONCURRENCY)


# --------------------------------------------------------------------------- properties


BASE_NAMES = ("readonly", "mutating", "destructive")


@st.composite
def policies_st(draw: st.DrawFn) -> Policy:
    """A built-in policy, sometimes tuned through ``copy`` (always a valid configuration)."""
    base = builtin_policies()[draw(st.sampled_from((*BASE_NAMES, "volatile")))]
    if base.name == "volatile" or not draw(st.booleans()):
        return base
    cache_ttl = draw(st.one_of(st.none(), st.floats(1.0, 1000.0)))
    changes: dict[str, object] = {
        "cache_ttl": cache_ttl,
        "max_retries": draw(st.integers(0, 4)),
        "retry_backoff": draw(st.floats(0.0, 50.0)),
        "after_crash": draw(st.sampled_from(("rerun", "fail", "approve"))),
        "approval_mode": draw(st.sampled_from(("block", "defer"))),
        "approval_required": draw(st.booleans()),
    }
    if cache_ttl is not None:
        changes["singleflight"] = draw(st.booleans())
    return base.copy(**changes)


times = st.floats(0.0, 2000.0, allow_nan=False)


@st.composite
def heads_st(draw: st.DrawFn) -> Head:
    return Head(
        execution_id=draw(st.sampled_from(("e1", "e2"))),
        status=draw(st.sampled_from(STATUSES)),
        attempt=draw(st.integers(1, 10)),
        retry_number=draw(st.integers(0, 6)),
        fingerprint=draw(st.sampled_from((FP, OTHER_FP))),
        # finished_at 0.0 is excluded here: see test_failure_finished_at_epoch_zero_counts.
        finished_at=draw(st.one_of(st.none(), times.filter(bool))),
        lease_expires_at=draw(st.one_of(st.none(), times)),
        replayable=draw(st.booleans()),
        approved=draw(st.booleans()),
        approval_deadline=draw(st.one_of(st.none(), times)),
    )


@settings(max_examples=500, deadline=None)
@given(
    head=st.one_of(st.none(), heads_st()),
    policy=policies_st(),
    now=times,
    fingerprint=st.sampled_from((FP, OTHER_FP)),
    waiting_for=st.sampled_from((None, "e1", "e2")),
)
def test_decide_properties(
    head: Head | None, policy: Policy, now: float, fingerprint: str, waiting_for: str | None
) -> None:
    decision = decide(head, policy, now, fingerprint, waiting_for=waiting_for)
    assert isinstance(decision, Decision)

    if head is None:
        assert decision == Decision(Action.START, attempt=1)
        return

    ttl = policy.cache_ttl
    within_ttl = ttl is None or head.finished_at is None or now < head.finished_at + ttl

    if decision.action in (Action.REPLAY, Action.NOT_REPLAYABLE):
        assert head.status == SUCCEEDED
        assert head.fingerprint == fingerprint
        assert within_ttl
        assert head.replayable is (decision.action is Action.REPLAY)

    if head.status == SUCCEEDED and head.fingerprint == fingerprint and within_ttl:
        assert decision.action is (Action.REPLAY if head.replayable else Action.NOT_REPLAYABLE)

    if decision.action is Action.START:
        assert decision.attempt == head.attempt + 1
        if decision.retry_number:
            assert head.status in (FAILED, LOST)
            assert decision.retry_number == head.retry_number + 1 <= policy.max_retries
        if decision.supersede is not None:
            assert head.status in ACTIVE_STATUSES
        if decision.force_approval is not None:
            assert policy.after_crash == "approve" and decision.supersede == LOST
    else:
        assert decision.force_approval is None

    if decision.supersede == LOST:
        assert head.status == RUNNING
    if decision.supersede == EXPIRED:
        assert head.status == WAITING_APPROVAL

    if decision.action is Action.CONFLICT:
        assert head.fingerprint != fingerprint

    if decision.action is Action.APPROVAL_TIMED_OUT:
        assert waiting_for == head.execution_id
        assert head.status in (WAITING_APPROVAL, EXPIRED)

    if decision.action is Action.REPLAY_FAILURE:
        assert head.status in (FAILED, LOST)
        if decision.retry_after is not None:
            # the remaining wait until finished_at + backoff (now is the finish time if unknown)
            finished = head.finished_at if head.finished_at is not None else now
            assert decision.retry_after > 0
            assert decision.retry_after == pytest.approx(finished + policy.retry_backoff - now)

    if decision.action in (Action.FOLLOW, Action.PENDING, Action.RUN_APPROVED, Action.MARK_LOST):
        assert head.status in ACTIVE_STATUSES
        assert head.fingerprint == fingerprint
    if decision.action is Action.PENDING:
        assert policy.approval_mode == "defer"
    if decision.action is Action.MARK_LOST:
        assert head.status == RUNNING and policy.after_crash == "fail"

    if decision.action is Action.REPLAY_REJECTION:
        assert head.status == REJECTED


@settings(max_examples=200, deadline=None)
@given(head=heads_st(), policy=policies_st(), now=times)
def test_decide_is_deterministic_and_pure(head: Head, policy: Policy, now: float) -> None:
    before = dataclasses.replace(policy)
    first = decide(head, policy, now, FP, waiting_for="e1")
    assert decide(head, policy, now, FP, waiting_for="e1") == first
    assert policy == before


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**300), 10**300),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.decimals(allow_nan=True, allow_infinity=True),
    ),
    maximum=st.floats(0.0, 1e6),
)
def test_bypass_never_skips_approval_for_a_non_number(value: object, maximum: float) -> None:
    reason = approval_reason(bypass_policy(maximum), {"amount": value})
    number = as_number(value)
    if number is None:
        assert reason is not None
    else:
        assert math.isfinite(number)
        assert (reason is None) == (0 <= number <= maximum)
