"""Prometheus metrics. One `Metrics` per process, each with its own registry (no module globals).

Labels have bounded cardinality: results, outcomes, reasons and secret positions, never an id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CALLBACK_RESULTS = (
    "accepted",
    "duplicate",
    "bad_signature",
    "too_large",
    "too_slow",
    "unavailable",
    "unsupported_encoding",
    "probe",
)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.callbacks = Counter(
            "sinch_callbacks", "Callbacks received, by result.", ["result"], registry=r
        )
        # Bound once: the callback endpoint counts every request.
        self.callback_results = {
            result: self.callbacks.labels(result) for result in CALLBACK_RESULTS
        }
        self.connections_cut = Counter(
            "sinch_api_connections_cut",
            "Connections closed because a request's headers or body did not arrive in time "
            "(app/web/edge.py).",
            ["phase"],
            registry=r,
        )
        self.callback_secret_matches = Counter(
            "sinch_callback_secret_matches",
            "Verified callbacks by the position of the secret that matched "
            "(0 is the current one; others mean Sinch still signs with an older secret).",
            ["secret"],
            registry=r,
        )
        self.events_processed = Counter(
            "sinch_events_processed",
            "Callback events processed, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.processing_lag = Histogram(
            "sinch_event_processing_lag_seconds",
            "Time from a callback's arrival to its event being processed.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=r,
        )
        self.deliveries = Counter(
            "subscription_delivery_attempts",
            "Attempts to deliver a change to a subscription, by subscription and result.",
            ["subscription", "result"],
            registry=r,
        )
        self.deliveries_given_up = Counter(
            "subscription_deliveries_given_up",
            "Deliveries given up unsent, by reason: `retry_window` (still failing "
            "DELIVERY_GIVE_UP_HOURS after written), `change_pruned` (a disabled subscription's, "
            "when its change left the feed).",
            ["reason"],
            registry=r,
        )
        self.sinch_gets = Counter(
            "sinch_registration_gets",
            "GETs of a registration from Sinch, by reason.",
            ["reason"],
            registry=r,
        )
        self.oldest_pending_delivery = Gauge(
            "subscription_oldest_pending_delivery_seconds",
            "Age of each subscription's oldest delivery not yet made (0: none pending).",
            ["subscription"],
            registry=r,
        )
        self.events_by_state = Gauge(
            "sinch_events",
            "Kept callback events by state (received is the backlog).",
            ["state"],
            registry=r,
        )

        self.registrations_by_status = Gauge(
            "sinch_registrations",
            "Registrations by status (Sinch's state names).",
            ["status"],
            registry=r,
        )
        self._statuses_shown: set[str] = set()

    def set_registrations(self, by_status: dict[str, int]) -> None:
        """Set the registrations gauge; a status no registration holds any more shows 0."""
        gauge = self.registrations_by_status
        for status in self._statuses_shown - by_status.keys():
            gauge.labels(status).set(0)
        for status, count in by_status.items():
            gauge.labels(status).set(count)
        self._statuses_shown |= by_status.keys()

    def render(self) -> bytes:
        return generate_latest(self.registry)
