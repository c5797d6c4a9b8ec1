"""`keeper params` change files: strict YAML validation (one line per mistake), and the plan of
setter calls (unspecified fields kept, on-chain bounds checked in file order, units)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_abi import encode
from eth_utils import keccak

from keeper.chain.deployment import Deployment
from keeper.params.changes import ChangeError, load_changes, parse_changes
from keeper.params.current import CurrentParams
from keeper.params.plan import calldata, plan_calls

ROOT = Path(__file__).resolve().parents[2]
E16 = 10**16
WAD = 10**18


def problems(raw) -> list[str]:
    with pytest.raises(ChangeError) as e:
        parse_changes(raw)
    return e.value.problems


# ------------------------------------------------------------------ YAML validation


def test_example_file_parses_to_exact_wad_values():
    changes = load_changes(ROOT / "config" / "changes.example.yaml")
    got = [(c.section, c.name, c.values) for c in changes]
    assert got == [
        ("underlying", "ETH", {"im_rate": 12 * E16, "mm_rate": 6 * E16}),
        ("asset", "WETH", {"haircut": 80 * E16}),
        ("market", "ETH-PERP", {"max_open_interest": 1_000_000 * WAD}),
        ("liquidation", "", {"penalty": 25 * 10**15}),
        ("price_id", "ETH", {"heartbeats": (7200,)}),
    ]


@pytest.mark.parametrize(
    "entry,expected",
    [
        (
            {"underlying": "ETH", "im": 0.1},
            "changes[0] underlying ETH: unknown field 'im'; underlying takes im_rate, mm_rate",
        ),
        ({"underlying": "ETH"}, "changes[0] underlying ETH: nothing to change"),
        ({"underlying": "ETH", "asset": "WETH", "haircut": 0.8}, "changes[0]: needs exactly one of underlying"),
        (
            {"im_rate": 0.1},
            "changes[0]: needs exactly one of underlying, asset, market, price_id, series, liquidation, trading, depeg, attestation, options, vol_feed, portfolio_margin, backstop_vault (found none)",
        ),
        ({"underlying": 3, "im_rate": 0.1}, "changes[0]: underlying: must be a name from the manifest, got 3"),
        ({"underlying": "ETH", "im_rate": "ten"}, "changes[0] underlying ETH: im_rate: not a number: 'ten'"),
        ({"underlying": "ETH", "im_rate": True}, "changes[0] underlying ETH: im_rate: must be a number, got true"),
        ({"underlying": "ETH", "im_rate": None}, "changes[0] underlying ETH: im_rate: must be a number, got null"),
        ({"underlying": "ETH", "im_rate": -0.1}, "changes[0] underlying ETH: im_rate: must not be negative, got -0.1"),
        (
            {"underlying": "ETH", "im_rate": "0.1000000000000000001"},
            "changes[0] underlying ETH: im_rate: more than 18 decimals",
        ),
        ({"underlying": "ETH", "im_rate": float("nan")}, "changes[0] underlying ETH: im_rate: not a finite number"),
        (
            {"price_id": "ETH", "heartbeats": 1800},
            "changes[0] price_id ETH: heartbeats: must be a list of 1 to 3 heartbeats",
        ),
        (
            {"price_id": "ETH", "heartbeats": [60, 60, 60, 60]},
            "changes[0] price_id ETH: heartbeats: must be a list of 1 to 3",
        ),
        (
            {"price_id": "ETH", "heartbeats": [1800.5]},
            "changes[0] price_id ETH: heartbeats: each heartbeat must be a whole number of seconds, got 1800.5",
        ),
        (
            {"liquidation": {"penalty_ramp_seconds": 60.0}},
            "changes[0] liquidation: penalty_ramp_seconds: must be a whole number of seconds",
        ),
        ({"liquidation": {"penalty": 0.02}, "trading": {}}, "changes[0]: needs exactly one of"),
        (
            {"liquidation": {"penalty": 0.02}, "note": "x"},
            "changes[0]: liquidation takes its fields inside it (liquidation: {...}), found note beside it",
        ),
        ({"liquidation": 0.02}, "changes[0]: liquidation: must be a mapping of fields, got 0.02"),
        ({"trading": {"max_funding": 0.01}}, "changes[0] trading: unknown field 'max_funding'"),
        ({"liquidation": {}}, "changes[0] liquidation: nothing to change"),
        ("ETH", "changes[0]: must be a mapping such as {underlying: ETH, im_rate: 0.12}, got 'ETH'"),
    ],
)
def test_each_mistake_is_one_clear_line(entry, expected):
    (line,) = problems({"changes": [entry]})
    assert line.startswith(expected), line
    assert "\n" not in line


def test_every_mistake_is_reported_at_once():
    found = problems({"changes": [
        {"underlying": "ETH", "im_rate": "x"},
        {"asset": "WETH", "haircut": 0.8},
        {"asset": "WETH", "deposit_cap": 5},
        {"market": "ETH-PERP", "max_oi": 1},
    ], "comment": 1})  # fmt: skip
    assert found == [
        "top level: unknown key 'comment'; only 'changes' is allowed",
        "changes[0] underlying ETH: im_rate: not a number: 'x'",
        "changes[2] asset WETH: duplicate of changes[1]; put both in one entry",
        "changes[3] market ETH-PERP: unknown field 'max_oi'; market takes max_open_interest, max_position, "
        "backstop_max_exposure",
    ]


@pytest.mark.parametrize("raw,expected", [
    (None, "must be a mapping with a 'changes' list"),
    ({"change": []}, "must be a mapping with a 'changes' list"),
    ({"changes": []}, "changes: must be a non-empty list of entries, got []"),
    ({"changes": {"underlying": "ETH"}}, "changes: must be a non-empty list of entries"),
])  # fmt: skip
def test_file_shape(raw, expected):
    assert problems(raw)[-1].startswith(expected)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("changes:\n  - {underlying: ETH, im_rate: 0.1\n")
    with pytest.raises(ChangeError, match=r"bad.yaml: not valid YAML at line 3"):
        load_changes(bad)
    with pytest.raises(ChangeError, match=r"missing.yaml: file not found"):
        load_changes(tmp_path / "missing.yaml")
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ChangeError, match="not a UTF-8 text file"):
        load_changes(bad)
    bad.write_text("changes:\n  - {underlying: ETH, im: 1}\n  - {asset: WETH}\n")
    with pytest.raises(ChangeError) as e:
        load_changes(bad)
    text = str(e.value)
    assert text.splitlines()[0] == f"{bad}: 2 problems:"
    assert len(text.splitlines()) == 3


# ------------------------------------------------------------------ plan against current values


def deployment() -> Deployment:
    a = "0x" + "11" * 20
    return Deployment(
        chain_id=1, oracle="0x" + "01" * 20, vault="0x" + "02" * 20, engine="0x" + "03" * 20,
        settlement_token=a, settlement_decimals=6, asset_ids={"WETH": 0, "WBTC": 1},
        price_ids={"ETH": 0}, underlyings={"ETH": 0, "BTC": 1}, markets={"ETH-PERP": 0},
    )  # fmt: skip


def current() -> CurrentParams:
    rates = {"im_rate": 10 * E16, "mm_rate": 5 * E16, "spread_im_rate": 2 * E16, "spread_mm_rate": E16}
    return CurrentParams(
        block=7,
        values={
            "underlying": {"ETH": dict(rates), "BTC": dict(rates)},
            "asset": {"WETH": {"haircut": 85 * E16, "deposit_cap": 10**25}, "WBTC": {"haircut": 85 * E16, "deposit_cap": 10**14}},
            "market": {"ETH-PERP": {"max_open_interest": 5_000_000 * WAD, "max_position": 500_000 * WAD}},
            "price_id": {"ETH": {"aggregators": ("0x" + "aa" * 20,), "heartbeats": (3600,), "min_price": 0, "max_price": 0, "max_jump": 0}},
            "liquidation": {"": {"penalty": 2 * E16, "liquidator_share": 50 * E16, "target": 125 * E16,
                                 "max_penalty": 25 * 10**15, "penalty_ramp_seconds": 3600}},
            "trading": {"": {"max_price_deviation": 5 * E16, "max_funding_rate": 5 * 10**15, "funding_smoothing": 10 * E16,
                             "min_position_notional": 10 * WAD}},
            "depeg": {"": {"threshold": 98 * E16, "factor": WAD}},
        },
        ids={"underlying": {"ETH": 0, "BTC": 1}, "asset": {"WETH": 0, "WBTC": 1}, "market": {"ETH-PERP": 0}, "price_id": {"ETH": 0}},
        asset_decimals={"WETH": 18, "WBTC": 8},
    )  # fmt: skip


def plan(*entries):
    return plan_calls(parse_changes({"changes": list(entries)}), current(), deployment())


def plan_problems(*entries) -> list[str]:
    with pytest.raises(ChangeError) as e:
        plan(*entries)
    return e.value.problems


def test_unspecified_fields_keep_their_on_chain_value():
    (call,) = plan({"underlying": "BTC", "mm_rate": 0.06})
    assert (call.contract, call.function, call.address) == ("engine", "set_underlying_params", deployment().engine)
    assert call.args == (1, 10 * E16, 6 * E16, 2 * E16, E16)
    assert [(r.field, r.current, r.new, r.changed) for r in call.rows] == [
        ("im_rate", "0.1", "0.1", False), ("mm_rate", "0.05", "0.06", True),
        ("spread_im_rate", "0.02", "0.02", False), ("spread_mm_rate", "0.01", "0.01", False),
    ]  # fmt: skip


def test_each_setter_of_a_section_gets_its_own_call():
    calls = plan(
        {"price_id": "ETH", "heartbeats": [1800], "max_jump": 0.3},
        {"liquidation": {"target": 1.5, "penalty_ramp_seconds": 600}},
        {"trading": {"max_funding_rate": 0.001}},
    )
    assert [(c.function, c.args) for c in calls] == [
        ("set_feeds", (0, ("0x" + "aa" * 20,), (1800,))),
        ("set_circuit_breaker", (0, 0, 0, 30 * E16)),
        ("set_liquidation_params", (2 * E16, 50 * E16, 150 * E16)),
        ("set_penalty_ramp", (25 * 10**15, 600)),
        ("set_trade_params", (5 * E16, 10**15, 10 * E16, 10 * WAD)),
    ]


def test_depeg_rule_setter():
    """`CollateralVault.set_depeg_params(threshold, factor)` (risk admin), fields left out kept."""
    (call,) = plan({"depeg": {"factor": 2}})
    assert (call.contract, call.function, call.address) == ("vault", "set_depeg_params", deployment().vault)
    assert call.args == (98 * E16, 2 * WAD)
    assert [(r.field, r.current, r.new, r.changed) for r in call.rows] == [
        ("threshold", "0.98", "0.98", False), ("factor", "1", "2", True),
    ]  # fmt: skip
    (call,) = plan({"depeg": {"threshold": 0.99, "factor": 2}})  # Derive mainnet values
    assert call.args == (99 * E16, 2 * WAD)


def test_units_of_caps():
    (asset, market) = plan({"asset": "WBTC", "deposit_cap": 1.5}, {"market": "ETH-PERP", "max_position": 1000})
    assert asset.args == (1, 85 * E16, 150_000_000)  # 1.5 WBTC = 1.5e8 units (8 decimals)
    assert asset.rows[1].new == "1.5"
    assert market.args == (0, 5_000_000 * WAD, 1000 * WAD)
    assert plan_problems({"asset": "WBTC", "deposit_cap": "0.000000001"}) == [
        "changes[0] asset WBTC: deposit_cap has more decimals than WBTC's 8"
    ]


def test_entries_are_checked_in_file_order():
    # a 3% penalty needs every mm_rate in force >= 6%: refused before or after the raises, which
    # only phase in (lib/ramp.vy) ...
    problem = (
        "changes[{i}] liquidation: penalty needs every mm_rate in force >= 0.06, underlying {u} has 0.05 "
        "(engine: mm_rate below 2x penalty); raise its mm_rate first (on a live deployment the raise phases in "
        "over 7 days before a penalty can rely on it)"
    )
    found = plan_problems(
        {"liquidation": {"penalty": 0.03}},
        {"underlying": "ETH", "mm_rate": 0.06},
        {"underlying": "BTC", "mm_rate": 0.06},
    )
    assert found == [problem.format(i=0, u="ETH"), problem.format(i=0, u="BTC")]
    found = plan_problems(
        {"underlying": "ETH", "mm_rate": 0.06},
        {"underlying": "BTC", "mm_rate": 0.06},
        {"liquidation": {"penalty": 0.03}},
    )
    assert found == [problem.format(i=2, u="ETH"), problem.format(i=2, u="BTC")]
    # ... and accepted once they are in force
    state = current()
    state.values["underlying"]["ETH"]["mm_rate"] = state.values["underlying"]["BTC"]["mm_rate"] = 6 * E16
    calls = plan_calls(parse_changes({"changes": [{"liquidation": {"penalty": 0.03}}]}), state, deployment())
    assert calls[-1].args == (3 * E16, 50 * E16, 125 * E16)


@pytest.mark.parametrize("entry,expected", [
    ({"underlying": "ETH", "im_rate": 0.005}, "im_rate 0.005 is outside [0.01, 1] (engine: im_rate out of bounds)"),
    ({"underlying": "ETH", "mm_rate": 0.2}, "mm_rate 0.2 is outside [0.005, im_rate 0.1] (engine: mm_rate out of bounds)"),
    ({"underlying": "ETH", "mm_rate": 0.04}, "mm_rate 0.04 is below 2 x the liquidation penalty 0.025 (engine: mm_rate below 2x penalty)"),
    ({"underlying": "ETH", "spread_mm_rate": 0.03}, "spread_mm_rate 0.03 is above spread_im_rate 0.02 or mm_rate 0.05"),
    ({"asset": "WETH", "haircut": 1.01}, "haircut 1.01 is outside [0, 1] (vault: haircut out of bounds)"),
    ({"market": "ETH-PERP", "max_open_interest": 10}, "max_position 500000 is above max_open_interest 10 (engine: position cap above OI cap)"),
    ({"price_id": "ETH", "heartbeats": [1800, 1800]}, "heartbeats has 2 values for 1 feeds (oracle: length mismatch)"),
    ({"price_id": "ETH", "heartbeats": [30]}, "heartbeats[0] 30 is outside [60, 172800] seconds (oracle: heartbeat out of bounds)"),
    ({"price_id": "ETH", "max_price": 100, "min_price": 200}, "max_price 100 is not above min_price 200 (oracle: empty price band)"),
    ({"liquidation": {"target": 2.5}}, "target 2.5 is outside [1.05, 2] (engine: target out of bounds)"),
    ({"liquidation": {"max_penalty": 0.01}}, "max_penalty 0.01 is outside [penalty 0.02, 0.1] (engine: max penalty out of bounds)"),
    ({"trading": {"funding_smoothing": 0}}, "funding_smoothing 0 is outside (0, 1] (engine: funding_smoothing out of bounds)"),
    ({"depeg": {"threshold": 0.85}}, "threshold 0.85 is outside [0.9, 1] (vault: depeg threshold out of bounds)"),
    ({"depeg": {"factor": 3.5}}, "factor 3.5 is outside [0, 3] (vault: depeg factor out of bounds)"),
    ({"underlying": "SOL", "im_rate": 0.1}, "unknown underlying; the manifest names ETH, BTC"),
    ({"underlying": "ETH", "im_rate": 0.1}, "changes nothing (every value equals the on-chain one)"),
])  # fmt: skip
def test_on_chain_bounds_are_mirrored(entry, expected):
    lines = plan_problems(entry)
    assert any(line.startswith("changes[0] ") and expected in line for line in lines), lines


def test_calldata_matches_an_independent_encoding():
    data = calldata("engine", "set_underlying_params", (1, 10 * E16, 6 * E16, 2 * E16, E16))
    selector = keccak(text="set_underlying_params(uint256,uint256,uint256,uint256,uint256)")[:4]
    assert data == selector + (1).to_bytes(32, "big") + b"".join(
        v.to_bytes(32, "big") for v in (10 * E16, 6 * E16, 2 * E16, E16)
    )
    feeds = calldata("oracle", "set_feeds", (0, ("0x" + "aa" * 20,), (1800,)))
    assert feeds == keccak(text="set_feeds(uint256,address[],uint256[])")[:4] + encode(
        ["uint256", "address[]", "uint256[]"], [0, ["0x" + "aa" * 20], [1800]]
    )


def test_keeper_cli_registers_the_params_group():
    from keeper.cli import cli

    assert set(cli.commands["params"].commands) == {"show", "rehearse", "queue", "execute", "cancel", "status"}


# ------------------------------------------------------------------ portfolio-margin parameters (options)

OPTION_RISK = {
    "short_im_rate": 15 * E16,
    "short_im_floor": 13 * E16,
    "short_mm_rate": 9 * E16,
    "long_im_haircut": 75 * E16,
    "long_mm_haircut": 80 * E16,
    "abs_price_band": 5 * 10**15,
    "rel_price_band": 10 * E16,
}  # config/options.yaml


def option_deployment() -> Deployment:
    return Deployment(**{**deployment().__dict__, "option_market": "0x" + "04" * 20, "vol_feed": "0x" + "05" * 20,
                         "health_attestor": "0x" + "06" * 20,
                         "option_series": {"ETH-30D-C-2200": 8, "ETH-30D-P-1800": 2}})  # fmt: skip


def option_current() -> CurrentParams:
    c = current()
    c.values["attestation"] = {"": {"margin_floor": 25 * E16, "price_band": 5 * E16, "max_validity": 900}}
    c.values["options"] = {"": dict(OPTION_RISK)}
    c.values["series"] = {
        "ETH-30D-P-1800": {"max_open_interest": 0, "max_position": 0},
        "ETH-30D-C-2200": {"max_open_interest": 0, "max_position": 0},
    }
    c.values["vol_feed"] = {
        "": {"min_atm_vol": 5 * E16, "max_atm_vol": 3 * WAD, "max_abs_skew": WAD, "heartbeat": 1200}
    }
    c.ids["series"] = {"ETH-30D-P-1800": 2, "ETH-30D-C-2200": 8}
    return c


def option_plan(*entries):
    return plan_calls(parse_changes({"changes": list(entries)}), option_current(), option_deployment())


def test_option_entries_parse_to_exact_wad_values():
    changes = parse_changes({"changes": [
        {"attestation": {"margin_floor": 0.3, "price_band": 0.02, "max_validity": 600}},
        {"options": {"short_im_rate": 0.16, "short_mm_rate": 0.1}},
        {"series": "ETH-30D-C-2200", "max_open_interest": 1000, "max_position": 100},
        {"vol_feed": {"min_atm_vol": 0.05, "max_atm_vol": 3, "max_abs_skew": 1, "heartbeat": 1200}},
    ]})  # fmt: skip
    assert [(c.section, c.name, c.values) for c in changes] == [
        ("attestation", "", {"margin_floor": 30 * E16, "price_band": 2 * E16, "max_validity": 600}),
        ("options", "", {"short_im_rate": 16 * E16, "short_mm_rate": 10 * E16}),
        ("series", "ETH-30D-C-2200", {"max_open_interest": 1000 * WAD, "max_position": 100 * WAD}),
        ("vol_feed", "", {"min_atm_vol": 5 * E16, "max_atm_vol": 3 * WAD, "max_abs_skew": WAD, "heartbeat": 1200}),
    ]


@pytest.mark.parametrize("entry,expected", [
    ({"attestation": {"floor": 0.3}}, "changes[0] attestation: unknown field 'floor'; attestation takes margin_floor, price_band, max_validity"),
    ({"attestation": {"max_validity": 600.5}}, "changes[0] attestation: max_validity: must be a whole number of seconds, got 600.5"),
    ({"options": {"short_im_rate": -0.1}}, "changes[0] options: short_im_rate: must not be negative"),
    ({"options": 0.16}, "changes[0]: options: must be a mapping of fields, got 0.16"),
    ({"series": "ETH-30D-C-2200", "max_oi": 1}, "changes[0] series ETH-30D-C-2200: unknown field 'max_oi'; series takes max_open_interest, max_position"),
    ({"vol_feed": {"heartbeat": "1h"}}, "changes[0] vol_feed: heartbeat: must be a whole number of seconds, got '1h'"),
])  # fmt: skip
def test_option_entry_mistakes_are_one_line(entry, expected):
    (line,) = problems({"changes": [entry]})
    assert line.startswith(expected), line


def test_option_entries_without_options_give_one_line():
    with pytest.raises(ChangeError) as e:
        plan(
            {"attestation": {"margin_floor": 0.3}},
            {"underlying": "ETH", "im_rate": 0.12},
            {"series": "ETH-30D-C-2200", "max_position": 1},
        )
    assert e.value.problems == [
        "changes[0] attestation, changes[2] series ETH-30D-C-2200: this deployment has no options "
        "(its manifest names no option market, vol feed or health attestor)"
    ]


def test_option_risk_params_send_the_whole_struct_with_unspecified_fields_kept():
    (call,) = option_plan({"options": {"short_im_rate": 0.16, "short_mm_rate": 0.1}})
    assert (call.contract, call.address, call.function) == ("option_market", "0x" + "04" * 20, "set_risk_params")
    assert call.args == ((16 * E16, 13 * E16, 10 * E16, 75 * E16, 80 * E16, 5 * 10**15, 10 * E16),)
    assert [(r.field, r.current, r.new) for r in call.rows if r.changed] == [
        ("short_im_rate", "0.15", "0.16"),
        ("short_mm_rate", "0.09", "0.1"),
    ]
    # calldata against an independent encoding of the struct (a static tuple: its words inline)
    data = call_data_of(call)
    selector = keccak(text="set_risk_params((uint256,uint256,uint256,uint256,uint256,uint256,uint256))")[:4]
    assert data == selector + b"".join(v.to_bytes(32, "big") for v in call.args[0])


def call_data_of(call):
    from keeper.params.plan import call_data

    return call_data(call)


def test_attestation_series_and_vol_feed_setters():
    calls = option_plan(
        {"attestation": {"margin_floor": 0.3, "price_band": 0.02, "max_validity": 600}},
        {"series": "ETH-30D-C-2200", "max_open_interest": 1000, "max_position": 100},
        {"vol_feed": {"max_atm_vol": 2.5, "heartbeat": 600}},
    )
    assert [(c.contract, c.function, c.args) for c in calls] == [
        ("health_attestor", "set_margin_floor", (30 * E16,)),
        ("health_attestor", "set_price_band", (2 * E16,)),
        ("health_attestor", "set_max_validity", (600,)),
        ("option_market", "set_series_caps", (8, 1000 * WAD, 100 * WAD)),  # series id 8 from the manifest
        ("vol_feed", "set_vol_bounds", (5 * E16, 25 * E16 * 10, WAD)),
        ("vol_feed", "set_heartbeat", (600,)),
    ]
    assert calls[5].rows[0].current == "1200 s" and calls[5].rows[0].new == "600 s"
    assert calldata("health_attestor", "set_margin_floor", (30 * E16,)) == (
        keccak(text="set_margin_floor(uint256)")[:4] + (30 * E16).to_bytes(32, "big")
    )


@pytest.mark.parametrize("entry,expected", [
    ({"attestation": {"margin_floor": 0.1}}, "margin_floor 0.1 is outside [0.2, 1] (attestor: floor out of bounds)"),
    ({"attestation": {"margin_floor": 1.01}}, "margin_floor 1.01 is outside [0.2, 1] (attestor: floor out of bounds)"),
    ({"attestation": {"price_band": 0}}, "price_band 0 is outside (0, 0.1] (attestor: band out of bounds)"),
    ({"attestation": {"price_band": 0.11}}, "price_band 0.11 is outside (0, 0.1] (attestor: band out of bounds)"),
    ({"attestation": {"max_validity": 59}}, "max_validity 59 is outside [60, 86400] seconds (attestor: validity out of bounds)"),
    ({"options": {"short_mm_rate": 0.005}}, "short_mm_rate 0.005 is below 0.01 (options: margin params out of bounds)"),
    ({"options": {"short_mm_rate": 0.14}}, "short_mm_rate 0.14 is above short_im_floor 0.13 (options: margin params out of bounds)"),
    ({"options": {"short_im_rate": 0.12}}, "short_im_floor 0.13 is above short_im_rate 0.12 (options: margin params out of bounds)"),
    ({"options": {"short_im_rate": 1.5}}, "short_im_rate 1.5 is above 1 (options: margin params out of bounds)"),
    ({"options": {"long_im_haircut": 0.85}}, "long_im_haircut 0.85 is above long_mm_haircut 0.8 (options: margin params out of bounds)"),
    ({"options": {"long_mm_haircut": 0.95, "long_im_haircut": 0.9}}, "long_mm_haircut 0.95 is above 0.9 (options: margin params out of bounds)"),
    ({"options": {"abs_price_band": 0.00001}}, "abs_price_band 0.00001 is outside [0.0001, 0.05] (options: price band out of bounds)"),
    ({"options": {"rel_price_band": 0.6}}, "rel_price_band 0.6 is outside [0.001, 0.5] (options: price band out of bounds)"),
    ({"series": "ETH-30D-C-2200", "max_open_interest": 10, "max_position": 20}, "max_position 20 is above max_open_interest 10 (options: position cap above OI cap)"),
    ({"series": "ETH-7D-C-2000", "max_position": 1}, "unknown series; the manifest names ETH-30D-P-1800, ETH-30D-C-2200"),
    ({"vol_feed": {"min_atm_vol": 0.005}}, "min_atm_vol 0.005 is below 0.01 (vol: min vol below hard bound)"),
    ({"vol_feed": {"max_atm_vol": 6}}, "max_atm_vol 6 is above 5 (vol: max vol above hard bound)"),
    ({"vol_feed": {"min_atm_vol": 3}}, "min_atm_vol 3 is not below max_atm_vol 3 (vol: empty vol range)"),
    ({"vol_feed": {"max_abs_skew": 5.5}}, "max_abs_skew 5.5 is above 5 (vol: max skew above hard bound)"),
    ({"vol_feed": {"heartbeat": 86401}}, "heartbeat 86401 is outside [60, 86400] seconds (vol: heartbeat out of bounds)"),
    ({"vol_feed": {"heartbeat": 1200}}, "changes nothing"),
])  # fmt: skip
def test_option_bounds_are_mirrored(entry, expected):
    with pytest.raises(ChangeError) as e:
        option_plan(entry)
    assert any(line.startswith("changes[0] ") and expected in line for line in e.value.problems), e.value.problems


def test_option_bounds_at_the_edges_are_accepted():
    calls = option_plan(
        {"attestation": {"margin_floor": 0.2, "price_band": 0.1, "max_validity": 86400}},
        {"options": {"short_im_rate": 1, "short_im_floor": 1, "short_mm_rate": 1, "long_im_haircut": 0.9,
                     "long_mm_haircut": 0.9, "abs_price_band": 0.05, "rel_price_band": 0.001}},
        {"vol_feed": {"min_atm_vol": 0.01, "max_atm_vol": 5, "max_abs_skew": 5, "heartbeat": 60}},
    )  # fmt: skip
    assert len(calls) == 6


def test_every_mirrored_bound_equals_the_vyper_constant():
    """bounds.SOURCES names the Vyper constant behind every Python bound; read each back."""
    import re

    from keeper.chain.artifacts import CONTRACTS
    from keeper.params import bounds

    assert {"MIN_MARGIN_FLOOR", "MAX_SHORT_IM_RATE", "HARD_MAX_ATM_VOL", "MAX_VOL_HEARTBEAT"} <= set(bounds.SOURCES)
    mirrored = {n for n in vars(bounds) if re.fullmatch(r"(MIN|MAX|HARD)_[A-Z_]+", n)}
    assert mirrored == set(bounds.SOURCES)  # no bound without its source
    for name, (source, constant) in bounds.SOURCES.items():
        text = (CONTRACTS / source).read_text()
        m = re.search(rf"^{constant}: constant\(uint256\) = ([0-9* ]+?)\s*(#.*)?$", text, re.M)
        assert m, f"{constant} not in {source}"
        assert getattr(bounds, name) == eval(m.group(1)), name  # noqa: S307 - integer literals of our own sources


def test_portfolio_margin_entry_reads_the_file_and_its_hash(tmp_path):
    from keeper.risk.scenarios import ScenarioParams, scenario_params_hash

    f = tmp_path / "pm.yaml"
    f.write_text("portfolio_margin: {im_factor: 1.5}\n")
    (c,) = parse_changes({"changes": [{"portfolio_margin": str(f)}]})
    assert (c.section, c.name, c.values["path"]) == ("portfolio_margin", "", str(f))
    assert c.values["scenario_params_hash"] == scenario_params_hash(ScenarioParams(im_factor=1.5))
    for entry, problem in (
        ({"portfolio_margin": 5}, "must be the path of a portfolio margin YAML file, got 5"),
        ({"portfolio_margin": str(f), "x": 1}, "takes only the parameters file"),
        ({"portfolio_margin": str(tmp_path / "none.yaml")}, "file not found"),
    ):
        with pytest.raises(ChangeError, match=problem) as e:
            parse_changes({"changes": [entry]})
        assert "\n" not in str(e.value) and str(e.value).startswith("changes[0] portfolio_margin: ")


# ------------------------------------------------------------------ backstop vault

BACKSTOP = {
    "caller_fee_share": 20 * E16,
    "max_margin_usage": 50 * E16,
    "auction_discount": E16,
    "auction_seconds": 3600,
    "request_delay_seconds": 86400,
}  # config/local.yaml


def backstop_deployment() -> Deployment:
    return Deployment(**{**deployment().__dict__, "backstop_vault": "0x" + "07" * 20})


def backstop_current() -> CurrentParams:
    c = current()
    c.values["backstop_vault"] = {"": dict(BACKSTOP)}
    c.values["market"]["ETH-PERP"]["backstop_max_exposure"] = 1000 * WAD
    return c


def backstop_plan(*entries):
    return plan_calls(parse_changes({"changes": list(entries)}), backstop_current(), backstop_deployment())


def test_backstop_entries_parse_in_the_config_units():
    changes = parse_changes({"changes": [
        {"backstop_vault": {"caller_fee_share": 0.25, "max_margin_usage": 0.6, "auction_discount": 0.02,
                            "auction_seconds": 1800, "request_delay_seconds": 172800}},
        {"market": "ETH-PERP", "backstop_max_exposure": 500.5},
    ]})  # fmt: skip
    assert [(c.section, c.name, c.values, c.needs_backstop_vault) for c in changes] == [
        ("backstop_vault", "", {"caller_fee_share": 25 * E16, "max_margin_usage": 60 * E16,
                                "auction_discount": 2 * E16, "auction_seconds": 1800,
                                "request_delay_seconds": 172800}, True),
        ("market", "ETH-PERP", {"backstop_max_exposure": 5005 * WAD // 10}, True),
    ]  # fmt: skip
    (market,) = parse_changes({"changes": [{"market": "ETH-PERP", "max_position": 1}]})
    assert not market.needs_backstop_vault


@pytest.mark.parametrize("entry,expected", [
    ({"backstop_vault": {"auction_time": 60}}, "changes[0] backstop_vault: unknown field 'auction_time'; backstop_vault takes caller_fee_share, max_margin_usage, auction_discount, auction_seconds, request_delay_seconds"),
    ({"backstop_vault": {"auction_seconds": 60.5}}, "changes[0] backstop_vault: auction_seconds: must be a whole number of seconds, got 60.5"),
    ({"backstop_vault": {"request_delay_seconds": "1d"}}, "changes[0] backstop_vault: request_delay_seconds: must be a whole number of seconds, got '1d'"),
    ({"backstop_vault": {"caller_fee_share": -0.1}}, "changes[0] backstop_vault: caller_fee_share: must not be negative"),
    ({"backstop_vault": {}}, "changes[0] backstop_vault: nothing to change"),
    ({"backstop_vault": 0.2}, "changes[0]: backstop_vault: must be a mapping of fields, got 0.2"),
    ({"market": "ETH-PERP", "backstop_max_exposure": "lots"}, "changes[0] market ETH-PERP: backstop_max_exposure: not a number: 'lots'"),
])  # fmt: skip
def test_backstop_entry_mistakes_are_one_line(entry, expected):
    (line,) = problems({"changes": [entry]})
    assert line.startswith(expected), line
    assert "\n" not in line


def test_backstop_set_params_keeps_the_fields_left_out():
    (call,) = backstop_plan({"backstop_vault": {"auction_discount": 0.02, "request_delay_seconds": 172800}})
    assert (call.contract, call.function, call.address) == ("backstop_vault", "set_params", "0x" + "07" * 20)
    assert call.args == (20 * E16, 50 * E16, 2 * E16, 3600, 172800)
    assert [(r.field, r.current, r.new) for r in call.rows] == [
        ("caller_fee_share", "0.2", "0.2"), ("max_margin_usage", "0.5", "0.5"),
        ("auction_discount", "0.01", "0.02"), ("auction_seconds", "3600 s", "3600 s"),
        ("request_delay_seconds", "86400 s", "172800 s"),
    ]  # fmt: skip
    selector = keccak(text="set_params(uint256,uint256,uint256,uint256,uint256)")[:4]
    assert call_data_of(call) == selector + b"".join(v.to_bytes(32, "big") for v in call.args)


def test_backstop_max_exposure_is_its_own_call_beside_the_engine_caps():
    (call,) = backstop_plan({"market": "ETH-PERP", "backstop_max_exposure": 250})
    assert (call.contract, call.function, call.args) == ("backstop_vault", "set_max_exposure", (0, 250 * WAD))
    assert [(r.field, r.current, r.new) for r in call.rows] == [("backstop_max_exposure", "1000", "250")]
    assert call_data_of(call) == keccak(text="set_max_exposure(uint256,uint256)")[:4] + encode(
        ["uint256", "uint256"], [0, 250 * WAD]
    )
    calls = backstop_plan({"market": "ETH-PERP", "max_position": 400_000, "backstop_max_exposure": 0})  # 0 = no cap
    assert [(c.contract, c.function, c.args) for c in calls] == [
        ("engine", "set_position_caps", (0, 5_000_000 * WAD, 400_000 * WAD)),
        ("backstop_vault", "set_max_exposure", (0, 0)),
    ]
    # any size is accepted on chain: only an unchanged one is refused
    (call,) = backstop_plan({"market": "ETH-PERP", "backstop_max_exposure": 10**12})
    assert call.args == (0, 10**12 * WAD)
    assert backstop_plan_problems({"market": "ETH-PERP", "backstop_max_exposure": 1000}) == [
        "changes[0] market ETH-PERP: changes nothing (every value equals the on-chain one)"
    ]


def backstop_plan_problems(*entries) -> list[str]:
    with pytest.raises(ChangeError) as e:
        backstop_plan(*entries)
    return e.value.problems


@pytest.mark.parametrize("fields,expected", [
    ({"caller_fee_share": 0.51}, "caller_fee_share 0.51 is outside [0, 0.5] (backstop: caller fee share out of range)"),
    ({"max_margin_usage": 0.04}, "max_margin_usage 0.04 is outside [0.05, 0.9] (backstop: margin usage out of range)"),
    ({"max_margin_usage": 0.95}, "max_margin_usage 0.95 is outside [0.05, 0.9] (backstop: margin usage out of range)"),
    ({"auction_discount": 0.11}, "auction_discount 0.11 is outside [0, 0.1] (backstop: auction discount out of range)"),
    ({"auction_seconds": 59}, "auction_seconds 59 is outside [60, 604800] seconds (backstop: auction time out of range)"),
    ({"auction_seconds": 604801}, "auction_seconds 604801 is outside [60, 604800] seconds (backstop: auction time out of range)"),
    ({"request_delay_seconds": 3599}, "request_delay_seconds 3599 is outside [3600, 2592000] seconds (backstop: request delay out of range)"),
    ({"request_delay_seconds": 2592001}, "request_delay_seconds 2592001 is outside [3600, 2592000] seconds (backstop: request delay out of range)"),
    ({"caller_fee_share": 0.2}, "changes nothing"),
])  # fmt: skip
def test_backstop_bounds_are_mirrored(fields, expected):
    lines = backstop_plan_problems({"backstop_vault": fields})
    assert len(lines) == 1 and lines[0].startswith("changes[0] backstop_vault: ") and expected in lines[0], lines


def test_backstop_bounds_at_the_edges_are_accepted():
    for fields in (
        {"caller_fee_share": 0, "max_margin_usage": 0.05, "auction_discount": 0, "auction_seconds": 60,
         "request_delay_seconds": 3600},
        {"caller_fee_share": 0.5, "max_margin_usage": 0.9, "auction_discount": 0.1, "auction_seconds": 604800,
         "request_delay_seconds": 2592000},
    ):  # fmt: skip
        (call,) = backstop_plan({"backstop_vault": fields})
        assert call.function == "set_params"


def test_backstop_entries_without_a_backstop_vault_give_one_line():
    with pytest.raises(ChangeError) as e:
        plan(
            {"backstop_vault": {"caller_fee_share": 0.3}},
            {"underlying": "ETH", "im_rate": 0.12},
            {"market": "ETH-PERP", "max_position": 1000, "backstop_max_exposure": 5},
        )
    assert e.value.problems == [
        "changes[0] backstop_vault, changes[2] market ETH-PERP: this deployment has no backstop vault "
        "(its manifest names no backstop_vault)"
    ]
    # a market entry of the engine's caps alone needs no vault
    (call,) = plan({"market": "ETH-PERP", "max_position": 1000})
    assert call.function == "set_position_caps"


def test_backstop_bounds_are_read_back_from_the_contract_and_checked_in_configs():
    import dataclasses

    from keeper.config import load_config
    from keeper.params import bounds

    # their values: test_every_mirrored_bound_equals_the_vyper_constant
    assert {n for n, (src, _) in bounds.SOURCES.items() if src == "BackstopVault.vy"} == {
        "MAX_CALLER_FEE_SHARE", "MIN_MARGIN_USAGE", "MAX_MARGIN_USAGE", "MAX_AUCTION_DISCOUNT",
        "MIN_AUCTION_TIME", "MAX_AUCTION_TIME", "MIN_REQUEST_DELAY", "MAX_REQUEST_DELAY",
    }  # fmt: skip
    config = load_config()
    assert config.backstop_vault is not None and bounds.check_config(config) == []
    slow = dataclasses.replace(config.backstop_vault, request_delay=31 * 86400)
    assert bounds.check_config(dataclasses.replace(config, backstop_vault=slow)) == [
        "backstop_vault: request_delay_seconds 2678400 is outside [3600, 2592000] seconds "
        "(backstop: request delay out of range)"
    ]
