"""Leader election's pure part: what a candidate does given the Lease it read, when it saw that record
change (its own clock), the time now and its identity; and the records it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from frugal.operator.cluster.leader import (
    Action,
    Observation,
    Record,
    Timing,
    claimed,
    decide,
    new_identity,
    observe,
    released,
)
from frugal.operator.cluster.operator_command import OptionError, Options, build_parser, resolve

TIMING = Timing()  # client-go's: 15 s lease, 10 s renew deadline, 2 s retry
ME, OTHER = "frugal-abc_1", "frugal-xyz_2"
HELD = Record(OTHER, 15, "t0", "t0", 3)


def test_no_lease_is_created() -> None:
    assert decide(None, 0.0, 0.0, ME, TIMING) is Action.CREATE


def test_a_lease_held_by_another_waits_a_whole_duration_from_when_it_was_last_seen_to_change() -> None:
    assert decide(HELD, seen_at=100.0, now=100.0, identity=ME, timing=TIMING) is Action.STAND_BY
    assert decide(HELD, seen_at=100.0, now=114.9, identity=ME, timing=TIMING) is Action.STAND_BY
    assert decide(HELD, seen_at=100.0, now=115.0, identity=ME, timing=TIMING) is Action.ACQUIRE


def test_the_duration_is_the_one_the_lease_says() -> None:
    short = Record(OTHER, 5, "t0", "t0")
    assert decide(short, 100.0, 104.0, ME, TIMING) is Action.STAND_BY
    assert decide(short, 100.0, 105.0, ME, TIMING) is Action.ACQUIRE


def test_a_released_lease_is_taken_at_once() -> None:
    assert (
        decide(released(HELD, "t1"), seen_at=100.0, now=100.0, identity=ME, timing=TIMING) is Action.ACQUIRE
    )


def test_the_holder_renews_and_gives_up_past_the_renew_deadline() -> None:
    mine = Record(ME, 15, "t0", "t0")
    assert decide(mine, 100.0, 100.0, ME, TIMING) is Action.RENEW  # holder, not yet leading: take it back
    assert decide(mine, 100.0, 109.0, ME, TIMING, renewed_at=100.0) is Action.RENEW
    assert decide(mine, 100.0, 110.5, ME, TIMING, renewed_at=100.0) is Action.LOST


def test_a_leader_that_finds_another_holder_has_lost() -> None:
    assert decide(HELD, 100.0, 101.0, ME, TIMING, renewed_at=100.0) is Action.LOST
    # ... even a released lease: the leader did not release it, so someone else wrote it.
    assert decide(released(HELD, "t1"), 100.0, 101.0, ME, TIMING, renewed_at=100.0) is Action.LOST


def test_the_renew_deadline_stops_a_leader_before_a_standby_may_take_over() -> None:
    """The leader's last renewal at 100 is seen by a standby no earlier than 100: the leader stops after
    110, the standby acquires at 115 at the soonest."""
    last = Record(ME, 15, "t0", "t1")
    stops = next(
        t / 10 for t in range(1000, 1200) if decide(last, 100.0, t / 10, ME, TIMING, 100.0) is Action.LOST
    )
    takes = next(
        t / 10 for t in range(1000, 1200) if decide(last, 100.0, t / 10, OTHER, TIMING) is Action.ACQUIRE
    )
    assert stops < takes and (stops, takes) == (110.1, 115.0)


def test_an_observation_moves_only_when_the_record_changes() -> None:
    first = observe(None, HELD, 10.0)
    assert observe(first, HELD, 20.0) == Observation(HELD, 10.0)
    renewed = Record(OTHER, 15, "t0", "t5", 3)
    assert observe(first, renewed, 20.0) == Observation(renewed, 20.0)
    assert observe(first, None, 30.0) == Observation(None, 30.0)


def test_the_written_records() -> None:
    created = claimed(None, ME, "t9", TIMING)
    assert created.spec() == {"holderIdentity": ME, "leaseDurationSeconds": 15, "acquireTime": "t9",
                              "renewTime": "t9", "leaseTransitions": 0}  # fmt: skip
    taken = claimed(HELD, ME, "t9", TIMING)
    assert (taken.holder, taken.acquire_time, taken.transitions) == (ME, "t9", 4)
    renewed = claimed(Record(ME, 15, "t1", "t2", 4), ME, "t9", TIMING)
    assert (renewed.acquire_time, renewed.renew_time, renewed.transitions) == ("t1", "t9", 4)
    gone = released(taken, "t10").spec()
    assert (
        "holderIdentity" not in gone and gone["leaseDurationSeconds"] == 1 and gone["leaseTransitions"] == 4
    )
    assert Record.of(gone).holder is None and Record.of(taken.spec()) == taken


def test_identities_are_the_pod_name_and_a_fresh_suffix() -> None:
    one, two = new_identity({"POD_NAME": "frugal-7d9-x"}), new_identity({"POD_NAME": "frugal-7d9-x"})
    assert one.startswith("frugal-7d9-x_") and two.startswith("frugal-7d9-x_") and one != two
    assert new_identity({"HOSTNAME": "host-1"}).startswith("host-1_")


def options(*argv: str, env: dict[str, str] | None = None) -> Options:
    return resolve(build_parser().parse_args(argv), env or {})


def test_election_runs_where_the_pod_namespace_or_a_lease_namespace_is_known() -> None:
    assert not options().elects  # outside a cluster, no namespace: a single run
    chart = options(env={"POD_NAMESPACE": "frugal-system", "FRUGAL_LEASE_NAME": "frugal"})
    assert chart.elects and (chart.lease_namespace, chart.lease_name) == ("frugal-system", "frugal")
    assert chart.timing == Timing(15.0, 10.0, 2.0)
    assert options("--lease-namespace", "ops", env={"POD_NAMESPACE": "x"}).lease_namespace == "ops"
    assert not options("--no-leader-election", env={"POD_NAMESPACE": "x"}).elects
    assert not options(env={"POD_NAMESPACE": "x", "FRUGAL_LEADER_ELECTION": "false"}).elects


def test_the_timing_is_configurable_and_must_be_ordered() -> None:
    got = options("--lease-duration", "30", "--renew-deadline", "20", "--retry-period", "4")
    assert got.timing == Timing(30.0, 20.0, 4.0)
    with pytest.raises(OptionError, match="--renew-deadline=20: need retry period < renew deadline < lease"):
        options("--renew-deadline", "20")
    with pytest.raises(OptionError, match="FRUGAL_RETRY_PERIOD=12"):
        options(env={"FRUGAL_RETRY_PERIOD": "12"})
    with pytest.raises(OptionError, match="--lease-name"):
        options("--lease-name", "Not_A_Name")


def test_the_chart_schema_allows_any_replica_count_and_checks_the_election_values() -> None:
    chart = Path(__file__).resolve().parents[2] / "charts" / "frugal"
    schema = jsonschema.Draft7Validator(json.loads((chart / "values.schema.json").read_text()))
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert values["operator"]["replicas"] == 2 and values["operator"]["leaderElection"]["enabled"] is True

    def with_operator(**changes: Any) -> dict[str, Any]:
        return {**values, "operator": {**values["operator"], **changes}}

    schema.validate(with_operator(replicas=5))
    for bad in (
        {"replicas": -1},
        {"leaderElection": {"enable": True}},
        {"leaderElection": {"retryPeriodSeconds": 0}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            schema.validate(with_operator(**bad))
