"""The Kubernetes deployment under deploy/, validated offline (no cluster, no Docker).

Every overlay is rendered with kustomize and then:

- checked against the Kubernetes OpenAPI schemas (kubernetes-validate, strict); the custom resources
  it cannot know (KEDA, Prometheus Operator) get their key fields checked here instead;
- scanned with checkov together with deploy/Dockerfile (only the checks in deploy/checkov-skips.yaml
  are skipped, each with its reason); the Dockerfile is also linted with hadolint;
- cross-checked against the connector itself: the rendered config.yaml, with the secret files it names
  and the ALTCRAFT_CONNECTOR__* variables of the Deployment, must pass ``altcraft-connector
  check-config``; the probes must hit endpoints the connector serves, on its port; the grace period
  must outlast the drain; replicas must not exceed the topic's partitions; the dashboard and alerts
  may only use metrics that connector.metrics defines; the alerts pass their promtool unit tests.

Copies of deploy/ with one deliberate mistake prove that each gate actually fails.

The tools come from .ci/install-deploy-tools.sh (into .cache/deploy-tools/bin, or $DEPLOY_TOOLS_DIR/bin),
which tests/deploy/conftest.py runs on first use; an install that fails fails these tests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from connector.config import ENV_PREFIX, PASSTHROUGH_MAPS, ObservabilitySettings, kafka_common_props, load_settings
from tests.deploy.tools import INSTALL_SCRIPT, REPO, tools_bin

DEPLOY = REPO / "deploy"
TOOLS_BIN = tools_bin()

OVERLAYS = ("dev", "prod")
# Kubernetes versions whose schemas the rendered objects must satisfy (oldest supported, recent).
K8S_VERSIONS = ("1.30.0", "1.35.0")
# Custom resources kubernetes-validate has no schema for; their fields are checked by hand below.
CRD_KINDS = {"PodMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
PARTITIONS_ANNOTATION = "altcraft-connector/topic-partitions"
CONTAINER = "connector"
APP_LABEL = {"app.kubernetes.io/name": "altcraft-connector"}
# Labels Prometheus adds to scraped series (PodMonitor target labels) or histograms carry.
TARGET_LABELS = {"namespace", "pod", "container", "job", "instance", "endpoint", "le"}
# Seconds the pod needs after the drain: the final commit and leaving the group.
GRACE_MARGIN_S = 10


# --------------------------------------------------------------------------------------------
# Tools and rendering


def tool(name: str) -> str:
    path = TOOLS_BIN / name
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} not found in {TOOLS_BIN}: run {INSTALL_SCRIPT} (it installs every tool this test uses)")
    return str(path)


def run(cmd: list[str], *, timeout: float = 300, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def kustomize_build(overlay_dir: Path) -> str:
    proc = run([tool("kustomize"), "build", str(overlay_dir)])
    assert proc.returncode == 0, f"kustomize build {overlay_dir} failed:\n{proc.stderr}"
    return proc.stdout


@cache
def rendered_text(overlay: str) -> str:
    return kustomize_build(DEPLOY / "overlays" / overlay)


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def rendered(overlay: str) -> list[dict[str, Any]]:
    return docs_of(rendered_text(overlay))


def copy_of_deploy(tmp_path: Path) -> Path:
    """A scratch copy of deploy/ that a test may break; kustomize paths inside it are relative."""
    return Path(shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("tools")))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}: update the test's deliberate mistake"
    path.write_text(text.replace(old, new, 1))


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = objects(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER]
    return c


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------------------------
# The connector's view of an overlay: its config file, secret files and environment


@dataclass
class ConnectorInputs:
    config: dict[str, Any]  # the rendered config.yaml, *_file paths pointing into tmp
    config_path: Path
    env: dict[str, str]  # the Deployment's ALTCRAFT_CONNECTOR__* variables, placeholders for valueFrom
    secret_files: dict[str, str]  # config key path -> path inside the pod


def mounted_file(deployment: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The pod volume serving ``path`` and the key of that volume's source (ConfigMap/Secret) behind it."""
    spec = deployment["spec"]["template"]["spec"]
    for mount in container(deployment).get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        rel = path[len(prefix) :]
        (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
        source = volume.get("secret") or volume.get("configMap") or {}
        items = source.get("items")
        if items is None:
            return volume, rel
        keys = [i["key"] for i in items if i["path"] == rel]
        assert keys, f"{path}: volume {volume['name']} has no item at {rel}"
        return volume, keys[0]
    raise AssertionError(f"{path} is not under any volumeMount of the {CONTAINER} container")


def config_path_in_pod(deployment: dict[str, Any]) -> str:
    c = container(deployment)
    argv = [*c.get("command", []), *c.get("args", [])]
    assert "--config" in argv, f"no --config in {argv}"
    return str(argv[argv.index("--config") + 1])


def file_keys(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("_file") and isinstance(value, str) and value:
                yield (*path, key), value
            else:
                yield from file_keys(value, (*path, str(key)))


def connector_inputs(docs: list[dict[str, Any]], tmp_path: Path) -> ConnectorInputs:
    deployment = one(docs, "Deployment")
    volume, key = mounted_file(deployment, config_path_in_pod(deployment))
    assert "configMap" in volume, f"the config file must come from a ConfigMap, not {volume}"
    (configmap,) = [d for d in objects(docs, "ConfigMap") if d["metadata"]["name"] == volume["configMap"]["name"]]
    config = yaml.safe_load(configmap["data"][key])

    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    secret_files = {}
    for key_path, in_pod in file_keys(config):
        # Every file the settings name must be mounted at that very path.
        mounted_file(deployment, in_pod)
        local = secrets_dir / "-".join(key_path)
        local.write_text(f"placeholder-{key_path[-1]}\n")
        section = config
        for part in key_path[:-1]:
            section = section[part]
        section[key_path[-1]] = str(local)
        secret_files[".".join(key_path)] = in_pod

    env = {}
    for var in container(deployment).get("env", []):
        if var["name"].startswith(ENV_PREFIX):
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif "fieldRef" in var.get("valueFrom", {}):
                env[var["name"]] = "altcraft-connector-7d9f8b6c5d-x2x9z"
            else:
                env[var["name"]] = "placeholder-from-" + next(iter(var["valueFrom"]))
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return ConnectorInputs(config, config_path, env, secret_files)


def check_config(inputs: ConnectorInputs) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)} | inputs.env
    cmd = [sys.executable, "-m", "connector.cli", "check-config", "--config", str(inputs.config_path)]
    return run([*cmd, "--format", "json"], env=env, cwd=inputs.config_path.parent, timeout=120)


