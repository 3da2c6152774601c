"""`orchestrator profile use VERSION` on a running gateway: the next request started after the
stated bound (`fit_poll_s`) routes on the pinned version, and every trace names its version."""

import asyncio
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from conftest import POOL3, RECORDED, mmlu_questions
from gateway_fixtures import running_gateway
from orchestrator.cli import app
from orchestrator.pipeline import Runtime
from orchestrator.settings import GatewaySettings, resolve_config
from routers.symbolic_moe import SymbolicMoERouter
from fit_fixtures import recorded_fit_data

runner = CliRunner()


def chat(url: str, q) -> str:  # type: ignore[no-untyped-def]
    r = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
        "model": "symbolic-moe", "messages": [{"role": "user", "content": q.text}],
        "metadata": {"question_id": q.question_id, "choices": list(q.choices)}})
    assert r.status_code == 200, r.text
    return r.headers["x-orchestrator-trace-id"]


def fit_version(url: str, trace_id: str) -> int | None:
    return httpx.get(f"{url}/v1/traces/{trace_id}", timeout=10).json()["plan"]["detail"]["fit_version"]


def recorded_gateway_config(tmp_path: Path) -> Path:
    """A config file: the three recorded experts, a SQLite store in `tmp_path`."""
    cfg_file = tmp_path / "gw.yaml"
    experts = "\n".join(f"  - {{name: {m}, backend: recorded, path: {RECORDED}, model: {m}}}" for m in POOL3)
    cfg_file.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'gw.db'}\nexperts:\n{experts}\n")
    return cfg_file


async def fit_twice(cfg) -> list[int]:  # type: ignore[no-untyped-def]
    """Two stored Symbolic-MoE fits (on different fit questions): their versions, oldest first."""
    async with await Runtime.create(cfg) as rt:
        out = []
        for offset in (500, 700):
            router = SymbolicMoERouter(rt.router_context(POOL3))
            await router.fit(recorded_fit_data(POOL3, 40, offset))
            out.append(router.fit_version)
        return out


def test_profile_use_takes_effect_on_a_running_gateway_within_its_poll(tmp_path: Path) -> None:
    cfg_file = recorded_gateway_config(tmp_path)
    cfg = resolve_config(cfg_file)

    v1, v2 = asyncio.run(fit_twice(cfg))
    qs = mmlu_questions(30, offset=3100)
    settings = GatewaySettings(fit_poll_s=1.0)
    with running_gateway(cfg, settings) as url:
        assert fit_version(url, chat(url, qs[0])) == v2
        r = runner.invoke(app, ["profile", "use", str(v1), "--router", "symbolic-moe", "--config", str(cfg_file)])
        assert r.exit_code == 0 and f"pinned symbolic-moe-profile/default v{v1}" in r.stdout, r.output
        pinned_at = time.monotonic()
        versions = []
        i = 1
        while time.monotonic() - pinned_at < settings.fit_poll_s + 0.2:
            versions.append(fit_version(url, chat(url, qs[i])))
            i += 1
        # Requests started within the bound may still see v2; the first after it sees v1, and v1 stays.
        after = [fit_version(url, chat(url, qs[j])) for j in range(i, i + 3)]
        assert after == [v1] * 3 and set(versions) <= {v1, v2}, (versions, after)
        listed = runner.invoke(app, ["profile", "list", "--router", "symbolic-moe", "--config", str(cfg_file), "--json"])
        assert listed.exit_code == 0, listed.output
        assert "pinned" in runner.invoke(app, ["profile", "list", "--config", str(cfg_file)]).stdout
        r = runner.invoke(app, ["profile", "use", "latest", "--router", "symbolic-moe", "--config", str(cfg_file)])
        assert r.exit_code == 0 and "1 pin dropped" in r.stdout, r.output
        time.sleep(settings.fit_poll_s + 0.1)
        assert fit_version(url, chat(url, qs[i + 3])) == v2
        bad = runner.invoke(app, ["profile", "use", "99", "--router", "symbolic-moe", "--config", str(cfg_file)])
        assert bad.exit_code == 2 and "no fitted version 99" in bad.stderr
        bad = runner.invoke(app, ["profile", "use", "x", "--router", "coe", "--config", str(cfg_file)])
        assert bad.exit_code == 2 and "VERSION" in bad.stderr


def test_a_cached_answer_is_not_served_across_a_fit_swap(tmp_path: Path) -> None:
    """The exact response cache is keyed on the fit version too: after `profile use` the same
    question is routed anew by the pinned fit, not answered from what the other fit routed."""
    from experts.spec import CacheConfig

    cfg_file = recorded_gateway_config(tmp_path)
    cfg = resolve_config(cfg_file).model_copy(update={"cache": CacheConfig.model_validate({"exact": {"enabled": True}})})

    v1, v2 = asyncio.run(fit_twice(cfg))
    (q,) = mmlu_questions(1, offset=3200)
    settings = GatewaySettings(fit_poll_s=0.5)

    def ask() -> httpx.Response:
        r = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
            "model": "symbolic-moe", "messages": [{"role": "user", "content": q.text}],
            "metadata": {"question_id": q.question_id, "choices": list(q.choices)}})
        assert r.status_code == 200, r.text
        return r

    with running_gateway(cfg, settings) as url:
        first = ask()
        assert "x-orchestrator-cache" not in first.headers
        assert fit_version(url, first.headers["x-orchestrator-trace-id"]) == v2
        hit = ask()
        assert hit.headers.get("x-orchestrator-cache") == "exact"
        step = httpx.get(f"{url}/v1/traces/{hit.headers['x-orchestrator-trace-id']}", timeout=10).json()["steps"][0]
        assert step["kind"] == "cache" and step["detail"]["fit_version"] == v2
        r = runner.invoke(app, ["profile", "use", str(v1), "--router", "symbolic-moe", "--config", str(cfg_file)])
        assert r.exit_code == 0, r.output
        time.sleep(settings.fit_poll_s + 0.2)
        after = ask()
        assert "x-orchestrator-cache" not in after.headers, "an answer routed by v2 was served after pinning v1"
        assert fit_version(url, after.headers["x-orchestrator-trace-id"]) == v1
        assert ask().headers.get("x-orchestrator-cache") == "exact"  # v1's own entry
