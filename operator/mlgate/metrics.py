"""Prometheus metrics of the webhook and operator."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# An audit pass reads every workload of the cluster: seconds to many minutes.
AUDIT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0)

# The bounds the apiserver uses for apiserver_admission_webhook_admission_duration_seconds,
# so both sides of a webhook call can be read on one dashboard.
APISERVER_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 25.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # (operation, kind, result, route) -> the children answered() updates: labels() takes a
    # lock and checks its arguments on every call, about half the cost of counting a request.
    # As many entries as the registry's own children for these labels.
    _answered: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = field(
        default_factory=dict, repr=False
    )

    def answered(self, operation: str, kind: str, result: str, route: str, seconds: float) -> None:
        """One admission request answered: counted, and its time observed."""
        key = (operation, kind, result, route)
        children = self._answered.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.latency.labels(operation))
            self._answered[key] = children
        children[0].inc()
        children[1].observe(seconds)

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
        self.audit_violations = Gauge(
            "mlgate_audit_violations",
            "Current violations of existing workloads found by the last audit, by policy, rule, "
            "namespace and result (fail or warn)",
            ["policy", "rule", "namespace", "result"],
            registry=self.registry,
        )
        self.audit_duration = Histogram(
            "mlgate_audit_duration_seconds",
            "Time one background audit pass took",
            buckets=AUDIT_BUCKETS,
            registry=self.registry,
        )
        self.audit_objects = Gauge(
            "mlgate_audit_objects",
            "Workloads judged by the last audit pass",
            registry=self.registry,
        )
        self.audit_last_success = Gauge(
            "mlgate_audit_last_success_timestamp_seconds",
            "When the last audit pass completed (Unix time); stale means the audit is stuck",
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "mlgate_audit_failures",
            "Audit passes that failed, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.audit_unserved = Gauge(
            "mlgate_audit_kinds_unserved",
            "Workload kinds not served when the audit listed the cluster (watched once served)",
            registry=self.registry,
        )
        self.report_writes = Counter(
            "mlgate_policyreport_writes",
            "PolicyReport API writes, by operation (apply, delete)",
            ["operation"],
            registry=self.registry,
        )
        self.task_failures = Counter(
            "mlgate_background_task_failures",
            "Background tasks that died with an error and were restarted, by task",
            ["task"],
            registry=self.registry,
        )
        self.task_up = Gauge(
            "mlgate_background_task_up",
            "1 while a background task runs, 0 while it waits to be restarted after a failure",
            ["task"],
            registry=self.registry,
        )
        self.gpu = Gauge(
            "mlgate_gpu",
            "GPUs per namespace and resource: used by live pods, reserved by admitted workloads, "
            "and charged against the quota (per workload, the larger of the two)",
            ["namespace", "resource", "state"],
            registry=self.registry,
        )
        self.gpu_quota = Gauge(
            "mlgate_gpu_quota",
            "The smallest gpu.namespaceQuota of the policies governing a namespace",
            ["namespace"],
            registry=self.registry,
        )