def effective_settings(inputs: ConnectorInputs) -> dict[str, Any]:
    proc = check_config(inputs)
    assert proc.returncode == 0, f"check-config rejected the rendered settings:\n{proc.stderr}"
    settings: dict[str, Any] = json.loads(proc.stdout)
    return settings


@pytest.fixture(scope="module")
def effective(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Per overlay: the settings the connector would run with, as check-config prints them."""
    return {
        overlay: effective_settings(connector_inputs(rendered(overlay), tmp_path_factory.mktemp(overlay)))
        for overlay in OVERLAYS
    }


def setting_for_env(settings: dict[str, Any], name: str) -> Any:
    """The value at the key an ALTCRAFT_CONNECTOR__* variable names (the naming of connector/config.py)."""
    parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
    if len(parts) == 3 and (parts[0], parts[1]) in PASSTHROUGH_MAPS:
        parts[2] = parts[2].replace("_", ".")
    node: Any = settings
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def librdkafka_problems(inputs: ConnectorInputs) -> list[str]:
    """librdkafka refuses unknown property names at construction: build both clients as the connector does.

    The brokers are replaced by a closed loopback port, so nothing leaves the machine.
    """
    from confluent_kafka import Consumer, KafkaException, Producer

    settings = load_settings(inputs.config_path, environ=inputs.env)
    common = {**kafka_common_props(settings), "bootstrap.servers": "127.0.0.1:1", "log_level": 0}
    problems = []
    try:
        Consumer({**common, **settings.kafka.consumer, "group.id": settings.kafka.group_id}).close()
    except KafkaException as exc:
        problems.append(f"consumer: {exc}")
    try:
        Producer({**common, **settings.kafka.producer}).flush(0)
    except KafkaException as exc:
        problems.append(f"producer: {exc}")
    return problems


# --------------------------------------------------------------------------------------------
# Validators shared by the checks and by the deliberate-mistake tests


def schema_report(manifest: str, tmp_path: Path) -> tuple[list[str], set[str]]:
    """(failures, kinds without a schema) of kubernetes-validate --strict over K8S_VERSIONS."""
    path = tmp_path / "manifest.yaml"
    path.write_text(manifest)
    failures: list[str] = []
    unknown: set[str] = set()
    for version in K8S_VERSIONS:
        proc = run([tool("kubernetes-validate"), "--strict", "-k", version, str(path)])
        lines = (proc.stdout + proc.stderr).splitlines()
        failures += [f"[{version}] {line}" for line in lines if line.startswith("ERROR")]
        unknown |= {m.group(1) for line in lines if (m := re.search(r"schema for kind (\w+)", line))}
        if proc.returncode != 0 and not failures:
            failures.append(f"[{version}] kubernetes-validate exited {proc.returncode}: {proc.stderr}")
    return failures, unknown


def checkov_skips() -> dict[str, str]:
    skips: dict[str, str] = yaml.safe_load((DEPLOY / "checkov-skips.yaml").read_text())
    return skips


def checkov_report(scan_dir: Path) -> list[dict[str, Any]]:
    proc = run(
        [
            tool("checkov"), "-d", str(scan_dir), "--framework", "kubernetes", "dockerfile",
            "--skip-check", ",".join(checkov_skips()), "--skip-download", "--compact", "-o", "json",
        ]
    )  # fmt: skip
    assert proc.returncode in (0, 1), f"checkov crashed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    return report if isinstance(report, list) else [report]


def checkov_failures(report: list[dict[str, Any]]) -> list[str]:
    return [
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({Path(c['file_path']).name})"
        for r in report
        for c in r["results"]["failed_checks"]
    ]


def checkov_scan_dir(tmp_path: Path, manifests: dict[str, str], dockerfile: Path) -> Path:
    scan = tmp_path / "checkov"
    scan.mkdir()
    for name, text in manifests.items():
        (scan / f"{name}.yaml").write_text(text)
    shutil.copy(dockerfile, scan / "Dockerfile")
    return scan


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([tool("promtool"), *args], cwd=cwd)


def rules_for_promtool(prometheusrule: dict[str, Any], tmp_path: Path) -> Path:
    spec = json.loads(json.dumps(prometheusrule["spec"]))
    for group in spec["groups"]:
        for rule in group["rules"]:
            # Static prose; the templated summaries stay and are compared by alerts-test.yaml.
            rule.get("annotations", {}).pop("description", None)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


# --------------------------------------------------------------------------------------------
# Rendering and schemas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_deployment(overlay: str) -> None:
    kinds = {d["kind"] for d in rendered(overlay)}
    expected = {
        "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "PodMonitor",
        "PodDisruptionBudget", "NetworkPolicy",
    }  # fmt: skip
    assert expected <= kinds, f"missing: {expected - kinds}"
    namespaces = {d["metadata"].get("namespace") for d in rendered(overlay) if d["kind"] != "Namespace"}
    assert namespaces == {one(rendered(overlay), "Namespace")["metadata"]["name"]}


def test_prod_includes_autoscaling_and_monitoring() -> None:
    kinds = {d["kind"] for d in rendered("prod")}
    assert {"ScaledObject", "TriggerAuthentication", "PrometheusRule"} <= kinds
    assert "Secret" not in kinds, "prod must not carry Secrets: they are created out of band"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_match_the_kubernetes_schemas(overlay: str, tmp_path: Path) -> None:
    failures, unknown = schema_report(rendered_text(overlay), tmp_path)
    assert not failures, "\n".join(failures)
    # Only the known custom resources may go unchecked (their fields are checked in this file).
    assert unknown <= CRD_KINDS, f"no schema for {unknown - CRD_KINDS}"


def test_schema_validation_catches_an_invalid_field(tmp_path: Path) -> None:
    deploy = copy_of_deploy(tmp_path)
    edit(deploy / "base" / "deployment.yaml", "terminationGracePeriodSeconds: 45", "terminationGracePeriod: 45")
    failures, _ = schema_report(kustomize_build(deploy / "overlays" / "dev"), tmp_path)
    assert any("terminationGracePeriod" in f for f in failures), failures


# --------------------------------------------------------------------------------------------
# Static checks: checkov and hadolint


def test_checkov_skips_are_justified() -> None:
    skips = checkov_skips()
    assert skips, "an empty skip list belongs deleted"
    for check, reason in skips.items():
        assert re.fullmatch(r"CKV_(K8S|DOCKER)_\d+", check), check
        assert isinstance(reason, str) and len(reason.split()) >= 10, f"{check}: give the reason for skipping it"


def test_checkov_passes_on_every_overlay_and_the_dockerfile(tmp_path: Path) -> None:
    scan = checkov_scan_dir(tmp_path, {o: rendered_text(o) for o in OVERLAYS}, DEPLOY / "Dockerfile")
    report = checkov_report(scan)
    by_type = {r["check_type"]: r["summary"] for r in report}
    assert by_type["kubernetes"]["resource_count"] > 0 and by_type["dockerfile"]["resource_count"] == 1, by_type
    assert all(s["parsing_errors"] == 0 for s in by_type.values()), by_type
    assert not checkov_failures(report), "\n".join(checkov_failures(report))


def test_checkov_catches_a_privileged_container(tmp_path: Path) -> None:
    deploy = copy_of_deploy(tmp_path)
    edit(deploy / "base" / "deployment.yaml", "privileged: false", "privileged: true")
    scan = checkov_scan_dir(tmp_path, {"dev": kustomize_build(deploy / "overlays" / "dev")}, deploy / "Dockerfile")
    failures = checkov_failures(checkov_report(scan))
    assert any(f.startswith("CKV_K8S_16 ") for f in failures), failures


def test_hadolint_passes_on_the_dockerfile(tmp_path: Path) -> None:
    proc = run([tool("hadolint"), "--no-color", str(DEPLOY / "Dockerfile")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_an_unpinned_package(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    shutil.copy(DEPLOY / "Dockerfile", dockerfile)
    edit(dockerfile, "USER 10001:10001", "RUN apt-get update && apt-get install -y curl\nUSER 10001:10001")
    proc = run([tool("hadolint"), "--no-color", str(dockerfile)], cwd=tmp_path)
    assert proc.returncode != 0 and "DL3008" in proc.stdout, proc.stdout


# --------------------------------------------------------------------------------------------
# The image


def test_dockerfile_matches_the_deployment() -> None:
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    froms = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    assert len(froms) == 2 and froms[0] == froms[1], f"both stages must use the same pinned base: {froms}"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", froms[0]), froms[0]

    last = {word: rest for word, rest in instructions}
    entrypoint, cmd = json.loads(last["ENTRYPOINT"]), json.loads(last["CMD"])
    uid = last["USER"].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, "a numeric, non-root user that runAsNonRoot can verify"
    assert int(last["EXPOSE"]) == ObservabilitySettings().port

    for overlay in OVERLAYS:
        deployment = one(rendered(overlay), "Deployment")
        c = container(deployment)
        assert c["command"] == entrypoint and c["args"] == cmd, "the pod must run what the image runs"
        assert c["securityContext"]["runAsUser"] == int(uid)
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_dockerfile_installs_only_hash_locked_dependencies() -> None:
    runs = [rest for word, rest in dockerfile_instructions(DEPLOY / "Dockerfile") if word == "RUN"]
    installs = [part for r in runs for part in r.split("&&") if re.search(r"pip install", part)]
    for install in installs:
        args = shlex.split(install)
        assert "--require-hashes" in args or "--no-index" in args, f"unlocked install: {install}"
    for word, rest in dockerfile_instructions(DEPLOY / "Dockerfile"):
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                source = source.rstrip("*")
                allowed = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
                assert f"!{source}" in allowed or f"!{source}/" in allowed, f"{source} is not in the build context"


def lock_pins(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, int]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line):
            current = canonicalize_name(m.group(1))
            pins[current] = (m.group(2), 0)
        elif "--hash=sha256:" in line and current:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def test_runtime_lock_satisfies_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = lock_pins(DEPLOY / "requirements.lock")
    for dependency in project["dependencies"]:
        req = Requirement(dependency)
        name = canonicalize_name(req.name)
        assert name in pins, (
            f"{req.name} is in pyproject.toml but not in deploy/requirements.lock: run deploy/update-locks.sh"
        )
        assert req.specifier.contains(pins[name][0]), f"{req.name}=={pins[name][0]} violates {req.specifier}"
    unhashed = [name for name, (_, hashes) in pins.items() if hashes == 0]
    assert not unhashed, f"pins without hashes: {unhashed}"
    build_pins = lock_pins(DEPLOY / "build-requirements.lock")
    assert {"setuptools", "wheel"} <= build_pins.keys()


# --------------------------------------------------------------------------------------------
# What the manifests pass to the connector is what the connector reads


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_check_config_accepts_the_rendered_settings(overlay: str, tmp_path: Path) -> None:
    inputs = connector_inputs(rendered(overlay), tmp_path)
    assert inputs.secret_files == {
        "kafka.sasl_password_file": "/var/run/secrets/kafka/password",
        "altcraft.token_file": "/var/run/secrets/altcraft/token",
    }
    settings = effective_settings(inputs)
    assert inputs.env, "the overlays set their environment through ALTCRAFT_CONNECTOR__* variables"
    for name, value in inputs.env.items():
        # Each variable landed on a real key, with its value (check-config already refused unknown keys;
        # this also covers the free-form librdkafka maps).
        assert str(setting_for_env(settings, name)) == str(yaml.safe_load(value)), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_librdkafka_accepts_the_kafka_properties(overlay: str, tmp_path: Path) -> None:
    assert librdkafka_problems(connector_inputs(rendered(overlay), tmp_path)) == []


def test_check_config_catches_an_unknown_key(tmp_path: Path) -> None:
    deploy = copy_of_deploy(tmp_path)
    edit(deploy / "base" / "config.yaml", "  linger_s: 1.0", "  linger_seconds: 1.0")
    inputs = connector_inputs(docs_of(kustomize_build(deploy / "overlays" / "prod")), tmp_path)
    proc = check_config(inputs)
    assert proc.returncode == 2 and "batching.linger_seconds: unknown key" in proc.stderr, proc.stderr


def test_check_config_catches_a_misspelled_variable(tmp_path: Path) -> None:
    deploy = copy_of_deploy(tmp_path)
    edit(deploy / "overlays" / "prod" / "deployment-patch.yaml", "__ALTCRAFT__BASE_URL", "__ALTCRAFT__BASEURL")
    inputs = connector_inputs(docs_of(kustomize_build(deploy / "overlays" / "prod")), tmp_path)
    proc = check_config(inputs)
    assert proc.returncode == 2 and "altcraft.baseurl: unknown key" in proc.stderr, proc.stderr


def test_librdkafka_catches_a_misspelled_property(tmp_path: Path) -> None:
    # check-config cannot know librdkafka's property names: the client construction does.
    deploy = copy_of_deploy(tmp_path)
    edit(deploy / "overlays" / "prod" / "deployment-patch.yaml", "__COMMON__SASL_USERNAME", "__COMMON__SASL_USERNAM")
    inputs = connector_inputs(docs_of(kustomize_build(deploy / "overlays" / "prod")), tmp_path)
    assert check_config(inputs).returncode == 0
    assert any("sasl.usernam" in p for p in librdkafka_problems(inputs))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_mounted_read_only_from_the_expected_secrets(overlay: str) -> None:
    deployment = one(rendered(overlay), "Deployment")
    expected = {
        "/var/run/secrets/altcraft/token": ("altcraft-connector-altcraft", "token"),
        "/var/run/secrets/kafka/password": ("altcraft-connector-kafka", "password"),
    }
    for path, (secret, key) in expected.items():
        volume, source_key = mounted_file(deployment, path)
        assert volume["secret"]["secretName"].startswith(secret) and source_key == key, volume
    assert all(m.get("readOnly") for m in container(deployment)["volumeMounts"] if m["mountPath"] != "/tmp")
    # No secret travels through the environment.
    assert not [v for v in container(deployment).get("env", []) if "secretKeyRef" in v.get("valueFrom", {})]


# --------------------------------------------------------------------------------------------
# Probes, shutdown, scaling, security


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_target_the_connector_endpoints(overlay: str, effective: dict[str, dict[str, Any]]) -> None:
    deployment = one(rendered(overlay), "Deployment")
    c = container(deployment)
    port = effective[overlay]["observability"]["port"]
    assert port == ObservabilitySettings().port, "the manifests assume the connector's default port"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": port}
    expected_paths = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected_paths.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path and ports[get["port"]] == port, f"{probe}: {get}"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


def test_probe_paths_are_served_by_the_connector() -> None:
    from connector.health import HealthServer, HealthState

    def status(url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code

    state = HealthState()
    server = HealthServer("127.0.0.1", 0, state, CollectorRegistry())
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert status(base + "/healthz") == 200
        assert status(base + "/readyz") == 503, "not ready before joining the group"
        state.joined = True
        assert status(base + "/readyz") == 200
        assert status(base + "/metrics") == 200
        assert status(base + "/nothing") == 404
    finally:
        server.stop()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_the_drain(overlay: str, effective: dict[str, dict[str, Any]]) -> None:
    grace = one(rendered(overlay), "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = effective[overlay]["shutdown"]["drain_timeout_s"]
    assert grace >= drain + GRACE_MARGIN_S, f"terminationGracePeriodSeconds {grace} vs drain_timeout_s {drain}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_never_exceed_the_partitions(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = one(docs, "Deployment")
    partitions = int(deployment["metadata"]["annotations"][PARTITIONS_ANNOTATION])
    scaled = objects(docs, "ScaledObject")
    if scaled:
        assert "replicas" not in deployment["spec"], "with KEDA the HPA owns spec.replicas"
        spec = scaled[0]["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    else:
        assert 1 <= deployment["spec"]["replicas"] <= partitions


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_runs_restricted(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    sc = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and sc["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    assert one(docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_pick_the_connector_pods(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = one(docs, "Deployment")
    labels = pod_labels(deployment)
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    service = one(docs, "Service")
    assert selects(service["spec"]["selector"], labels) and service["spec"]["publishNotReadyAddresses"] is True
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]
    assert selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    monitor = one(docs, "PodMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], labels)
    assert [(e["port"], e["path"]) for e in monitor["spec"]["podMetricsEndpoints"]] == [("metrics", "/metrics")]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_allows_only_dns_kafka_registry_and_altcraft(overlay: str) -> None:
    policy = one(rendered(overlay), "NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(one(rendered(overlay), "Deployment")))
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    dns, kafka, registry, altcraft = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    for rule in (kafka, registry):
        # Peers keep their own labels: kustomize must not have written the app's selector into them.
        assert APP_LABEL.items() - rule["to"][0]["podSelector"]["matchLabels"].items()
    assert [p["port"] for p in altcraft["ports"]] == [443] and "cidr" in altcraft["to"][0]["ipBlock"]
    assert [p["port"] for r in policy["ingress"] for p in r["ports"]] == ["metrics"]


def test_keda_scales_the_connectors_group(effective: dict[str, dict[str, Any]]) -> None:
    docs = rendered("prod")
    settings = effective["prod"]
    deployment = one(docs, "Deployment")
    scaled = one(docs, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == settings["kafka"]["group_id"]
    assert meta["topic"] in [t for r in settings["routes"] for t in r["topics"]]
    assert meta["bootstrapServers"] == settings["kafka"]["bootstrap_servers"]
    assert int(meta["lagThreshold"]) > 0 and meta["allowIdleConsumers"] == "false"
    common = settings["kafka"]["common"]
    assert meta["sasl"] == common["sasl.mechanism"].lower().replace("-", "_").replace("scram_sha_", "scram_sha")
    assert (meta["tls"] == "enable") == common["security.protocol"].endswith("SSL")

    auth = one(docs, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (user,) = auth["spec"]["env"]
    assert user["containerName"] == CONTAINER
    assert user["name"] in {v["name"] for v in container(deployment)["env"]}
    (password,) = auth["spec"]["secretTargetRef"]
    volume, key = mounted_file(deployment, "/var/run/secrets/kafka/password")
    assert (password["name"], password["key"]) == (volume["secret"]["secretName"], key)


# --------------------------------------------------------------------------------------------
# Monitoring: alerts and dashboard


def connector_metrics() -> dict[str, tuple[str, ...]]:
    """Every series name the connector exports -> its label names (from connector.metrics)."""
    from connector.metrics import Metrics

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    names: dict[str, tuple[str, ...]] = {}
    for metric in vars(Metrics(CollectorRegistry())).values():
        if isinstance(metric, MetricWrapperBase):
            for suffix in suffixes.get(metric._type, ("",)):
                names[metric._name + suffix] = tuple(metric._labelnames)
    return names


def prometheus_rule() -> dict[str, Any]:
    return one(rendered("prod"), "PrometheusRule")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "monitoring" / "altcraft-connector-dashboard.json").read_text())
    return data


def dashboard_queries() -> list[str]:
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    return [t["expr"] for p in panels for t in p["targets"]]


def undefined_names_and_labels(expr: str, known: dict[str, tuple[str, ...]], recorded: set[str]) -> list[str]:
    problems = []
    used = set(re.findall(r"\baltcraft_connector[a-z0-9_:]*", expr))
    labels = set(TARGET_LABELS)
    for name in used:
        if name in recorded:
            continue
        if name not in known:
            problems.append(f"unknown metric {name}")
        else:
            labels |= set(known[name])
    for clause in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
        problems += [f"unknown label {lab}" for lab in re.findall(r"\w+", clause) if lab not in labels]
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        problems += [f"unknown label {lab}" for lab in re.findall(r"(\w+)\s*[=!]~?", matchers) if lab not in labels]
    return problems


def test_alerts_and_dashboard_use_only_metrics_the_connector_exports() -> None:
    known = connector_metrics()
    rules = [r for g in prometheus_rule()["spec"]["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    problems = {}
    for expr in [r["expr"] for r in rules] + dashboard_queries():
        if found := undefined_names_and_labels(expr, known, recorded):
            problems[expr] = found
    assert not problems, json.dumps(problems, indent=2)


def test_alerts_cover_the_failure_modes() -> None:
    alerts = {r["alert"]: r for g in prometheus_rule()["spec"]["groups"] for r in g["rules"] if "alert" in r}
    for name in ("Halted", "DeadLetterRateHigh", "LagGrowing", "NoProgress"):
        assert f"AltcraftConnector{name}" in alerts
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert name in (REPO / "README.md").read_text(), f"{name} is not explained in the README"


def test_alerts_pass_their_promtool_unit_tests(tmp_path: Path) -> None:
    rules = rules_for_promtool(prometheus_rule(), tmp_path)
    check = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    shutil.copy(DEPLOY / "monitoring" / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    test = promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr
    tested = set(re.findall(r"alertname: (\w+)", (tmp_path / "alerts-test.yaml").read_text()))
    alerts = {r["alert"] for g in prometheus_rule()["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert tested == alerts, f"alerts without a unit test: {alerts - tested}"


def test_promtool_catches_a_wrong_alert_threshold(tmp_path: Path) -> None:
    rule = prometheus_rule()
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if r.get("alert") == "AltcraftConnectorDeadLetterRateHigh":
                r["expr"] = r["expr"].replace("> 0.01", "> 0.05")
    rules_for_promtool(rule, tmp_path)
    shutil.copy(DEPLOY / "monitoring" / "alerts-test.yaml", tmp_path / "alerts-test.yaml")
    test = promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert test.returncode != 0 and "AltcraftConnectorDeadLetterRateHigh" in test.stdout + test.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    substitutions = {"$__rate_interval": "1m", "$namespace": "prod", "$route": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_queries()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unsubstituted variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = promtool("check", "rules", str(path), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_dashboard_shows_what_operators_need() -> None:
    board = dashboard()
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    assert board["uid"] and board["templating"]["list"][0]["type"] == "datasource"
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("consumed", "engaged vs dead-lettered", "latency p50 / p99", "retries", "lag", "halted"):
        assert topic in titles, f"no panel about {topic}"
    queries = " ".join(dashboard_queries())
    assert "histogram_quantile(0.5," in queries and "histogram_quantile(0.99," in queries
    configmap = [d for d in objects(rendered("prod"), "ConfigMap") if d["metadata"]["name"].endswith("dashboard")]
    assert json.loads(configmap[0]["data"]["altcraft-connector-dashboard.json"]) == board
