"""With several mistakes in one listing config, the first is reported: sections in file order
(settlement before price_ids, assets, underlyings, markets, ...), the values of a section before
a name that refers to another section."""

from __future__ import annotations

import copy

import pytest
import yaml

from keeper.config import DEFAULT_CONFIG, ConfigError, load_config

BASE = yaml.safe_load(DEFAULT_CONFIG.read_text())


def first_problem(tmp_path, *changes) -> str:
    raw = copy.deepcopy(BASE)
    for section, index, key, value in changes:
        (raw[section] if index is None else raw[section][index])[key] = value
    path = tmp_path / "protocol.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    text = str(e.value)
    assert "\n" not in text
    return text.removeprefix(f"{path}: ")


def test_sections_in_file_order(tmp_path):
    assert first_problem(tmp_path, ("assets", 0, "haircut", "abc"), ("settlement", None, "decimals", -1)) == (
        "settlement: decimals: must be an integer in [0, 18], got -1"
    )
    assert first_problem(tmp_path, ("trading", None, "max_funding_rate", -1), ("markets", 1, "expiry_days", 0)) == (
        "market ETH-FUT: expiry_days: must be a number of days in (0, 36500], got 0"
    )


def test_values_before_references(tmp_path):
    assert first_problem(tmp_path, ("assets", 0, "price_id", "DOGE"), ("assets", 0, "haircut", 2)) == (
        "assets[0] WETH: haircut: must be a number in [0, 1], got 2"
    )
    assert first_problem(tmp_path, ("assets", 0, "price_id", "DOGE")) == (
        "assets: unknown price id 'DOGE' in entry 0 (WETH)"
    )
