"""The shipped container and Kubernetes files (``deploy/``) are valid and agree with asgid.

Every manifest validates against the Kubernetes schemas (``kubernetes-validate``,
which bundles them; skipped with the reason where it is not installed), and
``check()`` holds the manifests, the Dockerfile and the configuration to each
other: the ports, probe paths and timeouts must be the ones asgid really
uses. A broken copy (wrong probe port, a grace period too short) must fail.
The configuration is loaded with asgid's own loader, and a server started
with it answers the probes' paths.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from helpers import ROOT, StartServer, free_port, wait_until

from asgid.config import Config, load_config, parse_bind

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
Manifests = dict[str, dict[str, Any]]  # file name -> the one resource in it


def manifests() -> Manifests:
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        (document,) = list(yaml.safe_load_all(path.read_text()))
        found[path.name] = document
    return found


def config_text(resources: Manifests) -> str:
    return str(resources["configmap.yaml"]["data"]["server.toml"])


def load(text: str, tmp_path: Path) -> Config:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return load_config(str(path))


def container(resources: Manifests) -> dict[str, Any]:
    (only,) = resources["deployment.yaml"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def check(resources: Manifests, config: Config) -> list[str]:
    """What in the manifests disagrees with asgid and ``config``; empty when nothing."""
    problems: list[str] = []
    pod = resources["deployment.yaml"]["spec"]["template"]["spec"]
    main = container(resources)
    ports = {p["name"]: p["containerPort"] for p in main.get("ports", [])}
    w = config.workers

    if ports.get("http") != parse_bind(config.server.bind[0]).port:
        problems.append(f"container port http {ports.get('http')} is not server.bind's")
    if not config.metrics.bind:
        problems.append("metrics.bind is off: the probes have nothing to ask")
    elif ports.get("metrics") != parse_bind(config.metrics.bind).port:
        problems.append(f"container port metrics {ports.get('metrics')} is not metrics.bind's")
    for probe, path in (
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ):
        get = main.get(probe, {}).get("httpGet", {})
        if get.get("path") != path:
            problems.append(f"{probe} asks {get.get('path')}, not {path}")
        port = get.get("port")
        if port != "metrics" and port != ports.get("metrics"):
            problems.append(f"{probe} asks port {port}, not the metrics port")
    startup = main.get("startupProbe", {})
    if startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) < w.boot_timeout:
        problems.append("startupProbe gives up before workers.boot_timeout")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    needed = math.ceil(w.shutdown_delay + w.graceful_timeout + 5)
    if grace < needed:
        problems.append(
            f"terminationGracePeriodSeconds {grace} < shutdown_delay + graceful_timeout + 5 "
            f"= {needed}"
        )
    for hook in ("preStop",):
        if hook in main.get("lifecycle", {}):
            problems.append(f"a {hook} hook: workers.shutdown_delay does its work")
    limits = main.get("resources", {}).get("limits", {})
    if not w.count and "cpu" not in limits:
        problems.append('workers.count = "auto" without a CPU limit counts the node\'s CPUs')
    if not isinstance(w.max_memory, int) and "memory" not in limits:
        problems.append("max_memory is a share, and there is no memory limit")
    rolling = resources["deployment.yaml"]["spec"].get("strategy", {}).get("rollingUpdate", {})
    if rolling.get("maxUnavailable") != 0:
        problems.append("rollingUpdate.maxUnavailable is not 0")

    mounts = {m["name"]: m["mountPath"] for m in main.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    config_volume = next(
        (n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "asgid"), ""
    )
    mounted_at = f"{mounts.get(config_volume, '?')}/server.toml"
    if resources["configmap.yaml"]["metadata"]["name"] != "asgid":
        problems.append("the ConfigMap is not the one the Deployment mounts")
    if main.get("command") or main.get("args"):
        problems.append("the container overrides the image's entrypoint")
    if pod.get("shareProcessNamespace"):
        problems.append("shareProcessNamespace: asgid would not be PID 1")

    instructions = dict(dockerfile())
    for instruction, arguments in dockerfile():
        if instruction == "COPY" and not arguments.startswith("--from="):
            for source in arguments.split()[:-1]:
                if not (ROOT / source).exists():
                    problems.append(f"the Dockerfile copies {source}, which is missing")
    try:
        entrypoint = json.loads(instructions.get("ENTRYPOINT", ""))
    except ValueError:
        entrypoint = None
    if not isinstance(entrypoint, list) or entrypoint[:2] != ["asgid", "-c"]:
        problems.append("the Dockerfile's ENTRYPOINT is not exec-form asgid -c")
    elif entrypoint[2] != mounted_at:
        problems.append(f"the image reads {entrypoint[2]}, the ConfigMap is at {mounted_at}")
    if instructions.get("STOPSIGNAL") != "SIGTERM":
        problems.append("the Dockerfile's STOPSIGNAL is not SIGTERM")
    user = instructions.get("USER", "root").split(":")[0]
    if user in ("root", "0"):
        problems.append("the image runs as root")
    elif pod.get("securityContext", {}).get("runAsUser") != int(user):
        problems.append("runAsUser is not the image's user")
    if not re.match(r"python:[\d.]+-slim", instructions.get("FROM", "")):
        problems.append("the image is not built on a slim Python base")
    exposed = {int(p) for p in instructions.get("EXPOSE", "").split()}
    if exposed != set(ports.values()):
        problems.append(f"the image exposes {sorted(exposed)}, the pod {sorted(ports.values())}")

    service = resources["service.yaml"]["spec"]
    if {p.get("targetPort") for p in service["ports"]} - {"http", ports.get("http")}:
        problems.append("the Service sends to a port that is not asgid's http port")
    labels = resources["deployment.yaml"]["spec"]["template"]["metadata"]["labels"]
    for name in ("service.yaml", "pdb.yaml", "podmonitor.yaml"):
        spec = resources[name]["spec"]
        selector = spec["selector"].get("matchLabels", spec["selector"])
        if not selector.items() <= labels.items():
            problems.append(f"{name} selects no asgid pod")
    for name in ("hpa.yaml", "hpa-in-progress.yaml"):
        target = resources[name]["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) != ("Deployment", "asgid"):
            problems.append(f"{name} scales something else")
    (endpoint,) = resources["podmonitor.yaml"]["spec"]["podMetricsEndpoints"]
    if (endpoint.get("port"), endpoint.get("path")) != ("metrics", "/metrics"):
        problems.append("the PodMonitor scrapes something other than metrics:/metrics")

    kustomization = resources["kustomization.yaml"]
    for name in kustomization["resources"]:
        if name not in resources:
            problems.append(f"kustomization.yaml lists {name}, which is missing")
    return problems


# -- the tests ---------------------------------------------------------------------------


def test_the_configuration_loads_and_matches_the_shipped_file(tmp_path: Path) -> None:
    resources = manifests()
    text = config_text(resources)
    assert text == (DEPLOY / "server.toml").read_text()  # the image's and the pod's agree
    config = load(text, tmp_path)
    assert config.workers.count == 0  # "auto"
    assert str(config.workers.max_memory) == "80%"
    assert config.workers.shutdown_delay > 0


def test_the_manifests_agree_with_asgid(tmp_path: Path) -> None:
    resources = manifests()
    assert check(resources, load(config_text(resources), tmp_path)) == []


@pytest.mark.parametrize(
    ("break_it", "problem"),
    [
        (lambda r: _probe(r, "readinessProbe").update(port=8000), "readinessProbe asks port 8000"),
        (lambda r: _probe(r, "livenessProbe").update(path="/"), "livenessProbe asks /"),
        (
            lambda r: r["deployment.yaml"]["spec"]["template"]["spec"].update(
                terminationGracePeriodSeconds=30
            ),
            "terminationGracePeriodSeconds 30 <",
        ),
        (
            lambda r: container(r)["ports"][1].update(containerPort=9200),
            "container port metrics 9200 is not metrics.bind's",
        ),
        (
            lambda r: r["service.yaml"]["spec"]["ports"][0].update(targetPort=8080),
            "the Service sends to a port",
        ),
    ],
    ids=["probe port", "probe path", "grace period", "metrics port", "service port"],
)
def test_a_broken_manifest_fails_the_check(tmp_path: Path, break_it: Any, problem: str) -> None:
    resources = copy.deepcopy(manifests())
    break_it(resources)
    problems = check(resources, load(config_text(resources), tmp_path))
    assert any(problem in p for p in problems), problems


def _probe(resources: Manifests, name: str) -> dict[str, Any]:
    get = container(resources)[name]["httpGet"]
    assert isinstance(get, dict)
    return get


def test_the_manifests_validate_against_the_kubernetes_schemas() -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install -e .[test])",
    )
    version = kubernetes_validate.latest_version()
    checked = []
    for resource in manifests().values():
        if resource["apiVersion"].startswith(("monitoring.coreos.com/", "kustomize.config")):
            continue  # CRDs and kustomize's own file: no schema ships for them
        kubernetes_validate.validate(resource, version, strict=True)
        checked.append(resource["kind"])
    assert sorted(set(checked)) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    broken = copy.deepcopy(manifests()["deployment.yaml"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [1]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_a_server_with_the_shipped_configuration_answers_the_probes(
    start_server: StartServer,
) -> None:
    metrics_port = free_port()
    server = start_server(
        "-c",
        str(DEPLOY / "server.toml"),
        "--metrics-bind",
        f"127.0.0.1:{metrics_port}",
        app_dir=ROOT,
    )
    base = f"http://127.0.0.1:{metrics_port}"
    container_ = container(manifests())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container_[probe]["httpGet"]["path"]
        wait_until(lambda path=path: httpx.get(base + path, timeout=5).status_code == 200, 15)
    assert httpx.get(server.url + "/", timeout=5).status_code == 200
