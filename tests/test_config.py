from pathlib import Path

import pytest

from experts import ConfigError, ExpertSpec, load_config, parse_config
from orchestrator.settings import DEFAULT_CONFIG, Settings, resolve_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "experts.yaml"
    p.write_text(text)
    return p


def test_valid_config_loads_with_defaults(tmp_path: Path) -> None:
    p = write(tmp_path, """
store: sqlite+aiosqlite:///x.db
experts:
  - name: qwen
    backend: openai
    base_url: http://127.0.0.1:8000/v1/
    model: Qwen/Qwen2.5-7B-Instruct
    price_per_mtok: {input: 0.3, output: 0.6}
  - name: rec
    backend: recorded
    path: data/recorded
    model: Yi-34B
""")
    cfg = load_config(p)
    assert cfg.experts[0].base_url == "http://127.0.0.1:8000/v1"  # trailing slash normalised
    assert cfg.experts[0].price_per_mtok.cost(1_000_000, 1_000_000) == pytest.approx(0.9)
    # relative paths resolve against the config file's folder
    assert cfg.experts[1].path == str((tmp_path / "data/recorded").resolve())


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("experts:\n  - name: a\n    backend: openai\n    model: m\n", "experts[0]: base_url is required"),
        ("experts:\n  - name: a\n    backend: local\n    model: m\n    max_batch_size: 0\n", "experts[0].max_batch_size"),
        ("experts:\n  - name: a\n    backend: gpu\n    model: m\n", "experts[0].backend"),
        ("experts:\n  - name: a\n    backend: local\n    model: m\n    colour: red\n", "experts[0].colour"),
        ("experts:\n  - name: a\n    backend: recorded\n    model: m\n", "path (a recorded-outputs directory) is required"),
        ("experts:\n  - {name: a, backend: local, model: m}\n  - {name: A, backend: local, model: n}\n", "used twice"),
        ("experts: [1, 2", "not valid YAML at line"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_invalid_config_names_file_and_field(tmp_path: Path, body: str, expected: str) -> None:
    p = write(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(p) in str(e.value)
    assert expected in str(e.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_embedded_default_and_store_override(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = resolve_config(None, Settings())
    assert [e.name for e in cfg.experts] == [e["name"] for e in DEFAULT_CONFIG["experts"]]
    assert cfg.store.startswith("sqlite+aiosqlite")
    monkeypatch.setenv("ORCHESTRATOR_STORE", "sqlite+aiosqlite:///other.db")
    assert resolve_config(None).store == "sqlite+aiosqlite:///other.db"


def test_spec_rejects_bad_url() -> None:
    with pytest.raises(ConfigError, match=r"experts\[0\].base_url: Value error|base_url"):
        parse_config({"experts": [{"name": "a", "backend": "openai", "model": "m", "base_url": "ftp://x"}]}, "t.yaml")
    assert ExpertSpec(name="a", backend="local", model="m").all_names() == ("a",)


def test_an_empty_shared_state_dir_means_one_worker_not_the_working_directory(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """compose.yaml sets every variable, empty when unused: an empty directory must not become `./`."""
    from orchestrator.settings import GatewaySettings

    monkeypatch.setenv("ORCHESTRATOR_SHARED_STATE_DIR", "")
    assert GatewaySettings().shared_state_dir is None
    monkeypatch.setenv("ORCHESTRATOR_SHARED_STATE_DIR", "/run/orchestrator")
    assert str(GatewaySettings().shared_state_dir) == "/run/orchestrator"
