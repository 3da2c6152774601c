"""deploy/k8s rendered with kustomize (`kubectl kustomize`, base and each overlay) and checked
without a cluster: every object against the Kubernetes schemas (`kubernetes-validate`, PyPI),
and the gateway Deployment against what the gateway reads (orchestrator/settings.py) and what the
rest of the render provides (Secrets, ConfigMap, Services, probes).

kubectl comes from the machine (scripts/test.sh installs Debian's kubernetes-client when none
is on PATH); without it these tests fail, never skip."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from conftest import REPO
from experts import parse_config
from experts.backends.openai import MODEL_HEADER
from orchestrator.settings import GatewaySettings, Settings

K8S = REPO / "deploy" / "k8s"
TARGETS = {"base": K8S, "vllm-production-stack": K8S / "overlays" / "vllm-production-stack", "llm-d": K8S / "overlays" / "llm-d"}
# Custom resources: their schemas are CRDs (Gateway API, Inference Extension), not part of the
# Kubernetes schemas kubernetes-validate ships, and not available offline here; they are checked
# below by the fields that matter (the header rule, the pools it names) instead.
CRD_KINDS = {"base": set(), "vllm-production-stack": set(), "llm-d": {"HTTPRoute", "InferencePool"}}
# What N replicas on one store cannot do without (the rest have working defaults).
NEEDED_ENV = {"ORCHESTRATOR_CONFIG", "ORCHESTRATOR_STORE", "ORCHESTRATOR_REPLICA_ID", "ORCHESTRATOR_REQUIRE_API_KEY"}


@pytest.fixture(scope="module")
def kubectl() -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.fail("kubectl is missing: `bash .ci/apt.sh kubernetes-client` (scripts/test.sh does it when none is on PATH)")
    return exe


def render(kubectl: str, target: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def settings_env_names() -> set[str]:
    return {f"ORCHESTRATOR_{f.upper()}" for cls in (Settings, GatewaySettings) for f in cls.model_fields}


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_rendered_object_validates_against_the_kubernetes_schemas(kubectl: str, target: str) -> None:
    docs = render(kubectl, TARGETS[target])
    version = kubernetes_validate.latest_version()
    no_schema = set()
    for d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            no_schema.add(d["kind"])
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{target}: {d['kind']}/{d['metadata']['name']}: {e.message} at {list(e.path)}")
    assert no_schema == CRD_KINDS[target], "only the known custom resources may go unvalidated"
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret", "ConfigMap"}


@pytest.mark.parametrize("target", list(TARGETS))
def test_the_gateway_deployment_matches_what_the_gateway_reads(kubectl: str, target: str) -> None:
    docs = render(kubectl, TARGETS[target])
    dep = one(docs, "Deployment", "gateway")
    pod = dep["spec"]["template"]
    [container] = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}

    # the experts' config, as the gateway will load it from the mounted ConfigMap
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    config_path = Path(env["ORCHESTRATOR_CONFIG"]["value"])
    vol = next(n for n, p in mounts.items() if config_path.parent == Path(p))
    cm = one(docs, "ConfigMap", volumes[vol]["configMap"]["name"])
    config = parse_config(yaml.safe_load(cm["data"][config_path.name]), f"{target}: {config_path}")
    config_env = set(config.secrets.values()) | {e.api_key_env for e in config.experts if e.api_key_env}

    # every variable set is one the gateway reads (a setting, or a key the config names) ...
    unread = set(env) - settings_env_names() - config_env
    assert not unread, f"set but never read: {sorted(unread)}"
    # ... and everything it needs is set: the settings without a default, those N replicas need, the config's keys
    required = {f"ORCHESTRATOR_{f.upper()}" for cls in (Settings, GatewaySettings) for f, i in cls.model_fields.items() if i.is_required()}
    missing = (required | NEEDED_ENV | config_env) - set(env)
    assert not missing, f"needed but not set: {sorted(missing)}"
    for name in ("ORCHESTRATOR_BATCH_ENGINE", "ORCHESTRATOR_REQUIRE_API_KEY", "ORCHESTRATOR_BATCH_LEASE_S"):
        if "value" in env.get(name, {}):  # the values parse as the gateway parses them
            GatewaySettings.model_validate({name.removeprefix("ORCHESTRATOR_").lower(): env[name]["value"]})

    # secrets come from rendered Secrets holding those keys, with placeholders only
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in secrets[ref["name"]]["stringData"], (e["name"], ref)
    assert "secretKeyRef" in env["ORCHESTRATOR_STORE"]["valueFrom"]
    assert all("CHANGE-ME" in v for s in secrets.values() for v in s["stringData"].values())
    assert env["ORCHESTRATOR_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # one id per pod

    # every expert's host is a rendered Service, and so is the store's
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert {urlsplit(e.base_url).hostname for e in config.experts if e.base_url} <= services
    store_url = secrets["orchestrator-store"]["stringData"]["ORCHESTRATOR_STORE"]
    assert urlsplit(store_url).hostname in services and one(docs, "Service", "postgres")["spec"]["type"] == "ExternalName"

    # probes on the gateway's own routes; Service, PDB and HPA aim at these pods
    from orchestrator.gateway.routes.ops import router

    paths = {r.path for r in router.routes}
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready" in paths
    assert container["livenessProbe"]["httpGet"]["path"] == "/health" in paths
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items() and dep["spec"]["replicas"] >= 2
    assert one(docs, "Service", "gateway")["spec"]["selector"].items() <= labels.items()
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"] and container["resources"]["requests"]["cpu"]


def test_the_llm_d_route_acts_on_the_header_the_gateway_sets(kubectl: str) -> None:
    docs = render(kubectl, TARGETS["llm-d"])
    config = parse_config(yaml.safe_load(one(docs, "ConfigMap")["data"]["experts.yaml"]), "llm-d")
    route = one(docs, "HTTPRoute")
    pools = {d["metadata"]["name"] for d in docs if d["kind"] == "InferencePool"}
    by_model = {}
    for rule in route["spec"]["rules"]:
        [match] = rule["matches"]
        [header] = match["headers"]
        assert header["name"] == MODEL_HEADER and header.get("type", "Exact") == "Exact"
        [backend] = rule["backendRefs"]
        assert backend["kind"] == "InferencePool" and backend["group"] == "inference.networking.k8s.io" and backend["name"] in pools
        by_model[header["value"]] = backend["name"]
    # one rule per model the experts ask for, all of them through the inference gateway
    assert set(by_model) == {e.model for e in config.experts}
    assert {urlsplit(e.base_url).hostname for e in config.experts if e.base_url} == {"inference-gateway"}
    for d in docs:
        if d["kind"] == "InferencePool":
            assert d["apiVersion"] == "inference.networking.k8s.io/v1"
            assert d["spec"]["selector"]["matchLabels"] and d["spec"]["targetPorts"] and d["spec"]["endpointPickerRef"]["name"]
