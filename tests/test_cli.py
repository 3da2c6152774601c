"""The `orchestrator` CLI end to end (real experts; the vLLM one from .ci/vllm.sh)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import POOL3, RECORDED, closed_port_url, require_vllm_url
from faulty_upstream import FaultyUpstream
from orchestrator.cli import app
from orchestrator.cli._common import EXIT_NO_ANSWER, EXIT_UNDECIDED, EXIT_USAGE

runner = CliRunner()


def write_config(tmp_path: Path, vllm_url: str) -> Path:
    p = tmp_path / "experts.yaml"
    p.write_text(f"""
store: sqlite+aiosqlite:///{tmp_path / 'cli.db'}
experts:
  - name: vllm-smol
    backend: openai
    base_url: {vllm_url}
    model: smollm2-135m-instruct
    timeout_s: 60
  - name: local-smol
    backend: local
    model: smollm2-135m-instruct
  - name: yi-recorded
    backend: recorded
    path: {RECORDED}
    model: Yi-34B
""")
    return p


@pytest.mark.vllm
def test_experts_check_all_three_backends_then_vllm_down(tmp_path: Path) -> None:
    url = require_vllm_url()
    up = runner.invoke(app, ["experts", "check", "--config", str(write_config(tmp_path, url))])
    assert up.exit_code == 0, up.output
    assert up.output.count("up") >= 3 and "down" not in up.output

    # The same config with the vLLM server unreachable: reported down with the reason, exit non-zero.
    down = runner.invoke(app, ["experts", "check", "--config", str(write_config(tmp_path, closed_port_url()))])
    assert down.exit_code == 1
    assert "vllm-smol" in down.output and "down" in down.output and "connection refused" in down.output


def test_experts_list_and_bad_config_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("experts:\n  - name: x\n    backend: openai\n    model: m\n")
    r = runner.invoke(app, ["experts", "list", "--config", str(bad)])
    assert r.exit_code == 2
    assert "bad.yaml: experts[0]: base_url is required" in r.output
    assert "Traceback" not in r.output


def test_ask_all_vote_on_recorded_experts_stores_its_trace(tmp_path: Path) -> None:
    cfg = tmp_path / "rec.yaml"
    experts = "\n".join(f"  - {{name: {m}, backend: recorded, path: {RECORDED}, model: {m}}}" for m in POOL3)
    cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'r.db'}\nexperts:\n{experts}\n")
    # A recorded expert answers only questions it has outputs for: an unknown question fails
    # clearly in the trace rather than inventing an answer, and `ask` says no expert answered.
    r = runner.invoke(app, ["ask", "What is 2+2?", "--router", "all-vote", "--config", str(cfg), "--json"])
    assert r.exit_code == EXIT_NO_ANSWER, r.output
    out = json.loads(r.stdout)
    assert [c["error_kind"] for c in out["calls"]] == ["unknown_question"] * 3
    assert r.stderr.count("\n") == 1 and "no expert answered" in r.stderr and out["trace_id"] in r.stderr
    t = runner.invoke(app, ["trace", out["trace_id"], "--config", str(cfg)])
    assert t.exit_code == 0 and json.loads(t.stdout)["status"] == "error"


def test_keys_create_admin_and_user_keys_list_and_revoke(tmp_path: Path) -> None:
    cfg = tmp_path / "keys.yaml"
    cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'k.db'}\nexperts: []\n")
    made = {}
    for name, flags in (("ops", ["--admin"]), ("alice", [])):
        r = runner.invoke(app, ["keys", "create", name, *flags, "--config", str(cfg)])
        assert r.exit_code == 0, r.output
        key_id = r.stderr.split()[1]
        assert r.stdout.strip().startswith("sk-orch-") and key_id.startswith("key_")
        made[name] = key_id
    assert "(x, admin)" in runner.invoke(app, ["keys", "create", "x", "--admin", "--config", str(cfg)]).stderr
    assert runner.invoke(app, ["keys", "revoke", made["alice"], "--config", str(cfg)]).exit_code == 0
    listed = runner.invoke(app, ["keys", "list", "--config", str(cfg)]).stdout
    assert f"{made['ops']}\tops\tadmin\tactive" in listed and f"{made['alice']}\talice\tuser\trevoked" in listed
    assert "sk-orch-" not in listed  # only ids, never the keys
    assert runner.invoke(app, ["keys", "revoke", "key_nope", "--config", str(cfg)]).exit_code == 2


def test_unknown_router_is_a_one_line_error() -> None:
    r = runner.invoke(app, ["ask", "hi", "--router", "nope"])
    assert r.exit_code == 2 and "unknown router 'nope'; available: single" in r.output


def recorded_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "rec.yaml"
    experts = "\n".join(f"  - {{name: {m}, backend: recorded, path: {RECORDED}, model: {m}}}" for m in POOL3)
    cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'r.db'}\nexperts:\n{experts}\n{extra}")
    return cfg


def test_ask_exits_3_with_one_line_when_every_expert_is_unreachable(tmp_path: Path) -> None:
    cfg = tmp_path / "down.yaml"
    down = closed_port_url()
    cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'd.db'}\nexperts:\n"
                   f"  - {{name: down-a, backend: openai, base_url: {down}, model: m, timeout_s: 5}}\n"
                   f"  - {{name: down-b, backend: openai, base_url: {down}, model: m, timeout_s: 5}}\n")
    r = runner.invoke(app, ["ask", "What is 2+2?", "--router", "all-vote", "--config", str(cfg)], env={"COLUMNS": "80"})
    assert r.exit_code == EXIT_NO_ANSWER, r.output
    assert "(empty answer)" in r.stdout  # the table still shows what happened
    [line] = r.stderr.splitlines()
    assert line.startswith("error: no expert answered (down-a: ") and "down-b: " in line and "trace " in line
    assert "connection refused" in line.lower()


def test_ask_exits_4_when_the_router_cannot_decide(tmp_path: Path) -> None:
    # Not fitted: the router has nothing to decide with (coe and symbolic-moe would route on their prior).
    r = runner.invoke(app, ["ask", "Which enzyme unwinds DNA?", "--router", "best-single", "--config", str(recorded_config(tmp_path))])
    assert r.exit_code == EXIT_UNDECIDED, r.output
    assert r.stderr.startswith("error: the router could not decide: router 'best-single' must be fitted first") and r.stderr.count("\n") == 1
    # The oracle needs a gold answer, which a user question never has.
    r = runner.invoke(app, ["ask", "2+2?", "--router", "oracle", "--config", str(recorded_config(tmp_path))])
    assert r.exit_code == EXIT_UNDECIDED and "needs the gold answer" in r.stderr
    # A multiple-choice question whose answer names no option: answered, but not decided.
    with FaultyUpstream("ok") as up:  # replies "The answer is 4." to everything
        cfg = tmp_path / "up.yaml"
        cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'u.db'}\nexperts:\n"
                       f"  - {{name: up, backend: openai, base_url: {up.base_url}, model: faulty, max_wait_ms: 0}}\n")
        r = runner.invoke(app, ["ask", "2+2?", "--choice", "3", "--choice", "5", "--config", str(cfg), "--json"])
        assert r.exit_code == EXIT_UNDECIDED, r.output
        assert json.loads(r.stdout)["answer"] == "The answer is 4."
        assert "no option can be read from the answer" in r.stderr
        # The same answer to an open question is a real answer: exit 0.
        ok = runner.invoke(app, ["ask", "2+2?", "--config", str(cfg)])
        assert ok.exit_code == 0 and "The answer is 4." in ok.stdout and ok.stderr == ""


def test_contradictory_options_are_errors(tmp_path: Path) -> None:
    cfg = str(recorded_config(tmp_path))
    r = runner.invoke(app, ["ask", "hi", "--router", "all-vote", "--expert", "Yi-34B", "--config", cfg])
    assert r.exit_code == EXIT_USAGE and "--expert applies to --router single only, not --router all-vote" in r.stderr
    r = runner.invoke(app, ["ask", "hi", "--router", "single", "--expert", "nope", "--config", cfg])
    assert r.exit_code == EXIT_USAGE and "unknown expert 'nope'; configured: Meta-Llama-3.1-8B-Instruct" in r.stderr
    for router, message in (("all-vote", "router 'all-vote' needs no fit, so there is nothing to build; `profile build` fits: "),
                            ("best-single", "router 'best-single' stores no fit"),
                            ("mot", "router 'mot' is trained, not fitted: run `orchestrator train mot`")):
        r = runner.invoke(app, ["profile", "build", "--router", router, "--recorded", str(RECORDED), "--config", cfg])
        assert r.exit_code == EXIT_USAGE, r.output
        assert message in r.stderr and r.stderr.count("\n") == 1
    assert "symbolic-moe, coe" in runner.invoke(app, ["profile", "build", "--router", "all-vote", "--config", cfg]).stderr


def test_revoking_a_key_twice_is_an_error(tmp_path: Path) -> None:
    cfg = str(recorded_config(tmp_path))
    created = runner.invoke(app, ["keys", "create", "alice", "--config", cfg])
    assert created.exit_code == 0
    key_id = created.stderr.split()[1]
    first = runner.invoke(app, ["keys", "revoke", key_id, "--config", cfg])
    assert first.exit_code == 0 and f"revoked {key_id}" in first.stdout
    again = runner.invoke(app, ["keys", "revoke", key_id, "--config", cfg])
    assert again.exit_code == EXIT_USAGE and f"key {key_id!r} was already revoked" in again.stderr
    assert "revoked" not in again.stdout
    missing = runner.invoke(app, ["keys", "revoke", "key_nope", "--config", cfg])
    assert missing.exit_code == EXIT_USAGE and "no key 'key_nope'" in missing.stderr


def test_tables_keep_names_whole_at_80_columns(tmp_path: Path) -> None:
    # Long recorded model names and an error kind in the status column, in a 80-column terminal.
    r = runner.invoke(app, ["ask", "What is 2+2?", "--router", "all-vote", "--config", str(recorded_config(tmp_path))],
                      env={"COLUMNS": "80"})
    assert r.exit_code == EXIT_NO_ANSWER
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in r.stdout  # nothing cut short
    for name in POOL3:  # a row per expert with its whole name and status, then its whole error message
        assert any(ln.startswith(name + " ") and ln.rstrip().endswith("unknown_question") for ln in lines), r.stdout
        assert f"unknown_question {name}: recorded expert '{name}' can only replay" in " ".join(r.stdout.split())


@pytest.mark.slow
def test_ask_all_vote_on_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first command: in-process tiny models, SQLite in the working directory."""
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["ask", "What is the capital of France?", "--router", "all-vote", "--max-tokens", "24", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [c["expert"] for c in out["calls"]] == ["smollm2-135m", "gemma-3-270m"]
    assert all(c["error_kind"] is None and c["completion_tokens"] > 0 for c in out["calls"])
    assert "Paris" in out["calls"][0]["output"]
    assert (tmp_path / "orchestrator.db").exists()
    t = runner.invoke(app, ["trace", out["trace_id"]])
    trace = json.loads(t.stdout)
    assert [s["kind"] for s in trace["steps"]] == ["route", "generate", "generate", "aggregate"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("router", "build_opts"),
    [("coe", ["--fit-limit", "24"]), ("symbolic-moe", ["--fit-limit", "4", "--router-opt", "tagger=llm", "--router-opt", "aggregator_fit_limit=2"])],
)
def test_fitted_routers_live_on_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, router: str, build_opts: list[str]) -> None:
    """Fit on the tiny in-process experts (SmolLM2 is the keyword LLM), then ask."""
    monkeypatch.chdir(tmp_path)
    built = runner.invoke(app, ["profile", "build", "--router", router, "--max-tokens", "8", *build_opts])
    assert built.exit_code == 0, built.output
    r = runner.invoke(app, ["ask", "Which enzyme unwinds the DNA double helix?", "--router", router, "--max-tokens", "16", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["router"] == router and out["calls"] and all(c["error_kind"] is None for c in out["calls"])
    trace = json.loads(runner.invoke(app, ["trace", out["trace_id"]]).stdout)
    assert trace["plan"]["router"] == router and trace["steps"][0]["kind"] == "route"
    if router == "symbolic-moe":
        assert trace["plan"]["detail"]["tagger"] == "llm:smollm2-135m"
        assert len([c for c in trace["calls"] if c["role"] == "expert"]) == 3
