"""The Helm chart under deploy/helm/altcraft-connector, validated offline like the Kustomize overlays.

The chart is linted (``helm lint --strict``) and rendered (``helm template``) three ways: with its
defaults, with KEDA and the PodMonitor on, and with those plus a private Kafka CA. Each rendering then
goes through the gates of test_deploy.py, whose helpers this file imports:

- kubernetes-validate (strict) against the same Kubernetes versions; only the known custom resources
  go unchecked there, and their key fields are checked here;
- checkov with the skips of deploy/checkov-skips.yaml;
- ``altcraft-connector check-config`` on the rendered config.yaml with the pod's ALTCRAFT_CONNECTOR__*
  variables and placeholder secret files, and the Kafka clients built from the result.

Then the chart is compared with Kustomize: its default pod template (containers, probes, security
contexts, mounts, volumes, grace period, service account...) and the objects around it must equal
deploy/base's once the names and labels that legitimately differ are normalised (Helm's bookkeeping
labels, the release instance label in selectors, the ConfigMap's hash suffix, the registry in the
image, the checksum/config annotation). With KEDA on, the ScaledObject and TriggerAuthentication must
equal those of deploy/components/keda (and kafka-ca). Copies with one deliberate mistake prove that the
comparison and the chart's own guards fail.

helm comes from .ci/install-deploy-tools.sh like the other tools; a missing one fails with that hint.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_deploy import (
    CONTAINER,
    CRD_KINDS,
    DEPLOY,
    GRACE_MARGIN_S,
    TOOLS_BIN,
    check_config,
    checkov_failures,
    checkov_report,
    checkov_scan_dir,
    connector_inputs,
    container,
    docs_of,
    edit,
    effective_settings,
    kustomize_build,
    librdkafka_problems,
    mounted_file,
    objects,
    one,
    pod_labels,
    run,
    schema_report,
    selects,
    setting_for_env,
    tool,
)

CHART = DEPLOY / "helm" / "altcraft-connector"
# Installed under this name, the chart names every object as the Kustomize base does.
RELEASE = "altcraft-connector"
NAMESPACE = "altcraft-connector"
KAFKA_CA_SECRET = "altcraft-connector-kafka-ca"
KEDA = ("--set", "keda.enabled=true", "--set", "podMonitor.enabled=true")
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "keda": KEDA,
    "keda-ca": (*KEDA, "--set", f"kafkaCA.secretName={KAFKA_CA_SECRET}"),
}
# Labels only Helm sets (bookkeeping, and the release in selectors so that releases stay apart).
HELM_ONLY_KEYS = {
    "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart",
    # Helm rolls the pods on a config change with this annotation; Kustomize with the ConfigMap's hashed name.
    "checksum/config",
}  # fmt: skip
KUSTOMIZE_HASH = re.compile(r"-[a-z0-9]{10}$")


# --------------------------------------------------------------------------------------------
# Rendering


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    # Helm's own caches and settings stay out of $HOME.
    home = TOOLS_BIN.parent / "helm-home"
    env = os.environ | {f"HELM_{kind}_HOME": str(home / kind.lower()) for kind in ("CACHE", "CONFIG", "DATA")}
    return run([tool("helm"), *args], env=env, timeout=120)


def helm_template(chart: Path, *values: str) -> str:
    proc = helm("template", RELEASE, str(chart), "--namespace", NAMESPACE, *values)
    assert proc.returncode == 0, f"helm template {' '.join(values)} failed:\n{proc.stderr}"
    return proc.stdout


@cache
def chart_text(variant: str) -> str:
    return helm_template(CHART, *VARIANTS[variant])


def chart(variant: str) -> list[dict[str, Any]]:
    return docs_of(chart_text(variant))


def kustomize_with(tmp_path: Path, deploy: Path, *components: str) -> list[dict[str, Any]]:
    """deploy/base plus the given components (paths under deploy/), built from a scratch overlay."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    spec = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes relative paths only.
        "resources": [os.path.relpath(deploy / "base", overlay)],
        "components": [os.path.relpath(deploy / c, overlay) for c in components],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    return docs_of(kustomize_build(overlay))


def copy_of_chart(tmp_path: Path) -> Path:
    return Path(shutil.copytree(CHART, tmp_path / "altcraft-connector"))


# --------------------------------------------------------------------------------------------
# Comparing the two renderings


