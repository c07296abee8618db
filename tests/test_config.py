from pathlib import Path

import pytest

from reidprune.config import ConfigError, ExperimentConfig, load_config, save_config


def test_defaults_without_file() -> None:
    cfg = load_config()
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.data.format == "synth"


def test_yaml_and_dotted_overrides(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("name: market\ntrain:\n  lr: 0.01\n  epochs: 3\ndata:\n  format: market1501\n")
    cfg = load_config(path, ["train.lr=1e-4", "prune.method=head-entropy", "prune.rate=0.5"])
    assert cfg.name == "market"
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.epochs == 3
    assert cfg.prune.method == "head-entropy"
    assert cfg.prune.rate == 0.5


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.learning_rate"):
        load_config(path)


def test_wrong_type_is_named() -> None:
    with pytest.raises(ConfigError, match=r"train.epochs"):
        load_config(None, ["train.epochs=many"])


def test_override_without_equals() -> None:
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["train.lr"])


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/exp.yaml")


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.lr=0.5", "seed=7"])
    written = save_config(cfg, tmp_path)
    again = load_config(written)
    assert again == cfg
