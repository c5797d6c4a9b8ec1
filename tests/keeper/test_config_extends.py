"""`extends:` in protocol configs: a variant names only what it changes."""

from __future__ import annotations

import dataclasses

import pytest

from keeper.config import DEFAULT_CONFIG, ConfigError, load_config


def test_options_config_is_local_plus_options():
    local = load_config(DEFAULT_CONFIG)
    with_options = load_config(DEFAULT_CONFIG.parent / "options.yaml")
    assert with_options.options is not None
    assert dataclasses.replace(with_options, options=None) == local


def test_a_section_of_the_variant_replaces_the_base_section(tmp_path):
    (tmp_path / "base.yaml").write_text(DEFAULT_CONFIG.read_text())
    (tmp_path / "variant.yaml").write_text(
        "extends: base.yaml\nliquidation: {penalty: 0.01, liquidator_share: 0.5, target: 1.25}\n"
    )
    cfg = load_config(tmp_path / "variant.yaml")
    assert cfg.liquidation_penalty == 10**16
    assert cfg.max_liquidation_penalty == 0  # the whole section is replaced, not merged
    assert cfg.markets == load_config(tmp_path / "base.yaml").markets


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.yaml": "extends: a.yaml\n"}, "makes a cycle"),
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "makes a cycle"),
        ({"a.yaml": "extends: missing.yaml\n"}, "missing.yaml: file not found"),
        ({"a.yaml": "extends: 3\n"}, "extends: must be the path of another config file, got 3"),
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "- 1\n"}, "a config file must be a mapping"),
    ],
)
def test_bad_extends_is_one_clear_line(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "a.yaml")