def normalised(node: Any) -> Any:
    """``node`` without what legitimately differs between the chart and Kustomize."""
    if isinstance(node, dict):
        out = {k: normalised(v) for k, v in node.items() if k not in HELM_ONLY_KEYS}
        for key in ("env", "volumes", "volumeMounts"):
            # Kustomize patches prepend list items; their order carries no meaning here.
            if isinstance(out.get(key), list):
                out[key] = sorted(out[key], key=lambda item: item["name"])
        if isinstance(out.get("image"), str):
            # The base names the bare image; registries are a per-environment setting in both.
            out["image"] = out["image"].rsplit("/", 1)[-1]
        if isinstance(out.get("configMap"), dict):
            out["configMap"] = out["configMap"] | {"name": KUSTOMIZE_HASH.sub("", out["configMap"]["name"])}
        return out
    if isinstance(node, list):
        return [normalised(v) for v in node]
    return node


def differences(kustomize: Any, helm: Any, path: str = "") -> list[str]:
    """Where two normalised renderings differ, as readable paths."""
    if isinstance(kustomize, dict) and isinstance(helm, dict):
        found = []
        for key in sorted(kustomize.keys() | helm.keys(), key=str):
            if key not in helm:
                found.append(f"{path}.{key}: only in Kustomize ({kustomize[key]!r})")
            elif key not in kustomize:
                found.append(f"{path}.{key}: only in the chart ({helm[key]!r})")
            else:
                found += differences(kustomize[key], helm[key], f"{path}.{key}")
        return found
    if isinstance(kustomize, list) and isinstance(helm, list) and len(kustomize) == len(helm):
        return [
            d for i, (k, h) in enumerate(zip(kustomize, helm, strict=True)) for d in differences(k, h, f"{path}[{i}]")
        ]
    return [] if kustomize == helm else [f"{path}: Kustomize {kustomize!r} != chart {helm!r}"]


def connector_config(docs: list[dict[str, Any]]) -> Any:
    (configmap,) = [d for d in objects(docs, "ConfigMap") if "config.yaml" in d.get("data", {})]
    return yaml.safe_load(configmap["data"]["config.yaml"])


def object_differences(kustomize: list[dict[str, Any]], helm: list[dict[str, Any]], *kinds: str) -> list[str]:
    """Differences between the two renderings in the given kinds, the Deployment's pod template first."""
    found = []
    k_deployment, h_deployment = one(kustomize, "Deployment"), one(helm, "Deployment")
    found += differences(
        normalised(k_deployment["spec"]["template"]), normalised(h_deployment["spec"]["template"]), "pod"
    )
    spec = {k: v for k, v in k_deployment["spec"].items() if k != "template"}
    helm_spec = {k: v for k, v in h_deployment["spec"].items() if k != "template"}
    found += differences(normalised(spec), normalised(helm_spec), "Deployment.spec")
    found += differences(
        k_deployment["metadata"].get("annotations"),
        h_deployment["metadata"].get("annotations"),
        "Deployment.annotations",
    )
    found += differences(connector_config(kustomize), connector_config(helm), "config.yaml")
    for kind in kinds:
        k_object, h_object = normalised(one(kustomize, kind)), normalised(one(helm, kind))
        found += differences(k_object.get("spec"), h_object.get("spec"), f"{kind}.spec")
        if kind not in UNLABELLED_IN_KUSTOMIZE:
            found += differences(
                k_object["metadata"].get("labels"), h_object["metadata"].get("labels"), f"{kind}.labels"
            )
    sa_k, sa_h = one(kustomize, "ServiceAccount"), one(helm, "ServiceAccount")
    found += differences(sa_k["automountServiceAccountToken"], sa_h["automountServiceAccountToken"], "ServiceAccount")
    return found


BASE_KINDS = ("Service", "PodDisruptionBudget", "NetworkPolicy")
# The base's common labels do not reach objects that a component adds; the chart labels them too.
UNLABELLED_IN_KUSTOMIZE = {"ScaledObject", "TriggerAuthentication"}


