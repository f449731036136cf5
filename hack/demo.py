"""`make demo`: mlgate end to end on an embedded control plane.

Starts etcd + kube-apiserver on loopback, installs mlgate's CRDs, the example policies and
approved models, runs `mlgate run` with its webhook registered by URL, applies every example
workload with kubectl and prints what the apiserver admitted and denied, next to what
`mlgate check` predicted offline; then rolls out examples/llm: a vLLM server denied without its
guardrail and admitted with it. Ctrl-C or completion tears everything down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlgate.devcluster import Cluster, from_env
from mlgate.devrun import MlgateProcess, stand_in_crds

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NAMESPACE = "ml-prod"
LLM_NAMESPACE = "llm-demo"
# examples/llm in roll-out order, with what each step must get: the LLM waits for its guardrail.
LLM_STEPS = (
    ("llm.yaml", "denied", "vLLM without a guardrail"),
    ("guardrail.yaml", "admitted", "NemoGuardrail in front of it, its public Service"),
    ("llm.yaml", "admitted", "vLLM again, now guarded"),
    ("exposed.yaml", "denied", "LoadBalancer straight to the vLLM pods"),
)
GOVERNED = "mlgate.io/governed"


@dataclass(frozen=True)
class Row:
    file: str
    predicted: str
    cluster: str
    detail: str


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def install(cluster: Cluster) -> None:
    step("installing mlgate CRDs and stand-in CRDs for KServe, Kubeflow, Ray, JobSet, LWS")
    cluster.kubectl("apply", "-f", str(REPO / "crds"), check=True)
    cluster.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(stand_in_crds()))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", check=True
    )
    step(f"creating namespaces mlgate-system and {NAMESPACE} (labelled {GOVERNED}=true)")
    namespaces = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mlgate-system"}},
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {GOVERNED: "true"}},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kserve"}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": NAMESPACE},
        },
    ]
    cluster.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump_all(namespaces))
    step("applying example policies, approved models and the runtimes the workloads name")
    for folder in ("policies", "models", "runtimes"):
        cluster.kubectl("apply", "-f", str(EXAMPLES / folder), check=True)
    step(f"namespace {LLM_NAMESPACE}: the LLM guardrail policy and the guardrail's approved model")
    llm_setup = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LLM_NAMESPACE}}
    cluster.kubectl("apply", "-f", "-", check=True, input=yaml.safe_dump(llm_setup))
    for name in ("policy.yaml", "models.yaml"):
        cluster.kubectl("apply", "-f", str(EXAMPLES / "llm" / name), check=True)


def wait_policies_ready(cluster: Cluster, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "clustermlpolicies,mlpolicies", "-A", "-o", "json", check=True)
        items = json.loads(out.stdout)["items"]
        ready = [
            c["status"] == "True"
            for item in items
            for c in item.get("status", {}).get("conditions", [])
            if c["type"] == "Ready"
        ]
        if items and len(ready) == len(items) and all(ready):
            print(cluster.kubectl("get", "clustermlpolicies,mlpolicies", "-A").stdout)
            return
        time.sleep(0.3)
    raise RuntimeError("the example policies did not become Ready")


def predictions() -> dict[str, str]:
    """What `mlgate check` says offline for every example workload file."""
    out = subprocess.run(
        [sys.executable, "-m", "mlgate", "check", "-o", "json", "-p", str(EXAMPLES / "policies"),
         "--models", str(EXAMPLES / "models"), "--runtimes", str(EXAMPLES / "runtimes"),
         str(EXAMPLES / "workloads")],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    verdicts: dict[str, str] = {}
    for result in json.loads(out.stdout)["results"]:
        status = result["status"]
        verdicts[Path(result["file"]).name] = "denied" if status == "denied" else "admitted"
    return verdicts


def apply_example(cluster: Cluster, path: Path, namespace: str = NAMESPACE) -> tuple[str, str]:
    out = cluster.kubectl("apply", "-n", namespace, "-f", str(path))
    if out.returncode == 0:
        warnings = [line for line in out.stderr.splitlines() if line.startswith("Warning:")]
        return "admitted", warnings[0] if warnings else ""
    return "denied", denial_summary(out.stderr)


def denial_summary(stderr: str) -> str:
    """The apiserver's own words, shortened to the webhook and the first violation."""
    text = stderr.split("admission webhook ", 1)[-1]
    webhook, _, rest = text.partition(" denied the request: ")
    lines = [line for line in rest.splitlines() if line.strip()]
    first = lines[1] if len(lines) > 1 else (lines[0] if lines else stderr.strip())
    return f"{webhook}: {first}" if rest else stderr.strip().splitlines()[-1]


