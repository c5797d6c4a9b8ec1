"""Open-interest caps coherent with the insurance fund (keeper.params.backstop,
docs/threat-model.md): the rule by hand, every shipped config satisfies it, and deployment
warns (one line, does not fail) when a config breaks it."""

from __future__ import annotations

import dataclasses
import logging
from fractions import Fraction
from pathlib import Path

import pytest
import yaml

from keeper.chain.deploy import deploy_protocol, warn_backstop
from keeper.config import DEFAULT_CONFIG, load_config
from keeper.params.backstop import Exposure, check_config, problems
from tests.keeper.test_config_bounds import RecordingBackend

WAD = 10**18
CONFIGS = Path(DEFAULT_CONFIG).parent


def test_rule_by_hand():
    # 2,000 ETH x $2,000 x (0.30 - 0.05) = $1,000,000: exactly the fund, so it holds (<=)
    eth = Exposure("ETH-PERP", "ETH", Fraction(2000), Fraction(2000), Fraction(3, 10), Fraction(5, 100))
    assert eth.gap_loss_usd == 1_000_000
    assert eth.max_open_interest_allowed(1_000_000) == 2000
    assert problems([eth], 1_000_000) == []
    # one more ETH of cap: 1 x $2,000 x 0.25 = $500 over; k = 2 doubles the budget
    over = dataclasses.replace(eth, max_open_interest=Fraction(2001))
    (line,) = problems([over], 1_000_000)
    assert line == (
        "market ETH-PERP: cap 2,001 ETH x $2,000 x (0.3 gap - 0.05 mm) = $1,000,500 of loss beyond margin, "
        "above 1 x the $1,000,000 insurance fund (cap at most 2,000 ETH)"
    )
    assert problems([over], 1_000_000, coverage=2) == []
    # a gap within the maintenance margin costs the fund nothing, whatever the cap
    assert Exposure("X", "X", Fraction(10**9), Fraction(1), Fraction(3, 100), Fraction(5, 100)).gap_loss_usd == 0
    # no cap: unbounded
    (line,) = problems([dataclasses.replace(eth, max_open_interest=0)], 1_000_000)
    assert "no open-interest cap" in line and "unbounded" in line


def test_the_old_local_caps_break_it_by_the_safety_review_figure():
    """Finding 6: 5,000,000 ETH at $2,000 is $10B of open interest; a 30% gap less 5% MM is $2.5B
    of loss beyond margin against the $1M fund."""
    old = Exposure("ETH-PERP", "ETH", Fraction(5_000_000), Fraction(2000), Fraction(3, 10), Fraction(5, 100))
    assert old.gap_loss_usd == 2_500_000_000
    assert problems([old], 1_000_000)


@pytest.mark.parametrize(
    "name", ["local.yaml", "options.yaml", "replay-large.yaml", "replay-xl.yaml", "testnet.example.yaml"]
)
def test_every_shipped_config_states_its_inputs_and_satisfies_it(name):
    config = load_config(CONFIGS / name)
    assert config.insurance_fund_usd > 0 and all(u.max_gap for u in config.underlyings)
    assert check_config(config) == []


def test_every_protocol_config_under_config_is_covered():
    listed = {"local.yaml", "options.yaml", "replay-large.yaml", "replay-xl.yaml", "testnet.example.yaml"}
    protocol = {
        p.name
        for p in CONFIGS.glob("*.yaml")
        if isinstance(raw := yaml.safe_load(p.read_text()), dict) and ("settlement" in raw or "extends" in raw)
    }
    assert protocol == listed


def test_missing_inputs_are_named(tmp_path):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw.pop("backstop")
    raw["underlyings"][1].pop("max_gap")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    (line,) = check_config(load_config(path))
    assert "does not state" in line and "underlyings BTC: max_gap" in line and "backstop: insurance_fund_usd" in line


def wide(config):
    markets = tuple(
        dataclasses.replace(m, max_open_interest=5_000_000 * WAD, max_position=500_000 * WAD)
        if m.name == "ETH-PERP"
        else m
        for m in config.markets
    )
    return dataclasses.replace(config, markets=markets)


def test_deploy_warns_in_one_line_before_the_first_transaction_and_goes_on(caplog):
    config = wide(load_config())
    line = warn_backstop(config)
    assert line is not None and "\n" not in line
    assert line.startswith("backstop: market ETH-PERP: cap 5,000,000 ETH") and "$2,500,000,000" in line
    assert warn_backstop(load_config()) is None
    backend = RecordingBackend()
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger="keeper.deploy"),
        pytest.raises(AssertionError, match="nothing may be deployed"),
    ):
        deploy_protocol(backend, config, "0x" + "11" * 20, 31337)  # warned, then went on to deploy
    assert [r.getMessage() for r in caplog.records if r.name == "keeper.deploy"] == [line]
    assert len(backend.sent) == 1  # the first deployment was attempted: a warning, not a refusal


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw["underlyings"][0].update(max_gap="abc"), "underlyings[0] ETH: max_gap: not a number: 'abc'"),
        (
            lambda raw: raw["underlyings"][0].update(max_gap=1.5),
            "underlyings[0] ETH: max_gap: must be a number in [0, 1], got 1.5",
        ),
        (
            lambda raw: raw["underlyings"][1].update(reference_price=-3),
            "underlyings[1] BTC: reference_price: must be an integer",
        ),
        (
            lambda raw: raw["backstop"].update(fund=1),
            "backstop: unknown key 'fund' (expected coverage, insurance_fund_usd)",
        ),
        (
            lambda raw: raw["backstop"].update(insurance_fund_usd="lots"),
            "backstop: insurance_fund_usd: must be an integer",
        ),
        (lambda raw: raw["backstop"].update(coverage=-1), "backstop: coverage: must be a number in [0, 10], got -1"),
    ],
)
def test_bad_backstop_inputs_are_one_line(tmp_path, mutate, message):
    from keeper.config import ConfigError

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    mutate(raw)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "\n" not in str(e.value) and message in str(e.value), str(e.value)