# --------------------------------------------------------------------------------------------
# Lint and render


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_passes(variant: str) -> None:
    proc = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *VARIANTS[variant])
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_chart_renders_the_whole_deployment(variant: str) -> None:
    docs = chart(variant)
    kinds = {d["kind"] for d in docs}
    expected = {"ServiceAccount", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    keda = {"ScaledObject", "TriggerAuthentication"}
    if variant == "default":
        assert kinds == expected, kinds
    else:
        assert kinds == expected | keda | {"PodMonitor"}, kinds
    assert {d["metadata"].get("namespace") for d in docs} == {NAMESPACE}
    assert "Secret" not in kinds, "the chart creates no Secrets: they are created out of band"
    assert {d["metadata"]["name"] for d in docs if d["kind"] in expected - {"ConfigMap"}} == {RELEASE}


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_chart_matches_the_kubernetes_schemas(variant: str, tmp_path: Path) -> None:
    failures, unknown = schema_report(chart_text(variant), tmp_path)
    assert not failures, "\n".join(failures)
    assert unknown <= CRD_KINDS, f"no schema for {unknown - CRD_KINDS}"


def test_schema_validation_catches_an_invalid_field_in_the_chart(tmp_path: Path) -> None:
    copy = copy_of_chart(tmp_path)
    edit(copy / "templates" / "deployment.yaml", "enableServiceLinks: false", "enableServiceLink: false")
    failures, _ = schema_report(helm_template(copy), tmp_path)
    assert any("enableServiceLink" in f for f in failures), failures


def test_checkov_passes_on_the_chart(tmp_path: Path) -> None:
    scan = checkov_scan_dir(tmp_path, {v: chart_text(v) for v in VARIANTS}, DEPLOY / "Dockerfile")
    report = checkov_report(scan)
    by_type = {r["check_type"]: r["summary"] for r in report}
    assert by_type["kubernetes"]["resource_count"] > 0, by_type
    assert all(s["parsing_errors"] == 0 for s in by_type.values()), by_type
    assert not checkov_failures(report), "\n".join(checkov_failures(report))


def test_checkov_catches_a_privileged_container_in_the_chart(tmp_path: Path) -> None:
    copy = copy_of_chart(tmp_path)
    edit(copy / "templates" / "deployment.yaml", "privileged: false", "privileged: true")
    scan = checkov_scan_dir(tmp_path, {"default": helm_template(copy)}, DEPLOY / "Dockerfile")
    assert any(f.startswith("CKV_K8S_16 ") for f in checkov_failures(checkov_report(scan)))


# --------------------------------------------------------------------------------------------
# What the chart passes to the connector is what the connector reads


@pytest.mark.parametrize("variant", VARIANTS)
def test_check_config_accepts_the_chart_settings(variant: str, tmp_path: Path) -> None:
    inputs = connector_inputs(chart(variant), tmp_path)
    assert inputs.secret_files == {
        "kafka.sasl_password_file": "/var/run/secrets/kafka/password",
        "altcraft.token_file": "/var/run/secrets/altcraft/token",
    }
    settings = effective_settings(inputs)
    for name, value in inputs.env.items():
        assert str(setting_for_env(settings, name)) == str(yaml.safe_load(value)), name
    deployment = one(chart(variant), "Deployment")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= settings["shutdown"]["drain_timeout_s"] + GRACE_MARGIN_S
    port = settings["observability"]["port"]
    assert {p["name"]: p["containerPort"] for p in container(deployment)["ports"]} == {"metrics": port}
    if variant == "keda-ca":
        # The CA the connector trusts is the mounted Secret's file.
        ca = settings["kafka"]["common"]["ssl.ca.location"]
        volume, key = mounted_file(deployment, ca)
        assert (volume["secret"]["secretName"], key) == (KAFKA_CA_SECRET, "ca.crt")
    else:
        assert "ssl.ca.location" not in settings["kafka"]["common"]


@pytest.mark.parametrize("variant", ["default", "keda"])
def test_librdkafka_accepts_the_chart_kafka_properties(variant: str, tmp_path: Path) -> None:
    assert librdkafka_problems(connector_inputs(chart(variant), tmp_path)) == []


def test_check_config_catches_an_unknown_key_in_the_values(tmp_path: Path) -> None:
    docs = docs_of(helm_template(CHART, "--set", "config.batching.linger_seconds=1"))
    result = check_config(connector_inputs(docs, tmp_path))
    assert result.returncode == 2 and "batching.linger_seconds: unknown key" in result.stderr, result.stderr


# --------------------------------------------------------------------------------------------
# The chart's own guards


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (("--set", "terminationGracePeriodSeconds=30"), "must exceed config.shutdown.drain_timeout_s"),
        (("--set", "replicaCount=7"), "replicaCount (7) exceeds topicPartitions (6)"),
        ((*KEDA, "--set", "keda.maxReplicaCount=8"), "keda.maxReplicaCount (8) exceeds topicPartitions (6)"),
        (("--set", "image.pullPolicy=Sometimes"), "pullPolicy"),
        (("--set", "topicPartitions=0"), "topicPartitions"),
    ],
)
def test_chart_refuses_unsafe_values(values: tuple[str, ...], message: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_chart_selectors_pick_the_connector_pods(variant: str) -> None:
    docs = chart(variant)
    deployment = one(docs, "Deployment")
    labels = pod_labels(deployment)
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(one(docs, "Service")["spec"]["selector"], labels)
    assert selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    assert selects(one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], labels)
    for monitor in objects(docs, "PodMonitor"):
        assert selects(monitor["spec"]["selector"]["matchLabels"], labels)
    if variant == "default":
        assert deployment["spec"]["replicas"] == 1
    else:
        assert "replicas" not in deployment["spec"], "with KEDA the HPA owns spec.replicas"


