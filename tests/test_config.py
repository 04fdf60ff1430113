"""Config loading: unknown keys, ranges, overrides, round trips, and the shipped YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicdistill.config import (
    Config,
    ConfigError,
    ModelConfig,
    config_hash,
    config_to_dict,
    describe_fields,
    load_config,
    save_config,
    section_from_dict,
)

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid() -> None:
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.pretrain.cond_dropout == pytest.approx(0.2)


def test_unknown_key_names_key_and_closest(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("pretrain:\n  stepz: 10\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    msg = str(exc.value)
    assert "pretrain.stepz" in msg and "pretrain.steps" in msg and str(p) in msg


def test_unknown_section_suggests() -> None:
    with pytest.raises(ConfigError, match="did you mean 'pretrain.steps'"):
        load_config(None, ["train.steps=200"])


def test_range_checked_before_work() -> None:
    with pytest.raises(ConfigError, match=r"pretrain.cond_dropout=1.5 is out of range; it must be <= 1.0"):
        load_config(None, ["pretrain.cond_dropout=1.5"])
    with pytest.raises(ConfigError, match="model.positions"):
        load_config(None, ["model.positions=alibi"])


def test_type_errors_name_field() -> None:
    with pytest.raises(ConfigError, match="pretrain.steps: expected an integer"):
        load_config(None, ["pretrain.steps=ten"])
    with pytest.raises(ConfigError, match="pretrain.bf16: expected true or false"):
        load_config(None, ["pretrain.bf16=3"])


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="must divide"):
        load_config(None, ["model.dim=100", "model.heads=3"])
    with pytest.raises(ConfigError, match="one delay per codebook"):
        load_config(None, ["model.delays=[0,1]"])


def test_override_syntax_error() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["pretrain.steps"])


def test_overrides_apply_and_parse_yaml_values() -> None:
    cfg = load_config(None, ["pretrain.steps=200", "model.delays=[0,0,0,0]", "pretrain.bf16=false"])
    assert cfg.pretrain.steps == 200
    assert cfg.model.delays == [0, 0, 0, 0]
    assert cfg.pretrain.bf16 is False


def test_save_load_round_trip_and_hash(tmp_path: Path) -> None:
    cfg = load_config(None, ["name=x", "pretrain.steps=7"])
    path = save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert config_hash(again) == config_hash(cfg)
    assert config_hash(load_config(None, ["pretrain.steps=8"])) != config_hash(cfg)
    model = section_from_dict(ModelConfig, config_to_dict(cfg.model))
    assert model == cfg.model


def test_every_field_documented() -> None:
    rows = describe_fields()
    assert rows, "no fields"
    missing = [key for key, _, doc in rows if not doc.strip()]
    assert missing == []


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    load_config(path)