def quota_demo(cluster: Cluster) -> Row:
    """A second 16-GPU fine-tuning job: compliant alone, but the namespace quota is now full."""
    step("namespace GPU quota: a second copy of the 16-GPU PyTorchJob")
    path = EXAMPLES / "workloads" / "compliant" / "pytorchjob-llama-finetune.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["metadata"]["name"] += "-second"
    out = cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(doc))
    verdict = "admitted" if out.returncode == 0 else "denied"
    detail = "" if out.returncode == 0 else denial_summary(out.stderr)
    return Row("quota: second pytorchjob-llama-finetune", "denied", verdict, detail)


def llm_demo(cluster: Cluster) -> list[Row]:
    """An LLM refused until its guardrail exists, then admitted; a bypass refused."""
    rows = []
    for name, expected, what in LLM_STEPS:
        step(f"LLM guardrails: kubectl apply examples/llm/{name} ({what})")
        verdict, detail = apply_example(cluster, EXAMPLES / "llm" / name, LLM_NAMESPACE)
        rows.append(Row(f"llm/{name}: {what}", expected, verdict, detail))
    return rows


def show(rows: list[Row]) -> None:
    width = max(len(r.file) for r in rows)
    print(f"\n{'EXAMPLE':<{width}}  {'CHECK':<9} {'CLUSTER':<9} WHAT THE APISERVER SAID")
    for r in rows:
        mark = "" if r.predicted == r.cluster else "  <-- differs from mlgate check"
        print(f"{r.file:<{width}}  {r.predicted:<9} {r.cluster:<9} {r.detail[:160]}{mark}")


def run_demo(cluster: Cluster, workdir: Path) -> int:
    install(cluster)
    step("starting `mlgate run` (operator + webhook on https://127.0.0.1, self-managed TLS)")
    with MlgateProcess(cluster.kubeconfig, workdir / "mlgate.log", webhook_config="mlgate-demo"):
        wait_policies_ready(cluster)
        expected = predictions()
        rows = []
        for group in ("compliant", "noncompliant"):
            step(f"kubectl apply examples/workloads/{group}/*.yaml")
            for path in sorted((EXAMPLES / "workloads" / group).glob("*.yaml")):
                verdict, detail = apply_example(cluster, path)
                rows.append(
                    Row(f"{group}/{path.name}", expected.get(path.name, "?"), verdict, detail)
                )
        rows.append(quota_demo(cluster))
        rows += llm_demo(cluster)
        show(rows)
        admitted = sum(r.cluster == "admitted" for r in rows)
        print(f"\n{admitted} admitted, {len(rows) - admitted} denied by the real kube-apiserver.")
        print(f"mlgate's log: {workdir / 'mlgate.log'} (removed on exit)")
    return 0 if all(r.predicted == r.cluster for r in rows) else 1


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mlgate-demo-") as tmp:
        try:
            step("starting the local control plane (etcd + kube-apiserver on 127.0.0.1)")
            with from_env() as cluster:
                return run_demo(cluster, Path(tmp))
        except KeyboardInterrupt:
            print("\ninterrupted: control plane and mlgate stopped, temporary files removed")
            return 130


if __name__ == "__main__":
    sys.exit(main())