@pytest.mark.parametrize("variant", ["keda", "keda-ca"])
def test_chart_keda_scales_the_connectors_group_over_sasl_and_tls(variant: str, tmp_path: Path) -> None:
    docs = chart(variant)
    settings = effective_settings(connector_inputs(docs, tmp_path))
    deployment = one(docs, "Deployment")
    partitions = int(deployment["metadata"]["annotations"]["altcraft-connector/topic-partitions"])
    scaled = one(docs, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings["kafka"]["group_id"]
    assert meta["bootstrapServers"] == settings["kafka"]["bootstrap_servers"]
    assert meta["topic"] in [t for r in settings["routes"] for t in r["topics"]]
    assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")

    auth = one(docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (user,) = auth["spec"]["env"]
    assert user["containerName"] == CONTAINER
    assert user["name"] in {v["name"] for v in container(deployment)["env"]}
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    volume, key = mounted_file(deployment, "/var/run/secrets/kafka/password")
    assert refs.pop("password") == (volume["secret"]["secretName"], key)
    if variant == "keda-ca":
        # KEDA trusts the very CA the connector does.
        volume, key = mounted_file(deployment, settings["kafka"]["common"]["ssl.ca.location"])
        assert refs.pop("ca") == (volume["secret"]["secretName"], key)
    assert refs == {}


# --------------------------------------------------------------------------------------------
# The chart and Kustomize render the same thing


def test_chart_defaults_render_the_kustomize_base() -> None:
    found = object_differences(docs_of(kustomize_build(DEPLOY / "base")), chart("default"), *BASE_KINDS)
    assert not found, "\n".join(found)


def test_chart_keda_renders_the_kustomize_keda_component(tmp_path: Path) -> None:
    kustomize = kustomize_with(tmp_path, DEPLOY, "components/keda")
    kinds = (*BASE_KINDS, "PodMonitor", "ScaledObject", "TriggerAuthentication")
    found = object_differences(kustomize, chart("keda"), *kinds)
    assert not found, "\n".join(found)


def test_chart_kafka_ca_renders_the_kustomize_kafka_ca_component(tmp_path: Path) -> None:
    kustomize = kustomize_with(tmp_path, DEPLOY, "components/keda", "components/keda/kafka-ca")
    found = object_differences(kustomize, chart("keda-ca"), "TriggerAuthentication", "ScaledObject")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("template", "old", "new", "where"),
    [
        ("deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem"),
        ("deployment.yaml", "path: /readyz", "path: /healthz", "readinessProbe"),
        ("deployment.yaml", "mountPath: /var/run/secrets/altcraft", "mountPath: /run/altcraft", "volumeMounts"),
        ("deployment.yaml", "fsGroup: 10001", "fsGroup: 10002", "securityContext.fsGroup"),
        ("networkpolicy.yaml", 'policyTypes: ["Ingress", "Egress"]', 'policyTypes: ["Ingress"]', "policyTypes"),
        ("../values.yaml", "linger_s: 1.0", "linger_s: 2.0", "config.yaml.batching.linger_s"),
        ("../values.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 50", "Grace"),
    ],
)
def test_comparison_catches_a_chart_that_drifts(template: str, old: str, new: str, where: str, tmp_path: Path) -> None:
    copy = copy_of_chart(tmp_path)
    edit(copy / "templates" / template, old, new)
    found = object_differences(docs_of(kustomize_build(DEPLOY / "base")), docs_of(helm_template(copy)), *BASE_KINDS)
    assert any(where.lower() in f.lower() for f in found), found


def test_comparison_catches_a_kustomize_base_that_drifts(tmp_path: Path) -> None:
    deploy = Path(shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("tools", "helm")))
    edit(deploy / "components" / "keda" / "scaledobject.yaml", 'lagThreshold: "20000"', 'lagThreshold: "5000"')
    kustomize = kustomize_with(tmp_path, deploy, "components/keda")
    found = object_differences(kustomize, chart("keda"), "ScaledObject")
    assert any("lagThreshold" in f for f in found), found
