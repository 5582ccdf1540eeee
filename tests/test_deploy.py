"""The container image and the Kubernetes manifests (deploy/kubernetes), checked offline: every
manifest against the Kubernetes API schemas (kubernetes-validate, strict), the KEDA
ScaledObject against the fields KEDA documents, and the manifests against each other and
against what ``pipeline serve`` really answers (probe paths, the metric the autoscalers read,
the drain fitting in the grace period). The image is built where a Docker engine runs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"


def docs() -> list[tuple[str, dict[str, Any]]]:
    yaml = YAML(typ="safe")
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.load_all(path.read_text()):
            if doc:
                out.append((str(path.relative_to(ROOT)), doc))
    return out


def by_kind(kind: str) -> dict[str, Any]:
    found = [d for _, d in docs() if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} manifests"
    return found[0]


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    checked = []
    for where, doc in docs():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a custom resource: below
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:  # names the bad field's path
            raise AssertionError(f"{where}: {doc['kind']}: {exc}") from exc
        checked.append(doc["kind"])
    assert sorted(checked) == sorted(
        ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Namespace",
         "PodDisruptionBudget", "Role", "RoleBinding", "Service", "ServiceAccount"]
    )  # fmt: skip


def test_a_broken_manifest_is_caught() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    dep = by_kind("Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kv.ValidationError, match="containerPort"):
        kv.validate(dep, K8S_VERSION, strict=True)


# The ScaledObject fields KEDA documents (keda.sh/v1alpha1), those we use and their types.
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer"},
                "advanced": {"type": "object"},
                "fallback": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_keda_scaled_object() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    so = by_kind("ScaledObject")
    jsonschema.validate(so, SCALED_OBJECT)
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert set(trigger["metadata"]) >= {"serverAddress", "query", "threshold"}
    assert "pipeline_calls_active" in trigger["metadata"]["query"]
    bad = {**so, "spec": {**so["spec"], "triggers": [{"type": "prometheus", "metadata": {"x": 1}}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCALED_OBJECT)


def container() -> dict[str, Any]:
    return by_kind("Deployment")["spec"]["template"]["spec"]["containers"][0]


def flag(args: list[str], name: str) -> str:
    for a in args:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    raise AssertionError(f"--{name}=... not in {args}")


def test_the_manifests_agree_with_each_other_and_with_serve() -> None:
    dep = by_kind("Deployment")
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    c = container()
    args = c["args"]
    # probes on the paths serve answers, on its port
    port = int(flag(args, "port"))
    assert c["ports"][0] == {"name": "http", "containerPort": port, "protocol": "TCP"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # the grace period outlasts the preStop's wait plus the drain
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert "kill -TERM 1" in pre[-1]
    wait = int(re.match(r"sleep (\d+);", pre[-1]).group(1))  # type: ignore[union-attr]
    drain = float(flag(args, "drain-timeout"))
    assert pod["spec"]["terminationGracePeriodSeconds"] > wait + drain
    # the downward API gives serve its pod, the account may patch it
    env = {e["name"]: e.get("valueFrom", {}) for e in c["env"]}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    role = by_kind("Role")
    assert {"patch", "get"} <= set(role["rules"][0]["verbs"]) and role["rules"][0]["resources"] == [
        "pods"
    ]
    assert by_kind("RoleBinding")["subjects"][0]["name"] == pod["spec"]["serviceAccountName"]
    # selectors find the pods
    for kind in ("Service", "PodDisruptionBudget"):
        spec = by_kind(kind)["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        assert selector.items() <= labels.items(), kind
    assert by_kind("Service")["spec"]["ports"][0]["targetPort"] == "http"
    # CPU: one core per worker, requests = limits (no throttling mid-call)
    workers = int(flag(args, "workers"))
    assert c["resources"]["requests"] == c["resources"]["limits"]
    assert int(c["resources"]["requests"]["cpu"]) == workers
    # the autoscalers read the metric serve exports, and aim below a pod's capacity
    capacity = workers * int(flag(args, "max-calls"))
    hpa = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    metric = hpa["spec"]["metrics"][0]["pods"]
    adapter = YAML(typ="safe").load(by_kind("ConfigMap")["data"]["config.yaml"])["rules"][0]
    assert metric["metric"]["name"] == adapter["name"]["as"] == "pipeline_calls_active"
    assert "pipeline_calls_active{" in adapter["seriesQuery"]
    assert adapter["metricsQuery"].startswith("sum(")  # over the pod's workers
    assert 0 < int(metric["target"]["averageValue"]) < capacity
    so = by_kind("ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert 0 < int(so["spec"]["triggers"][0]["metadata"]["threshold"]) < capacity


def test_serve_exports_the_metric_the_autoscalers_read() -> None:
    from stages.telephony.serve import ServeMetrics

    assert b"# TYPE pipeline_calls_active gauge" in ServeMetrics().text()


# ---------------------------------------------------------------------------- the image


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_shape() -> None:
    ins = instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert froms and all(re.match(r"python:\$\{PYTHON\}-slim\b", f) for f in froms)
    assert dict(ins)["ARG"].startswith("PYTHON=3.")
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM") :]
    user = [rest for word, rest in final if word == "USER"]
    assert user and not user[-1].startswith(("0", "root"))
    run = " ".join(rest for word, rest in final if word == "RUN")
    assert "silero_vad.onnx" in run  # the model is in the installed package, checked at build
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    assert dict(final)["ENTRYPOINT"] == '["pipeline", "serve"]'
    assert (ROOT / "stages" / "vad" / "data" / "silero_vad.onnx").is_file()


def _docker_engine() -> str:
    """'' when a Docker engine answers, else why not."""
    docker = shutil.which("docker")
    if docker is None:
        return "docker is not installed"
    try:
        r = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker info failed: {exc}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers here (docker info: {last})"
    return ""


def test_image_builds_and_runs_as_non_root(tmp_path: Path) -> None:
    why = _docker_engine()
    if why:
        pytest.skip(why)
    tag = "pipeline-agent:test"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ROOT)], check=True, timeout=900)
    uid = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    assert uid == "10001"
    out = subprocess.run(
        ["docker", "run", "--rm", tag, "--help"], check=True, capture_output=True, text=True
    ).stdout
    assert "--workers" in out
    check = "from stages.vad.engines import silero_session; silero_session(); print('ok')"
    r = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", tag, "-c", check],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.stdout.strip() == "ok", r.stderr
