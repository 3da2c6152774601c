"""`orchestrator train router-r1` and `ask --router router-r1`: user mistakes are one-line errors."""

from pathlib import Path

from typer.testing import CliRunner

from conftest import POOL3, RECORDED
from orchestrator.cli import app
from orchestrator.cli._common import EXIT_UNDECIDED  # a router that cannot route (unfitted, no checkpoint) exits 4

runner = CliRunner()


def test_train_with_a_bad_policy_path_is_a_short_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "router-r1", "--out", str(tmp_path / "run"), "--policy-path", str(tmp_path)])
    assert r.exit_code == 2 and "not a model directory" in r.output and "Traceback" not in r.output


def test_train_with_an_unknown_callee_names_the_available_ones(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "router-r1", "--out", str(tmp_path / "run"), "--recorded", str(RECORDED), "--pool", "gpt-9"])
    assert r.exit_code == 2 and "gpt-9" in r.output and POOL3[0] in r.output


def test_ask_router_r1_with_a_non_policy_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'c.db'}\nexperts:\n"
                   f"  - {{name: yi, backend: recorded, path: {RECORDED}, model: Yi-34B}}\n")
    r = runner.invoke(app, ["ask", "hi", "--router", "router-r1", "--config", str(cfg)])
    assert r.exit_code == EXIT_UNDECIDED and "policy expert 'smollm2-135m' is not registered" in r.output
