"""The agent's Prometheus metrics (``GET /metrics``), computed from the board at the moment of the scrape.

prometheus_client (the Prometheus project's own client) writes the text exposition format (escaping,
``# HELP``/``# TYPE``, histogram buckets) and keeps the renewal histogram thread-safe; it is imported by
the agent only, never on the shell's start-up path. Its global default registry (process and GC
collectors) is not used: one registry per board, holding the renewal histogram and one collector
that derives every other figure from the board, so a figure can never disagree with ``/primary``:
``appliance_ha_is_primary`` is 1 exactly while the fence deadline is ahead, and
``appliance_ha_fence_remaining_seconds`` is that deadline minus now, read on the monotonic clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from appliance import __version__
from appliance.ha.board import Board
from appliance.ha.model import NodeStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RENEW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _BoardCollector(Collector):
    def __init__(self, board: Board) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        board, now = self.board, time.monotonic()
        record = board.published
        trusted = board.trusted(now)
        acting = record is not None and record.acting and trusted is not None
        yield GaugeMetricFamily("appliance_ha_is_primary",
                                "1 while this node acts as primary inside its fence deadline, else 0",
                                value=1 if acting else 0)
        yield GaugeMetricFamily("appliance_ha_fence_remaining_seconds",
                                "Seconds left before this node's fence deadline (0: not trusted as primary)",
                                value=trusted[0] if trusted else 0.0)
        epoch = trusted[1] if trusted else (record.view.lease.epoch if record and record.view else None)
        if epoch is not None:
            yield GaugeMetricFamily("appliance_ha_epoch",
                                    "Lease epoch (fencing token): the one held, else the cluster's as last read",
                                    value=epoch)
        state = GaugeMetricFamily("appliance_ha_state", "This node's HA state: 1 for the current one",
                                  labels=["state"])
        for candidate in NodeStatus:
            state.add_metric([candidate.value], 1 if record is not None and record.state == candidate.value else 0)
        yield state
        yield CounterMetricFamily("appliance_ha_failovers", "Takeovers of the primary role by this node "
                                  "(failover or switchover) since the agent started",
                                  value=record.failovers if record else 0)
        if record is not None:
            yield GaugeMetricFamily("appliance_ha_keepalive_seconds", "The cluster's keepalive interval I",
                                    value=record.keepalive_s)
            yield GaugeMetricFamily("appliance_ha_loop_age_seconds", "Seconds since the HA loop last finished a "
                                    "tick", value=max(0.0, now - record.ticked_at))
            yield GaugeMetricFamily("appliance_ha_store_up", "1 if the last read of the cluster's state succeeded",
                                    value=1 if record.view is not None else 0)
            if record.view is not None:
                yield GaugeMetricFamily("appliance_ha_vip_configured", "1 if the cluster has a virtual IP",
                                        value=1 if record.view.vip else 0)
            up = GaugeMetricFamily("appliance_db_up", "1 if the database host answered the last probe",
                                   labels=["host", "port"])
            writable = GaugeMetricFamily("appliance_db_writable", "1 if the database host is read-write",
                                         labels=["host", "port"])
            latency = GaugeMetricFamily("appliance_db_latency_seconds", "Round trip of the last probe",
                                        labels=["host", "port"])
            for host in record.db_hosts:
                labels = [host.host, str(host.port)]
                up.add_metric(labels, 1 if host.reachable else 0)
                writable.add_metric(labels, 1 if host.writable else 0)
                if host.latency_ms is not None:
                    latency.add_metric(labels, host.latency_ms / 1000)
            yield from (up, writable, latency)
        info = GaugeMetricFamily("appliance_build_info", "The product's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


class Metrics:
    """The registry of one agent: the renewal histogram and the board's figures."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: the agent's start time is not a figure anyone reads
        self.registry = CollectorRegistry(auto_describe=False)
        self.renewals = Histogram("appliance_ha_lease_renew_seconds",
                                  "Duration of successful lease renewals (one database round trip)",
                                  buckets=RENEW_BUCKETS, registry=self.registry)
        self.board = Board(self.renewals)
        self.registry.register(_BoardCollector(self.board))

    def render(self) -> bytes:
        return generate_latest(self.registry)
