"""Prometheus metrics of the webhook and operator."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

# The bounds the apiserver uses for apiserver_admission_webhook_admission_duration_seconds,
# so both sides of a webhook call can be read on one dashboard.
APISERVER_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 25.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "mlgate_admission_requests",
            "Admission requests answered, by operation, kind and result",
            ["operation", "kind", "result", "route"],
            registry=self.registry,
        )
        self.violations = Counter(
            "mlgate_admission_violations",
            "Policy violations found at admission, by policy, rule and mode",
            ["policy", "rule", "mode"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlgate_admission_duration_seconds",
            "Time to answer an admission request",
            ["operation"],
            buckets=APISERVER_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "mlgate_admission_errors",
            "Requests answered with an error: malformed review, deadline, internal error, "
            "an object mlgate cannot judge",
            ["reason"],
            registry=self.registry,
        )
