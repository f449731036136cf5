"""CustomResourceDefinitions are recognised from their text and not parsed; nothing else is."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from mlgate.crdskip import crd_header
from mlgate.manifests import Document, Source, documents, expand_paths

CRD = """\
# generated
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition  # a comment
metadata:
  annotations:
    controller-gen.kubebuilder.io/version: v0.16.1
  name: inferenceservices.serving.kserve.io
spec:
  group: serving.kserve.io
  names: {kind: InferenceService, plural: inferenceservices}
  versions:
  - name: v1beta1
    schema:
      openAPIV3Schema:
        description: |
          kind: Deployment
        type: object
"""


def test_a_crd_yields_its_header_without_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "crds.yaml"
    path.write_text("---\n" + CRD + "---\n" + CRD)
    docs = list(documents(Source(str(path), path=path)))
    assert [d.obj for d in docs if isinstance(d, Document)] == [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "inferenceservices.serving.kserve.io"},
        }
    ] * 2
    assert [d.ref.line for d in docs if isinstance(d, Document)] == [3, 21]


@pytest.mark.parametrize(
    "text",
    [
        # The real kind in a flow mapping, a CRD's header hidden in a multi-line string.
        '--- {apiVersion: apps/v1, kind: Deployment, x: "\n'
        'apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\na: b"}\n',
        # An indented root mapping: column-0 lines are inside its string.
        '  apiVersion: apps/v1\n  kind: Deployment\n  x: "\n'
        'apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\na: b"\n',
        # Quoted and complex keys are the parser's business.
        '"kind": Deployment\napiVersion: apiextensions.k8s.io/v1\nx: "\n'
        'kind: CustomResourceDefinition\na: b"\n',
        '? kind\n: Deployment\napiVersion: apiextensions.k8s.io/v1\nx: "\n'
        'kind: CustomResourceDefinition\na: b"\n',
        # Two kinds: whichever the parser keeps, it is not for the text scan to guess.
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nkind: Deployment\n",
        # Another group's kind of that name.
        "apiVersion: example.com/v1\nkind: CustomResourceDefinition\n",
        "%YAML 1.1\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n",
    ],
)
def test_anything_short_of_an_unmistakable_crd_is_parsed(text: str) -> None:
    assert crd_header(text) is None


def test_the_scan_agrees_with_the_parser_on_real_crds() -> None:
    parsed = yaml.safe_load(CRD)
    header = crd_header(CRD)
    assert header is not None
    assert header == {
        "apiVersion": parsed["apiVersion"],
        "kind": parsed["kind"],
        "metadata": {"name": parsed["metadata"]["name"]},
    }


def test_stdin_is_spooled_to_a_file_and_sniffed_for_json() -> None:
    (yaml_source,), _ = expand_paths(["-"], io.StringIO(CRD))
    assert yaml_source.spool is not None and yaml_source.path is not None
    assert not yaml_source.is_json
    assert yaml_source.path.read_text() == CRD
    (json_source,), _ = expand_paths(["-"], io.StringIO('\ufeff {"kind": "List", "items": []}'))
    assert json_source.is_json
    assert list(documents(json_source)) == []
