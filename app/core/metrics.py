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
    "unknown_project",
)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def secret_matched(self, position: int) -> None:
        """Count a callback verified by the secret at `position` (0: the current one)."""
        counter = self._secret_matched.get(position)
        if counter is None:
            counter = self._secret_matched[position] = self.callback_secret_matches.labels(
                str(position)
            )
        counter.inc()

    def __post_init__(self) -> None:
        self.callbacks = self._counter(
            "sinch_callbacks", "Callbacks received, by result.", "result"
        )
        # Bound once: the callback endpoint counts every request.
        self.callback_results = {
            result: self.callbacks.labels(result) for result in CALLBACK_RESULTS
        }
        self.connections_cut = self._counter(
            "sinch_api_connections_cut",
            "Connections closed because a request's headers or body did not arrive in time "
            "(app/web/edge.py).",
            "phase",
        )
        self.callback_secret_matches = self._counter(
            "sinch_callback_secret_matches",
            "Verified callbacks by the position of the secret that matched "
            "(0 is the current one; others mean Sinch still signs with an older secret).",
            "secret",
        )
        # Bound as first used: one label per position, and the endpoint counts every callback.
        self._secret_matched: dict[int, Counter] = {}
        self.events_processed = self._counter(
            "sinch_events_processed", "Callback events processed, by outcome.", "outcome"
        )
        self.processing_lag = Histogram(
            "sinch_event_processing_lag_seconds",
            "Time from a callback's arrival to its event being processed.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=self.registry,
        )
        self.deliveries = self._counter(
            "subscription_delivery_attempts",
            "Attempts to deliver a change to a subscription, by subscription and result.",
            "subscription",
            "result",
        )
        self.deliveries_given_up = self._counter(
            "subscription_deliveries_given_up",
            "Deliveries given up unsent, by reason: `retry_window` (still failing "
            "DELIVERY_GIVE_UP_HOURS after written), `change_pruned` (a disabled subscription's, "
            "when its change left the feed).",
            "reason",
        )
        self.sinch_gets = self._counter(
            "sinch_registration_gets", "GETs of a registration from Sinch, by reason.", "reason"
        )
        self.oldest_pending_delivery = self._gauge(
            "subscription_oldest_pending_delivery_seconds",
            "Age of each subscription's oldest delivery not yet made (0: none pending).",
            "subscription",
        )
        self.subscription_failing = self._gauge(
            "subscription_failing",
            "1 when every attempt to the subscription has failed for at least "
            "SUBSCRIPTION_FAILING_ALERT_MINUTES (and it is enabled), else 0.",
            "subscription",
        )
        self._forecasts_age: Gauge | None = None
        self.events_by_state = self._gauge(
            "sinch_events", "Kept callback events by state (received is the backlog).", "state"
        )

        self.registrations_by_status = self._gauge(
            "sinch_registrations", "Registrations by status (Sinch's state names).", "status"
        )
        self._statuses_shown: set[str] = set()

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        """A counter in this registry, with these label names."""
        return Counter(name, documentation, labels, registry=self.registry)

    def _gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        """A gauge in this registry, with these label names."""
        return Gauge(name, documentation, labels, registry=self.registry)

    def set_registrations(self, by_status: dict[str, int]) -> None:
        """Set the registrations gauge; a status no registration holds any more shows 0."""
        gauge = self.registrations_by_status
        for status in self._statuses_shown - by_status.keys():
            gauge.labels(status).set(0)
        for status, count in by_status.items():
            gauge.labels(status).set(count)
        self._statuses_shown |= by_status.keys()

    def set_forecasts_age(self, seconds: float | None) -> None:
        """Set the forecasts' age (the API's /metrics; None: no figure). Registered at the first
        age, so that a process that never reads it (a worker) and an API before any figure do
        not show it; NaN once the figures are gone."""
        if seconds is None:
            if self._forecasts_age is not None:
                self._forecasts_age.set(float("nan"))
            return
        if self._forecasts_age is None:
            self._forecasts_age = self._gauge(
                "forecasts_computed_age_seconds",
                "Seconds since the forecasts cron last rebuilt the time-in-state figures: it grows "
                "when no process runs the cron (by default a delivery worker runs it).",
            )
        self._forecasts_age.set(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
