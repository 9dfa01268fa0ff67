"""The lag gauge behind publisher flow control: sentinels, probes, echoes, the lower median."""

from __future__ import annotations

import pytest

from tidings.core.flow import LagGauge


def test_a_gauge_without_sentinels_sees_no_lag():
    gauge: LagGauge[str] = LagGauge()
    assert gauge.lag(5.0) == 0.0
    assert len(gauge) == 0
    assert gauge.idle() == []


def test_a_gauge_needs_a_sentinel():
    with pytest.raises(ValueError, match="at least one sentinel"):
        LagGauge(sentinels=0)


def test_enlisting_stops_when_full_and_is_idempotent():
    gauge: LagGauge[str] = LagGauge(sentinels=2)
    assert gauge.enlist("a", 0.0)
    assert gauge.enlist("a", 0.0)
    assert gauge.enlist("b", 0.0)
    assert gauge.full
    assert not gauge.enlist("c", 0.0)
    assert "c" not in gauge and "a" in gauge
    assert sorted(gauge.idle()) == ["a", "b"]


def test_the_lag_is_the_round_trip_above_the_smallest_one():
    gauge: LagGauge[str] = LagGauge(sentinels=1, fresh=1.0)
    gauge.enlist("a", 0.0)
    token = gauge.probe("a", 0.0)
    assert gauge.idle() == []
    assert gauge.echoed("a", token, 0.002)  # the first round trip is the base: no lag yet
    assert gauge.lag(0.002) == 0.0
    token = gauge.probe("a", 1.0)
    assert gauge.echoed("a", token, 1.032)
    assert gauge.lag(1.032) == pytest.approx(0.030)
    assert gauge.lag(2.033) == 0.0  # stale: not taken to be behind


def test_a_probe_out_counts_with_its_age_before_its_echo_is_back():
    gauge: LagGauge[str] = LagGauge(sentinels=1, fresh=1.0)
    gauge.enlist("a", 0.0)
    gauge.probe("a", 0.0)
    assert gauge.lag(0.05) == pytest.approx(0.05)  # no base yet: the whole age
    gauge.echoed("a", gauge._sentinels["a"].token, 0.001 + 0.05)
    gauge.probe("a", 1.0)
    assert gauge.lag(1.5) == pytest.approx(0.5 - 0.051)
    # the last sample counts while it is fresh, if larger than the age of the probe out
    token = gauge.probe("a", 2.0)
    assert gauge.echoed("a", token, 2.351)
    gauge.probe("a", 2.4)
    assert gauge.lag(2.41) == pytest.approx(0.3)


def test_echoes_that_answer_no_probe_do_not_count():
    gauge: LagGauge[str] = LagGauge(sentinels=1)
    assert not gauge.echoed("nobody", b"x", 0.0)
    gauge.enlist("a", 0.0)
    assert not gauge.echoed("a", b"", 0.0)  # nothing out (a keepalive pong)
    token = gauge.probe("a", 0.0)
    assert not gauge.echoed("a", b"other", 0.1)
    assert gauge.echoed("a", token, 0.1)
    assert not gauge.echoed("a", token, 0.2)  # once


def test_one_slow_sentinel_of_three_is_not_the_node_lagging():
    gauge: LagGauge[str] = LagGauge(sentinels=3, fresh=1.0)
    for key in "abc":
        gauge.enlist(key, 0.0)
        gauge.echoed(key, gauge.probe(key, 0.0), 0.001)
    gauge.probe("a", 1.0)  # a stops reading
    for key in "bc":
        gauge.echoed(key, gauge.probe(key, 1.0), 1.003)
    assert gauge.lag(3.0) == 0.0
    gauge.probe("b", 3.0)  # now two of three are behind
    assert gauge.lag(3.5) == pytest.approx(0.499)


def test_two_sentinels_take_the_lower():
    gauge: LagGauge[str] = LagGauge(sentinels=3)
    gauge.enlist("a", 0.0)
    gauge.enlist("b", 0.0)
    gauge.probe("a", 0.0)
    assert gauge.lag(0.2) == 0.0


def test_terms_end_and_closed_connections_are_forgotten():
    gauge: LagGauge[str] = LagGauge(sentinels=3, term=2.0)
    gauge.enlist("a", 0.0)
    gauge.enlist("b", 1.0)
    gauge.retire(1.9)
    assert len(gauge) == 2
    gauge.retire(2.0)
    assert "a" not in gauge and "b" in gauge
    gauge.forget("b")
    gauge.forget("b")
    assert len(gauge) == 0


def test_the_lag_among_some_sentinels_counts_only_those():
    gauge: LagGauge[str] = LagGauge(sentinels=3, fresh=1.0)
    for key in ("a1", "a2", "b1"):
        gauge.enlist(key, 0.0)
        gauge.echoed(key, gauge.probe(key, 0.0), 0.001)
    gauge.probe("a1", 1.0)  # the two on channel a stop reading
    gauge.probe("a2", 1.0)
    gauge.echoed("b1", gauge.probe("b1", 1.0), 1.002)
    assert gauge.lag(1.5) == pytest.approx(0.499)  # the node as a whole: two of three behind
    assert gauge.lag(1.5, lambda key: key.startswith("b")) == pytest.approx(0.001)
    assert gauge.lag(1.5, lambda key: key.startswith("a")) == pytest.approx(0.499)
    assert gauge.lag(1.5, lambda key: key.startswith("c")) == 0.0  # none of them: no measure
