"""`mlgate check` end to end through `mlgate.cli.main`: inputs, verdicts and every exit code."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mlgate import check, cli

REPO = Path(__file__).resolve().parents[2]
MLGATE = Path(sys.executable).with_name("mlgate")
DIGEST = "sha256:" + "4f1c" * 16
GOOD_IMAGE = f"registry.example.com/ml/fraud-api:1.4.2@{DIGEST}"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Run:
    """`mlgate` in-process, as the console script would run it."""
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def run_process(*args: str | Path, stdin: str | None = None) -> Run:
    """The installed console script, for what only a real process shows (tracebacks, pipes)."""
    done = subprocess.run(
        [str(MLGATE), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def policy(name: str = "prod", mode: str = "Enforce", **spec: Any) -> dict[str, Any]:
    spec = spec or {"images": {"allowedRegistries": ["registry.example.com/ml/*"]}}
    return {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ClusterMLPolicy",
        "metadata": {"name": name},
        "spec": {"mode": mode, **spec},
    }


def deployment(
    name: str = "fraud-api",
    image: str = GOOD_IMAGE,
    namespace: str | None = "ml-prod",
    annotations: dict[str, str] | None = None,
    **pod: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}], **pod},
            },
        },
    }


def dump(path: Path, *docs: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return dump(tmp_path / "policies" / "prod.yaml", policy())


def rules_of(report: Any) -> list[tuple[str, str, str]]:
    return [
        (result["name"], v["rule"], v["path"])
        for result in report["results"]
        for v in result["violations"]
    ]


# ---------------------------------------------------------------------------------------------
# Verdicts and exit codes 0 and 1


def test_compliant_workloads_exit_0_with_a_summary(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    manifests = dump(tmp_path / "app.yaml", deployment("a"), deployment("b"))
    run = run_cli(capsys, "check", "-p", policy_file, manifests)
    assert run == Run(0, "mlgate: 2 workloads checked against 1 policy: 2 compliant\n", "")


def test_a_denied_workload_exits_1_and_says_where_and_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    bad = "docker.io/library/python:3.12"
    manifests = dump(tmp_path / "app.yaml", deployment("ok"), deployment("bad", bad))
    run = run_cli(capsys, "check", "-p", policy_file, manifests)
    assert run.code == 1
    assert run.err == ""
    assert run.out.splitlines() == [
        f"{manifests}:20 (doc 2) Deployment ml-prod/bad",
        "  DENY  [prod] images.registry at spec.template.spec.containers[0].image: image "
        f"'{bad}' resolves to docker.io/library/python, which is not in an allowed registry; "
        "use an image from: registry.example.com/ml/* "
        "(ATLAS AML.T0010, AML.T0010.004; OWASP LLM03)",
        "",
        "mlgate: 2 workloads checked against 1 policy: 1 denied, 1 compliant",
    ]


@pytest.mark.parametrize(("mode", "label"), [("Warn", "WARN"), ("Audit", "AUDIT")])
def test_warn_and_audit_violations_are_printed_but_exit_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: str, label: str
) -> None:
    policies = dump(tmp_path / "p.yaml", policy(mode=mode))
    manifests = dump(tmp_path / "app.yaml", deployment(image="nginx:1.27"))
    run = run_cli(capsys, "check", "-p", policies, manifests)
    assert run.code == 0
    assert (
        f"  {label:<5} [prod] images.registry at spec.template.spec.containers[0].image" in run.out
    )
    assert run.out.endswith(f": 1 {label.lower()}ed, 0 compliant\n")


def test_enforce_wins_over_warn_for_the_exit_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policies = dump(
        tmp_path / "p.yaml",
        policy("warn", "Warn"),
        policy("enforce", "Enforce", egress={"allowHostNetwork": False}),
    )
    manifests = dump(tmp_path / "a.yaml", deployment(image="nginx:1.27", hostNetwork=True))
    run = run_cli(capsys, "check", "-p", policies, "-o", "json", manifests)
    assert run.code == 1
    assert [(v["policy"], v["mode"]) for v in run.json["results"][0]["violations"]] == [
        ("warn", "Warn"),
        ("enforce", "Enforce"),
    ]


# ---------------------------------------------------------------------------------------------
# Where documents come from


def test_stdin_is_read_for_dash(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, policy_file: Path
) -> None:
    text = yaml.safe_dump_all([deployment("good"), deployment("bad", "nginx")])
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    run = run_cli(capsys, "check", "-p", policy_file, "-o", "json", "-")
    assert run.code == 1
    assert [(r["file"], r["document"], r["status"]) for r in run.json["results"]] == [
        ("<stdin>", 1, "compliant"),
        ("<stdin>", 2, "denied"),
    ]


def test_stdin_of_the_console_script_like_helm_template_output(policy_file: Path) -> None:
    rendered = "---\n# Source: app/templates/deployment.yaml\n" + yaml.safe_dump(
        deployment(image="nginx")
    )
    run = run_process("check", "-p", policy_file, "-", stdin=rendered)
    assert run.code == 1
    assert run.out.startswith("<stdin>:3 (doc 1) Deployment ml-prod/fraud-api\n")


def test_directories_are_read_recursively_in_sorted_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    root = tmp_path / "manifests"
    dump(root / "b.yaml", deployment("b"))
    dump(root / "a" / "nested" / "c.yml", deployment("c", "nginx"))
    (root / "a" / "d.json").write_text(json.dumps(deployment("d")))
    dump(root / ".git" / "hidden.yaml", deployment("hidden", "nginx"))
    (root / "README.md").write_text("not a manifest")
    run = run_cli(capsys, "check", "-p", policy_file, "-o", "json", root)
    assert run.code == 1
    assert [
        (Path(r["file"]).relative_to(root).as_posix(), r["name"]) for r in run.json["results"]
    ] == [
        (".git/hidden.yaml", "hidden"),  # kubectl applies dot-files too
        ("a/d.json", "d"),
        ("a/nested/c.yml", "c"),
        ("b.yaml", "b"),
    ]


def test_list_items_are_judged_one_by_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    items = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [deployment("a"), deployment("b", "nginx")],
    }
    manifests = dump(tmp_path / "list.yaml", deployment("first"), items)
    run = run_cli(capsys, "check", "-p", policy_file, manifests)
    assert run.code == 1
    assert f"{manifests}:20 (doc 2 item 2) Deployment ml-prod/b\n" in run.out


def test_json_input_with_an_array(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    manifests = tmp_path / "workloads.json"
    manifests.write_text(json.dumps([deployment("a"), deployment("b", "nginx")], indent=2))
    run = run_cli(capsys, "check", "-p", policy_file, "-o", "json", manifests)
    assert run.code == 1
    assert [(r["document"], r["item"], r["status"]) for r in run.json["results"]] == [
        (1, 1, "compliant"),
        (1, 2, "denied"),
    ]


def test_a_policy_after_the_workload_in_the_same_file_applies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    manifests = dump(tmp_path / "all.yaml", deployment(image="nginx"), policy())
    run = run_cli(capsys, "check", "-o", "json", manifests)
    assert run.code == 1
    assert rules_of(run.json) == [
        ("fraud-api", "images.registry", "spec.template.spec.containers[0].image")
    ]
    assert run.json["summary"]["policies"] == ["prod"]


def test_approved_models_come_from_models_files_and_from_the_manifests(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def approval(name: str, uri: str) -> dict[str, Any]:
        return {
            "apiVersion": "mlgate.io/v1alpha1",
            "kind": "ApprovedModel",
            "metadata": {"name": name},
            "spec": {"model": name, "version": "1", "uris": [uri]},
        }

    def serving(name: str, uri: str) -> dict[str, Any]:
        return deployment(name, annotations={"mlgate.io/model-uri": uri})

    policies = dump(tmp_path / "p.yaml", policy(models={"requireApproved": True}))
    models = dump(tmp_path / "models.yaml", approval("a", "s3://models/a"))
    manifests = dump(
        tmp_path / "app.yaml",
        serving("uses-a", "s3://models/a"),
        serving("uses-b", "s3://models/b"),
        serving("uses-c", "s3://models/c"),
        approval("b", "s3://models/b"),
    )
    run = run_cli(capsys, "check", "-p", policies, "--models", models, "-o", "json", manifests)
    assert run.code == 1
    assert [n for n, _, _ in rules_of(run.json)] == ["uses-c"]
    assert run.json["summary"]["approvedModels"] == 2


def test_a_file_given_as_policy_and_inside_a_directory_is_read_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policies = dump(tmp_path / "all" / "policy.yaml", policy())
    dump(tmp_path / "all" / "app.yaml", deployment())
    run = run_cli(capsys, "check", "-p", policies, tmp_path / "all")
    assert run == Run(0, "mlgate: 1 workload checked against 1 policy: 1 compliant\n", "")


def test_the_same_policy_twice_is_fine_but_two_different_definitions_are_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    same = dump(tmp_path / "same.yaml", policy(), deployment())
    assert run_cli(capsys, "check", "-p", policy_file, same).code == 0
    other = dump(tmp_path / "other.yaml", policy(mode="Warn"), deployment())
    run = run_cli(capsys, "check", "-p", policy_file, other)
    assert run.code == 2
    assert run.err.splitlines()[0] == (
        f"{other}:1: doc 1: ClusterMLPolicy prod: defined differently at {policy_file}:1 "
        "(doc 1); keep one definition"
    )


# ---------------------------------------------------------------------------------------------
# Namespaces and kinds


def ml_policy(namespace: str) -> dict[str, Any]:
    return {
        **policy("team-only"),
        "kind": "MLPolicy",
        "metadata": {"name": "team-only", "namespace": namespace},
    }


@pytest.mark.parametrize(
    ("args", "code", "namespace"),
    [
        ((), 1, ""),  # unknown namespace: every policy may govern it
        (("--namespace", "team-a"), 1, "team-a"),
        (("--namespace", "team-b"), 0, "team-b"),  # not the MLPolicy's namespace
        (("-n", "kube-system"), 0, "kube-system"),  # always exempt
    ],
)
def test_namespace_option_places_documents_without_one(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: tuple[str, ...],
    code: int,
    namespace: str,
) -> None:
    manifests = dump(
        tmp_path / "a.yaml", ml_policy("team-a"), deployment(image="nginx", namespace=None)
    )
    run = run_cli(capsys, "check", "-o", "json", *args, manifests)
    assert run.code == code
    assert run.json["results"][0]["namespace"] == namespace


def test_kube_system_is_exempt_with_a_note(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    manifests = dump(tmp_path / "a.yaml", deployment(image="nginx", namespace="kube-system"))
    run = run_cli(capsys, "check", "-p", policy_file, manifests)
    assert run.code == 0
    assert "  note  namespace kube-system is always exempt\n" in run.out


def test_non_workloads_are_skipped_and_counted_but_unknown_kinds_with_containers_are_not(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "ml-prod"},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": []},
    }
    custom = {
        "apiVersion": "example.com/v1",
        "kind": "Trainer",
        "metadata": {"name": "t", "namespace": "ml-prod"},
        "spec": {"pod": {"containers": [{"name": "x", "image": "nginx"}]}},
    }
    manifests = dump(tmp_path / "a.yaml", config, service, deployment(), custom)
    run = run_cli(capsys, "check", "-p", policy_file, manifests)
    assert run.code == 1
    assert run.out.splitlines()[0] == f"{manifests}:33 (doc 4) Trainer ml-prod/t"
    assert "DENY  [prod] workload.unsupported at kind:" in run.out
    assert run.out.splitlines()[-1] == (
        "mlgate: 1 workload checked against 1 policy: 1 compliant; "
        "1 other document judged (Trainer): 1 denied; "
        "2 documents skipped, not workloads (ConfigMap, Service)"
    )


def test_signature_rules_are_notes_offline_and_do_not_fail(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    signed = policy(
        images={
            "signatures": [{"images": ["registry.example.com/ml/*"], "keys": [{"publicKey": pem}]}]
        }
    )
    manifests = dump(tmp_path / "a.yaml", signed, deployment())
    run = run_cli(capsys, "check", "-o", "json", manifests)
    assert run.code == 0
    assert run.json["results"][0]["violations"] == []
    image_path = "spec.template.spec.containers[0].image"
    assert run.json["results"][0]["notes"] == [
        f"[prod] {image_path}: {GOOD_IMAGE} (signature not verified offline)"
    ]


def test_no_policies_means_nothing_enforced_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = run_cli(capsys, "check", dump(tmp_path / "a.yaml", deployment(image="nginx")))
    assert run.code == 0
    assert run.out.endswith("; no policies given (-p), so nothing was enforced\n")


# ---------------------------------------------------------------------------------------------
# Exit code 2: bad input, errors only


def assert_bad_input(run: Run, *errors: str) -> None:
    assert run.code == 2
    assert run.out == ""  # no verdicts
    count = len(errors)
    assert run.err.splitlines() == [
        *errors,
        f"mlgate: {count} input error{'s' if count > 1 else ''}; nothing was judged",
    ]


def test_malformed_yaml_names_file_document_and_line_without_traceback(
    tmp_path: Path, policy_file: Path
) -> None:
    manifests = tmp_path / "bad.yaml"
    manifests.write_text(
        yaml.safe_dump(deployment()) + "---\nkind: Pod\nmetadata:\n  name: x\n   y: 1\n"
    )
    run = run_process("check", "-p", policy_file, manifests)
    assert "Traceback" not in run.err
    assert_bad_input(
        run,
        f"{manifests}:23: doc 2: malformed YAML: mapping values are not allowed in this "
        "context at column 5",
    )


def test_every_bad_file_is_reported_at_once_in_one_line_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"kind": ')
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("hello\n---\n" + yaml.safe_dump({"metadata": {"name": "no-kind"}}))
    items = tmp_path / "items.yaml"
    items.write_text(yaml.safe_dump({"kind": "List", "items": list(range(500))}))
    run = run_cli(
        capsys, "check", "-p", policy_file, tmp_path / "missing.yaml", broken, scalar, items
    )
    assert_bad_input(
        run,
        f"{tmp_path / 'missing.yaml'}: cannot read: no such file or directory",
        f"{broken}:1: doc 1: malformed JSON: Expecting value at column 10",
        f"{scalar}:1: doc 1: expected a Kubernetes object (a mapping), found a string "
        "(and 1 more problem in this file)",
        f"{items}:1: doc 1 item 1: expected a Kubernetes object (a mapping), found a number "
        "(and 499 more problems in this file)",
    )


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"images": {"foo": True}}, "spec.images.foo: Extra inputs are not permitted"),
        (
            {"gpu": {"maxPerPod": -1}},
            "spec.gpu.maxPerPod: Input should be greater than or equal to 0",
        ),
        ({"mode": "Block"}, "spec.mode: Input should be 'Enforce', 'Warn' or 'Audit'"),
    ],
)
def test_an_invalid_policy_names_the_field_and_nothing_is_judged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: dict[str, Any], field: str
) -> None:
    policies = dump(tmp_path / "p.yaml", {**policy(), "spec": spec})
    manifests = dump(tmp_path / "a.yaml", deployment(image="nginx"))
    run = run_cli(capsys, "check", "-p", policies, manifests)
    assert_bad_input(run, f"{policies}:1: doc 1: ClusterMLPolicy prod: {field}")


def test_an_invalid_approved_model_in_the_manifests_is_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = {
        "apiVersion": "mlgate.io/v1alpha1",
        "kind": "ApprovedModel",
        "metadata": {"name": "m"},
        "spec": {"model": "m", "version": "1", "expires": "2027-01-01T00:00:00"},
    }
    manifests = dump(tmp_path / "a.yaml", deployment(), model)
    run = run_cli(capsys, "check", manifests)
    assert_bad_input(
        run,
        f"{manifests}:20: doc 2: ApprovedModel m: spec.expires: Value error, expires needs a time "
        "zone, e.g. 2027-06-30T00:00:00Z",
    )


@pytest.mark.parametrize(
    ("api_version", "problem"),
    [
        ("mlgate.io/beta1", "apiVersion must be mlgate.io/v1alpha1"),
        ("mlgate.io/v2", "apiVersion: Input should be 'mlgate.io/v1alpha1'"),
    ],
)
def test_an_mlgate_resource_of_another_version_is_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, api_version: str, problem: str
) -> None:
    manifests = dump(tmp_path / "a.yaml", {**policy(), "apiVersion": api_version})
    run = run_cli(capsys, "check", manifests)
    assert_bad_input(run, f"{manifests}:1: doc 1: ClusterMLPolicy prod: {problem}")


def test_policy_options_take_only_mlgate_resources(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    workload = dump(tmp_path / "a.yaml", deployment())
    run = run_cli(capsys, "check", "-p", workload, workload)
    assert_bad_input(
        run,
        f"{workload}:1: doc 1: Deployment ml-prod/fraud-api is not a ClusterMLPolicy, MLPolicy, "
        "ApprovedModel or WorkloadKind; pass manifests to judge as PATH arguments",
    )


def test_no_path_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    run = run_cli(capsys, "check", "-p", "policies/")
    assert (run.code, run.out) == (2, "")
    assert len(run.err.splitlines()) == 1
    assert "PATH" in run.err


@pytest.mark.parametrize(
    "args",
    [("check", "-o", "xml", "a.yaml"), ("nonsense",), ()],
    ids=["bad-format", "bad-command", "no-command"],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    run = run_cli(capsys, *args)
    assert run.code == 2
    assert run.out == ""
    assert run.err.startswith("usage: mlgate")


def test_an_engine_failure_names_the_document_instead_of_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def explode(*_: object) -> None:
        raise TypeError("unhashable type: 'dict'")

    monkeypatch.setattr(check, "evaluate", explode)
    manifests = dump(tmp_path / "a.yaml", deployment())
    run = run_cli(capsys, "check", manifests)
    assert_bad_input(
        run,
        f"{manifests}:1: doc 1: mlgate failed to judge Deployment ml-prod/fraud-api: TypeError: "
        "unhashable type: 'dict' (a bug in mlgate: please report it with this document)",
    )


# ---------------------------------------------------------------------------------------------
# Interrupts, pipes, other subcommands


def test_ctrl_c_exits_130_quietly(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    assert run_cli(capsys, "check", tmp_path) == Run(130, "", "")


def test_a_closed_pipe_is_not_an_error(tmp_path: Path, policy_file: Path) -> None:
    manifests = dump(tmp_path / "many.yaml", *(deployment(f"d{i}", "nginx") for i in range(400)))
    with subprocess.Popen(
        [str(MLGATE), "check", "-p", str(policy_file), "-o", "json", str(manifests)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.readline()  # like `| head -1`
        process.stdout.close()
        err = process.stderr.read().decode()
        code = process.wait(timeout=120)
    assert err == ""
    assert code == 1  # the verdict survives a reader that went away


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from mlgate import __version__  # noqa: PLC0415

    assert run_cli(capsys, "version") == Run(0, f"mlgate {__version__}\n", "")
    assert run_cli(capsys, "--version") == Run(0, f"mlgate {__version__}\n", "")


REQUIRED_ARGS: dict[str, tuple[str, ...]] = {
    "check": ("a.yaml",),
    "crds": ("--output-dir", "d"),
    "approve-model": ("model", "--version", "1"),
    "verify-model": ("model",),
}


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_subcommand_builds_its_parser(name: str) -> None:
    args = cli.build_parser(name).parse_args([name, *REQUIRED_ARGS.get(name, ())])
    assert args.handler is cli.COMMANDS[name].handler


def test_check_does_not_import_the_operator() -> None:
    example = REPO / "examples" / "workloads" / "compliant" / "pod-model-debug.yaml"
    code = (
        "import sys; from mlgate import cli; "
        f"code = cli.main(['check', {str(example)!r}]); print(code, 'kopf' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines()[-1] == "0 False"


# ---------------------------------------------------------------------------------------------
# Scale


def many_deployments(count: int) -> Iterable[str]:
    for i in range(count):
        yield "---\n" + yaml.safe_dump(
            deployment(f"d{i}", "nginx:1.27" if i % 1000 == 7 else GOOD_IMAGE)
        )


def test_thousands_of_documents_in_one_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy_file: Path
) -> None:
    """The streaming path at scale; 10,000 documents and their cost are for bench/."""
    manifests = tmp_path / "big.yaml"
    with manifests.open("w") as handle:
        handle.writelines(many_deployments(2_000))
    run = run_cli(capsys, "check", "-p", policy_file, "-o", "json", manifests)
    assert run.code == 1
    summary = run.json["summary"]
    assert (summary["documents"], summary["denied"], summary["compliant"]) == (2_000, 2, 1_998)
    assert [r["name"] for r in run.json["results"] if r["status"] == "denied"] == [
        "d7",
        "d1007",
    ]
