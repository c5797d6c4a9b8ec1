"""The README and docs/: the README stays short, relative links resolve, and the figures renderer
(tools/figures.py, bin/figures) renders sample reports as documented and leaves a block alone
when its report is missing."""

from __future__ import annotations

import importlib.util
import io
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250

_spec = importlib.util.spec_from_file_location("figures", ROOT / "tools" / "figures.py")
figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(figures)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def relative_links(text: str) -> list[str]:
    text = CODE.sub("", FENCE.sub("", text))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(path):
    missing = []
    for target in relative_links(path.read_text()):
        file = target.split("#", 1)[0]
        if not (path.parent / file).exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_link_finder_skips_code_and_urls():
    text = "[a](docs/x.md) [b](https://e.org) [c](#top) `[d](no.md)` ![img](i.png)\n```\n[e](no.md)\n```\n"
    assert relative_links(text) == ["docs/x.md"]


def test_every_block_in_the_docs_has_a_renderer():
    for path in markdown_files():
        _, names = figures.replace_blocks(path.read_text(), {})
        assert set(names) <= set(figures.BLOCKS), path


# ---------------------------------------------------------------- figures renderer

GAS = {
    "match_orders": 200_000,
    "match_orders_first_trade": 300_000,
    "liquidate": 250_000,
    "liquidate_first": 350_000,
    "withdraw_usdc": 150_000,
    "deposit_usdc": 60_000,
    "margin_check_16_options": 400_000,
    "max_liquidation_call": 3_000_000,
    "liquidate_routed": 420_000,
    "unwind": 330_000,
    "buy_collateral": 300_000,
    "deleverage": 255_000,
    "nominate": 250_000,
}
CURRENT_ONLY = ("liquidate_routed", "unwind", "buy_collateral", "deleverage", "nominate")  # no baseline figure
GAS_REPORT = {
    **GAS,
    "baseline": {**{k: 2 * v for k, v in GAS.items() if k not in CURRENT_ONLY}, "deposit_usdc": 50_000},
    "baseline_rev": "abc1234",
    "targets": {"match_orders": 250_000, "withdraw_usdc": 140_000},
    "receipt_gas": {k: v + 30_000 for k, v in GAS.items()},
    "baseline_receipt_gas": {k: 2 * v + 30_000 for k, v in GAS.items()},
    "max_liquidation_calls": {
        "current": [["-15% OptionMarket.liquidate_options", 3_000_000], ["-25% MarginEngine.liquidate", 1_000_000]],
        "baseline": [["-15% OptionMarket.liquidate_options", 6_000_000], ["-30% old call", 5]],
    },
}
REPLAY_REPORT = {
    "accounts": 100,
    "blocks": 73,
    "liquidations": 68,
    "liquidated_accounts": 48,
    "liquidated_notional_usd": 1682577.41,
    "bad_debt_usd": 0.0,
    "insurance_fund_usd": 878411.5,
    "max_blocks_to_liquidate": 1,
    "missed_liquidations": 0,
    "cross_margin_usd": 605784.73,
    "isolated_margin_usd": 1113279.93,
    "vault_balances_reconcile": True,
    "liquidations_by_kind": {"long": 26, "future": 5},
    "keeper": {"processing_ms_median": 105.2, "processing_ms_max": 878.5},
}


def rows(table: str) -> dict[str, list[str]]:
    out = {}
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def test_gas_table():
    table = figures.render_gas(GAS_REPORT)
    got = rows(table)
    assert got["operation"] == ["before (abc1234)", "after", "change", "target", "receipt gas, after"]
    assert list(got)[1:] == list(figures.GAS_OPERATIONS.values())
    desc = figures.GAS_OPERATIONS
    assert got[desc["match_orders"]] == ["400,000", "200,000", "-50.0%", "<= 250,000", "230,000"]
    assert got[desc["deposit_usdc"]] == ["50,000", "60,000", "+20.0%", "-", "90,000"]
    assert got[desc["withdraw_usdc"]][3] == "<= 140,000"
    assert got[desc["liquidate_first"]][3] == "-"
    # the backstop vault's operations have no baseline: "-" before and for the change
    assert got[desc["liquidate_routed"]] == ["-", "420,000", "-", "-", "450,000"]
    assert got[desc["unwind"]] == ["-", "330,000", "-", "-", "360,000"]
    assert got[desc["buy_collateral"]] == ["-", "300,000", "-", "-", "330,000"]
    assert got[desc["deleverage"]] == ["-", "255,000", "-", "-", "285,000"]
    assert got[desc["nominate"]] == ["-", "250,000", "-", "-", "280,000"]


def test_gas_table_without_a_baseline_figure_or_receipt():
    report = json.loads(json.dumps(GAS_REPORT))
    del report["baseline"]["liquidate"], report["receipt_gas"]["liquidate"]
    assert rows(figures.render_gas(report))[figures.GAS_OPERATIONS["liquidate"]] == ["-", "250,000", "-", "-", "-"]


@pytest.mark.parametrize("drop", ["match_orders_first_trade", "receipt_gas", "baseline_rev"])
def test_gas_report_of_an_older_benchmark_is_refused(drop):
    report = {k: v for k, v in GAS_REPORT.items() if k != drop}
    with pytest.raises(figures.ReportError, match=drop):
        figures.render_gas(report)


def test_gas_figure_must_be_an_integer():
    with pytest.raises(figures.ReportError, match="deposit_usdc"):
        figures.render_gas({**GAS_REPORT, "deposit_usdc": "62k"})


def test_liquidation_calls_table():
    got = rows(figures.render_gas_calls(GAS_REPORT))
    assert got == {
        "call": ["before (abc1234)", "after"],
        "-15% OptionMarket.liquidate_options": ["6,000,000", "3,000,000"],
        "-25% MarginEngine.liquidate": ["-", "1,000,000"],
        "-30% old call": ["5", "-"],
    }


def test_liquidation_calls_table_numbers_repeated_calls():
    """A fall that needs several calls of one function: each is numbered, and the k-th call of a
    label is set next to the k-th call of the same label on the other side."""
    report = json.loads(json.dumps(GAS_REPORT))
    report["max_liquidation_calls"] = {
        "current": [["-15% options", 300], ["-15% options", 200], ["-25% engine", 100]],
        "baseline": [["-15% options", 700], ["-25% engine", 150]],
    }
    assert list(rows(figures.render_gas_calls(report)).items()) == [
        ("call", ["before (abc1234)", "after"]),
        ("-15% options (call 1)", ["700", "300"]),
        ("-15% options (call 2)", ["-", "200"]),
        ("-25% engine", ["150", "100"]),
    ]


_B76_ROW = {"call_mean": 1046, "call_max": 1113, "internal_mean": 917, "lyra_test": "testExp", "lyra_gas": 20217}
BLACK76_REPORT = {
    "samples": 10,
    "functions": {k: dict(_B76_ROW, call_mean=1000 + i) for i, k in enumerate(figures.BLACK76_FUNCTIONS)},
}
OPTION_MARGIN_REPORT = {
    "rows": [
        {"options": 1, "margin_summary": 144_792, "is_liquidatable": 1, "options_part": 52_519, "derive_srm": None},
        {
            "options": 16,
            "margin_summary": 407_599,
            "is_liquidatable": 1,
            "options_part": 315_312,
            "derive_srm": 966_000,
        },
    ]
}


def test_black76_gas_table():
    report = json.loads(json.dumps(BLACK76_REPORT))
    got = rows(figures.render_black76_gas(report))
    assert got["`exp_wad`"] == ["1,000 (1,113)", "20,217 (`testExp`)"]
    assert got["`black76`, ETH strikes 0.7-1.3 F"] == ["1,004 (1,113)", "20,217 (`testExp`)"]
    del report["functions"]["ln_wad"]
    with pytest.raises(figures.ReportError, match="functions.ln_wad: missing"):
        figures.render_black76_gas(report)


def test_option_margin_gas_table():
    report = json.loads(json.dumps(OPTION_MARGIN_REPORT))
    got = rows(figures.render_option_margin_gas(report))
    assert got["1"] == ["144,792", "52,519", ""]
    assert got["16"] == ["407,599", "19,707", "966,000"]  # per option: the options part / 16, rounded down
    report["rows"][0]["options_part"] = 1.5
    with pytest.raises(figures.ReportError, match="options_part"):
        figures.render_option_margin_gas(report)


PORTFOLIO_REPORT = {
    "instruments": 40,
    "scenarios": 67,
    "table_build_ms": 1.62,
    "seed": 7,
    "threads": {"OMP_NUM_THREADS": "1"},
    "rows": [
        {"accounts": 1_000, "table_s": 0.0016053, "loop_accounts": 1_000, "loop_s": 0.3575, "loop_extrapolated": False},
        {"accounts": 100_000, "table_s": 0.045064, "loop_accounts": 1_000, "loop_s": 43.82, "loop_extrapolated": True},
    ],
}


RISK_ENGINE_REPORT = {
    "markets": 4,
    "collateral_assets": 2,
    "seed": 7,
    "repeat": 3,
    "rows": [
        {
            "accounts": 10_000,
            "seconds": {
                "margin_first_call": 0.05,
                "margin": 0.025,
                "margin_float_first_call": 0.0069,
                "margin_float": 0.0016,
                "isolated_initial_margin": 0.0047,
                "margin_loop": 0.09,
            },
            "loop_accounts": 10_000,
            "loop_extrapolated": False,
        },
        {
            "accounts": 100_000,
            "seconds": {
                "margin_first_call": 0.5,
                "margin": 0.36,
                "margin_float_first_call": 0.073,
                "margin_float": 0.0175,
                "isolated_initial_margin": 0.0915,
                "margin_loop": 0.72,
            },
            "loop_accounts": 10_000,
            "loop_extrapolated": True,
        },
    ],
}
CHAIN_READS_REPORT = {
    "accounts": 1_000,
    "config": "replay-large.yaml",
    "block": 4321,
    "seconds": {"raw_batched": 0.3547, "raw_naive": 14.7, "summaries_batched": 0.2387, "summaries_naive": 3.96},
    "receipt_gas": {"deposit USDC (6 dec)": 62_053},
}


OPERATOR_JOBS_REPORT = {
    "config": "local.yaml",
    "changes": "changes.example.yaml",
    "deploy_steps": 30,
    "deploy_gas": 15_912_345,
    "handover_gas": 1_203_456,
    "timelock_delay_s": 3600,
    "rehearsal_s": 0.3468,
    "rehearsal_accounts": 0,
    "setters": [
        {
            "call": "engine.set_underlying_params",
            "label": "underlying ETH",
            "queue_gas": 56_123,
            "execute_gas": 68_456,
        },
        {"call": "vault.set_asset_params", "label": "asset WETH", "queue_gas": 55_987, "execute_gas": 99_012},
    ],
}


def options_report(start: str, end: str, option_liquidations: int, vol_source: dict[str, str]) -> dict:
    def kind(standard: float, portfolio: float) -> dict:
        return {"accounts": 3, "standard_im_usd": standard, "portfolio_im_usd": portfolio}

    return {
        **REPLAY_REPORT,
        "liquidations": 57,
        "liquidated_accounts": 38,
        "insurance_fund_usd": 933_647.4,
        "price_path": {"start": start, "end": end},
        "options": {
            "vol_source": vol_source,
            "vol_at_start": {"ETH": 1.1049, "BTC": 0.5912},
            "requirement_at_start_usd": {
                "isolated": {"im": 1_104_000.0},
                "standard": {"im": 683_400.0},
                "portfolio": {"im": 797_100.0},
                "on_chain": {"im": 700_000.0},
            },
            "below_maintenance_accounts": {"isolated": 46, "standard": 38, "portfolio": 39, "on_chain": 38},
            "option_liquidations": option_liquidations,
            "by_kind": {
                "risk_defined": kind(10_000.0, 220.0),
                "call_spread": kind(1_000.0, 280.0),
                "put_spread": kind(1_000.0, 210.0),
                "delta_hedged_straddle": kind(1_000.0, 810.0),
                "short_straddle": kind(1_000.0, 860.0),
                "covered_call": kind(1_000.0, 1_090.0),
                "protective_put": kind(1_000.0, 1_620.0),
                "long": kind(1_000.0, 2_000.0),
                "future": kind(1_000.0, 2_500.0),
            },
        },
    }


OPTIONS_2020 = options_report(
    "2020-03-11T00:00:00Z", "2020-03-13T23:00:00Z", 13, {"ETH": "realised", "BTC": "realised"}
)
OPTIONS_2021 = options_report("2021-05-18T00:00:00Z", "2021-05-20T23:00:00Z", 0, {"ETH": "dvol", "BTC": "realised"})


def test_portfolio_risk_table():
    table = figures.render_portfolio_risk(PORTFOLIO_REPORT)
    assert table.startswith("40 instruments x 67 scenarios; the scenario table is built in 1.6 ms")
    got = rows(table)
    assert got["1,000"] == ["623,000", "2,800", "223x"]
    assert got["100,000"] == ["2,220,000", "2,280 (extrapolated)", "972x"]
    with pytest.raises(figures.ReportError, match="not positive"):
        figures.render_portfolio_risk({**PORTFOLIO_REPORT, "rows": [{**PORTFOLIO_REPORT["rows"][0], "table_s": 0}]})


def test_risk_engine_table():
    got = [line.split(" | ") for line in figures.render_risk_engine(RISK_ENGINE_REPORT).splitlines()[2:]]
    assert len(got) == 2 * len(figures.RISK_ENGINE_METHODS)
    assert got[0] == ["| 10,000", "exact integer, vectorized (`margin`)", "400,000", "3.6x |"]
    assert got[2][2:] == ["6,250,000", "56x |"]
    assert got[5][1:] == ["per-account Python loop (`margin_loop`)", "111,000", "1.0x |"]
    assert got[11][1:] == ["per-account Python loop (`margin_loop`) (extrapolated from 10,000)", "139,000", "1.0x |"]
    old = json.loads(json.dumps(RISK_ENGINE_REPORT))
    del old["rows"][1]["seconds"]["margin_first_call"]
    with pytest.raises(figures.ReportError, match="seconds.margin_first_call"):
        figures.render_risk_engine(old)


KEEPER_REPORT = {
    "accounts": 100_000,
    "full_rescore_ms": 40_612.0,
    "event_rescore_ms": 190.0,
    "read_accounts_per_s": 2_500.0,
    "chain": {"read_accounts": 1_000, "per_block_ms": 20.0, "read_accounts_per_s": 2_500.0},
    "markets": 4,
    "collateral_assets": 2,
    "seed": 7,
    "move": 0.01,
    "changed": 20,
    "quiet_blocks": 3,
    "repeat": 3,
    "rows": [
        {"accounts": 1_000, "full_ms": 424.0, "event_ms": 30.0, "full_cpu_ms": 4.0, "event_cpu_ms": 2.0,
         "valued": 170, "exact_confirmed": 60, "same_liquidations": True},
        {"accounts": 100_000, "full_ms": 40_612.0, "event_ms": 190.0, "full_cpu_ms": 612.0, "event_cpu_ms": 153.0,
         "valued": 16_100, "exact_confirmed": 5_900, "same_liquidations": True},
    ],
}  # fmt: skip


def test_keeper_table():
    table = figures.render_keeper(KEEPER_REPORT)
    assert "(BTC -1.0%, 20 accounts changed)" in table.splitlines()[0]
    got = rows(table)
    assert got["1,000"] == ["424", "30.0", "14x", "4.00 / 2.00 (2.0x)", "170", "yes"]
    assert got["100,000"] == ["40,600", "190", "210x", "612 / 153 (4.0x)", "16,100", "yes"]
    assert "2,500 accounts/s" in table
    bad = {**KEEPER_REPORT, "rows": [{**KEEPER_REPORT["rows"][0], "event_ms": 0}]}
    with pytest.raises(figures.ReportError, match="not positive"):
        figures.render_keeper(bad)
    with pytest.raises(figures.ReportError, match="move"):
        figures.render_keeper({"rows": KEEPER_REPORT["rows"], "changed": 20})
    assert "not measured" in figures.render_keeper({**KEEPER_REPORT, "chain": None})


def fleet_report(stopped: bool) -> dict:
    report = {
        **REPLAY_REPORT,
        "accounts": 10_000,
        "liquidations": 6_800,
        "liquidated_accounts": 4_700,
        "duplicate_sends": 0,
        "liquidation_transactions": 6_800,
        "setup_seconds": 445.1,
        "price_path": {"start": "2020-03-11T00:00:00Z", "end": "2020-03-13T23:00:00Z", "steps": 72},
        "keeper": {"keepers": 3, "processing_ms_median": 250.4, "processing_ms_max": 9_120.0,
                   "accounts_read_last_block": 12},
    }  # fmt: skip
    if stopped:
        report["stopped_shards"] = {"shards": [1], "liquidations": 2_200, "max_blocks_to_liquidate": 3,
                                    "missed_liquidations": 0}  # fmt: skip
    return report


def test_replay_fleet_table():
    got = rows(figures.render_replay_fleet(fleet_report(False), fleet_report(True)))
    assert got[""] == ["2020-03-11 .. 2020-03-13, 72 steps", "2020-03-11 .. 2020-03-13, 72 steps"]
    assert got["accounts / keepers"] == ["10,000 / 3", "10,000 / 3, shard 1 stopped"]
    assert got["set-up"] == ["445 s", "445 s"]
    assert got["keeper time per block (slowest shard)"][0] == "250 ms median, 9,120 ms max"
    assert got["duplicate sends"][0] == "0 of 6,800 liquidation transactions"
    assert got["stopped shard's accounts: liquidations, max blocks, missed"] == ["-", "2,200, 3, 0"]
    with pytest.raises(figures.ReportError, match="duplicate_sends"):
        figures.render_replay_fleet({k: v for k, v in fleet_report(False).items() if k != "duplicate_sends"})


def test_chain_reads_table():
    got = rows(figures.render_chain_reads(CHAIN_READS_REPORT))
    assert got["reading 1,000 accounts"] == ["seconds", "accounts / s"]
    assert got[figures.CHAIN_READS["raw_batched"]] == ["0.355", "2,820"]
    assert got[figures.CHAIN_READS["summaries_batched"]] == ["0.239", "4,190"]
    assert got[figures.CHAIN_READS["raw_naive"]] == ["14.7", "68.0"]
    with pytest.raises(figures.ReportError, match="seconds.raw_naive"):
        figures.render_chain_reads({**CHAIN_READS_REPORT, "seconds": {"raw_batched": 1.0}})


def test_operator_jobs_tables():
    got = rows(figures.render_operator_jobs(OPERATOR_JOBS_REPORT))
    assert got["deploy `config/local.yaml` (30 steps)"] == ["15,912,345 gas"]
    assert got["hand its admin roles to a timelock (install, accept)"] == ["1,203,456 gas"]
    assert got["rehearse `config/changes.example.yaml` on a fork (2 setter calls, 0 accounts)"] == ["0.35 s"]
    assert got["`engine.set_underlying_params` (underlying ETH)"] == ["56,123", "68,456"]
    assert got["`vault.set_asset_params` (asset WETH)"] == ["55,987", "99,012"]
    with pytest.raises(figures.ReportError, match="setters"):
        figures.render_operator_jobs({**OPERATOR_JOBS_REPORT, "setters": []})


def test_replay_keeper_time_line():
    line = figures.render_replay_keeper_time(OPTIONS_2020)
    assert line == "2020-03-11 .. 2020-03-13, 100 accounts, 73 blocks: 105 ms median keeper time per block, 878 ms max."


def test_option_replay_tables():
    got = rows(figures.render_options_replay(OPTIONS_2020, OPTIONS_2021))
    assert got["100 accounts"] == ["2020-03-11 .. 2020-03-13", "2021-05-18 .. 2021-05-20"]
    assert got["vol at the start (ETH / BTC)"] == ["realised 1.10 / 0.59", "DVOL 1.10 / realised 0.59"]
    assert got["liquidations (accounts)"] == ["57 (38), 13 of them option liquidations", "57 (38)"]
    assert got["missed liquidations / max blocks to liquidate"] == ["0 / 1", "0 / 1"]
    assert got["bad debt"] == ["$0", "$0"]
    assert got["insurance fund at the end"] == ["$933,647", "$933,647"]
    assert got["initial margin at the start: isolated / standard / portfolio"][0] == "$1.10M / $683k / $797k"
    assert got["accounts that fell below MM: isolated / standard / portfolio / on chain"][1] == "46 / 38 / 39 / 38"
    books = rows(figures.render_options_books(OPTIONS_2020, OPTIONS_2021))
    assert books["risk-defined (short straddle + long 90/110 strangle)"] == ["0.022 / 0.022"]
    assert books["call spread / put spread"] == ["0.28 / 0.28, 0.21 / 0.21"]
    assert books["perpetuals and futures alone"] == ["2.25 / 2.25"]  # (2,000 + 2,500) / (1,000 + 1,000)
    old = json.loads(json.dumps(OPTIONS_2021))
    del old["options"]["by_kind"]
    with pytest.raises(figures.ReportError, match="by_kind"):
        figures.render_options_books(OPTIONS_2020, old)


def test_replay_table():
    got = rows(figures.render_replay(REPLAY_REPORT))
    assert got["liquidations"] == ["68 (48 accounts)"]
    assert got["liquidations by book kind"] == ["future 5, long 26"]
    assert got["liquidated notional"] == ["$1,682,577"]
    assert got["bad debt"] == ["$0.00"]
    assert got["insurance fund at the end"] == ["$878,412"]
    assert got["initial margin, isolated"] == ["$1,113,280"]
    assert got["vault balances reconcile"] == ["yes"]
    assert got["keeper processing per block"] == ["105 ms median, 878 ms max"]


RISK_FIGURES = {
    "insurance_fund_start_usd": 1_000_000.0,
    "socialized_loss_usd": 0.0,
    "flat_account_losses_usd": 0.0,
    "flat_account_socialization_exposure_usd": 0.0,
    "keeper_max_inventory_usd": 1_573_986.9,
    "adl_events": 0,
    "adl_notional_usd": 0.0,
    "backstop_pnl_usd": None,
    "backstop_max_exposure_usd": None,
}


def test_replay_runs_table():
    default = {
        **REPLAY_REPORT,
        **RISK_FIGURES,
        "keeper_max_inventory_usd": 0.0,
        "keeper_inventory_end_usd": 0.0,
        "backstop_seed_usd": 2_000_000.0,
        "backstop_pnl_usd": -129_549.7,
        "backstop_max_exposure_usd": 1_573_986.9,
        "routed_liquidations": 68,
        "direct_liquidations": 0,
    }
    no_fund = {
        **default,
        "insurance_fund_start_usd": 0.0,
        "insurance_fund_usd": 0.0,
        "bad_debt_usd": 121_588.9,
        "flat_account_socialization_exposure_usd": 12.4,
        "adl_events": 3,
        "adl_notional_usd": 5_000.0,
    }
    no_backstop = {
        **default,
        "keeper_max_inventory_usd": 1_573_986.9,
        "keeper_inventory_end_usd": 1_500_000.2,
        "backstop_seed_usd": 0.0,
        "backstop_pnl_usd": 0.0,
        "backstop_max_exposure_usd": 0.0,
        "routed_liquidations": 0,
        "direct_liquidations": 68,
    }
    adl_only = {
        **no_backstop,
        "insurance_fund_start_usd": 0.0,
        "insurance_fund_usd": 36.6,
        "adl_events": 40,
        "adl_notional_usd": 999_122.6,
    }
    table = figures.render_replay_runs(default, no_fund, no_backstop, adl_only)
    assert table.splitlines()[0] == (
        "| 100 accounts | as configured (seeded backstop vault) | `--insurance-fund 0` | `--backstop 0` "
        "| `--insurance-fund 0 --backstop 0` (ADL alone) |"
    )
    assert table.splitlines()[1] == "|---|---|---|---|---|"
    got = rows(table)
    assert got["insurance fund at the start / end"] == [
        "$1,000,000 / $878,412",
        "$0 / $0",
        "$1,000,000 / $878,412",
        "$0 / $37",
    ]
    assert got["backstop vault seeded before the crash"] == ["$2,000,000", "$2,000,000", "$0", "$0"]
    assert got["liquidations (accounts)"] == ["68 (48)"] * 4
    assert got["liquidations routed to the backstop vault / direct"] == ["68 / 0", "68 / 0", "0 / 68", "0 / 68"]
    assert got["bad debt at the end (outstanding)"] == ["$0", "$121,589", "$0", "$0"]
    assert got["flat-account losses"] == ["$0"] * 4
    assert got["bad debt flat accounts would bear if they withdrew"] == ["$0", "$12", "$0", "$0"]
    inventory = got["keeper's largest inventory / at the end (gross notional)"]
    assert inventory == ["$0 / $0", "$0 / $0", "$1,573,987 / $1,500,000", "$1,573,987 / $1,500,000"]
    vault = got["backstop vault P&L / largest exposure (gross notional)"]
    assert vault == ["-$129,550 / $1,573,987", "-$129,550 / $1,573,987", "$0 / $0", "$0 / $0"]
    assert got["ADL events / notional"] == ["0 / $0", "3 / $5,000", "0 / $0", "40 / $999,123"]
    # a report of a deployment without a vault says so; one written before routing shows "-"
    older = {**RISK_FIGURES, **REPLAY_REPORT}
    older_rows = rows(figures.render_replay_runs(older, older))
    assert older_rows["backstop vault P&L / largest exposure (gross notional)"] == ["n/a (no backstop vault)"] * 2
    assert older_rows["liquidations routed to the backstop vault / direct"] == ["-", "-"]
    assert older_rows["backstop vault seeded before the crash"] == ["-", "-"]
    del older["flat_account_losses_usd"]
    with pytest.raises(figures.ReportError, match="flat_account_losses_usd"):
        figures.render_replay_runs(older, no_fund)


PRICE_GAPS_REPORT = {
    "rows": [
        {
            "data": "ETH 10-minute",
            "moves": [
                {"kind": "one hour", "move": -0.2918, "start": "2021-05-19T12:00:00Z", "end": "2021-05-19T13:00:00Z"}
            ],
        }
    ]
}


def make_tree(tmp_path: Path, reports: dict[str, dict]) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "reports").mkdir()
    for name, report in reports.items():
        (tmp_path / "reports" / name).write_text(json.dumps(report))
    (tmp_path / "README.md").write_text("# x\n\n<!-- figures:gas -->\nold gas\n<!-- /figures:gas -->\n\ntail\n")
    (tmp_path / "docs" / "replay.md").write_text(
        "<!-- figures:replay-black-thursday -->\nold replay\n<!-- /figures:replay-black-thursday -->\n"
        "<!-- figures:gas -->\n<!-- /figures:gas -->\n"
    )
    return tmp_path


def run(root: Path, check: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = figures.update(root, check=check, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_update_renders_every_block_then_check_passes(tmp_path):
    reports = {
        "gas.json": GAS_REPORT,
        "black-thursday.json": {**REPLAY_REPORT, **RISK_FIGURES},
        "black-thursday-no-insurance-fund.json": {**REPLAY_REPORT, **RISK_FIGURES, "insurance_fund_start_usd": 0.0},
        "black-thursday-no-backstop.json": {**REPLAY_REPORT, **RISK_FIGURES},
        "black-thursday-adl-only.json": {**REPLAY_REPORT, **RISK_FIGURES, "insurance_fund_start_usd": 0.0},
        "black76-gas.json": BLACK76_REPORT,
        "option-margin-gas.json": OPTION_MARGIN_REPORT,
        "portfolio-risk.json": PORTFOLIO_REPORT,
        "risk-engine.json": RISK_ENGINE_REPORT,
        "keeper.json": KEEPER_REPORT,
        "chain-reads.json": CHAIN_READS_REPORT,
        "operator-jobs.json": OPERATOR_JOBS_REPORT,
        "options-2020.json": OPTIONS_2020,
        "options-2021.json": OPTIONS_2021,
        "price-gaps.json": PRICE_GAPS_REPORT,
        "fleet-hourly.json": fleet_report(False),
        "fleet-hourly-stop.json": fleet_report(True),
        "fleet-minute.json": fleet_report(False),
    }
    root = make_tree(tmp_path, reports)
    assert run(root, check=True)[0] == 1  # out of date
    code, out, err = run(root)
    assert (code, err) == (0, "")
    readme = (root / "README.md").read_text()
    gas = figures.render_gas(GAS_REPORT)
    assert readme == f"# x\n\n<!-- figures:gas -->\n{gas}\n<!-- /figures:gas -->\n\ntail\n"
    docs = (root / "docs" / "replay.md").read_text()
    assert figures.render_replay(REPLAY_REPORT) in docs and gas in docs and "old replay" not in docs
    assert run(root, check=True) == (0, "", "")
    assert run(root)[1] == "figures: nothing to change\n"


def test_missing_report_keeps_its_block(tmp_path):
    root = make_tree(tmp_path, {"black-thursday.json": REPLAY_REPORT})
    code, _, err = run(root)
    assert code == 0
    assert "reports/gas.json is missing" in err
    assert "old gas" in (root / "README.md").read_text()
    assert "old replay" not in (root / "docs" / "replay.md").read_text()
    code, _, err = run(root, check=True)  # rendered what it could; gas.json still missing
    assert code == 1 and "reports/gas.json is missing" in err


def test_unreadable_report_keeps_its_block(tmp_path):
    root = make_tree(tmp_path, {"gas.json": {"match_orders": 1}, "black-thursday.json": REPLAY_REPORT})
    (root / "reports" / "black-thursday.json").write_text("{not json")
    code, _, err = run(root)
    assert code == 0
    assert "reports/gas.json cannot be rendered" in err and "reports/black-thursday.json cannot be rendered" in err
    assert "old gas" in (root / "README.md").read_text()
    assert "old replay" in (root / "docs" / "replay.md").read_text()


def test_unknown_block_is_reported_by_check(tmp_path):
    root = make_tree(tmp_path, {"gas.json": GAS_REPORT, "black-thursday.json": REPLAY_REPORT})
    run(root)
    (root / "docs" / "new.md").write_text("<!-- figures:nope -->\nx\n<!-- /figures:nope -->\n")
    code, _, err = run(root, check=True)
    assert code == 1 and "no renderer for block 'nope'" in err


def test_producers_use_the_given_python(tmp_path):
    commands = figures.producers(tmp_path, "/venv/bin/python", tmp_path / "data")
    assert set(commands) == {report for reports, _ in figures.BLOCKS.values() for report in reports}
    assert commands["gas.json"] == ["/venv/bin/python", "-m", "benchmarks.gas", "--json"]
    replay = commands["black-thursday.json"]
    assert replay[:4] == ["/venv/bin/python", "-m", "keeper", "replay"]
    assert replay[-2:] == ["--report", str(tmp_path / "reports" / "black-thursday.json")]
    assert replay[-4:-2] == ["--plot", str(tmp_path / "docs" / "img" / "black-thursday.png")]
    no_fund = commands["black-thursday-no-insurance-fund.json"]
    assert no_fund[:-4] == [*replay[:-4], "--insurance-fund", "0"]
    assert no_fund[-4:] == [
        "--plot",
        str(tmp_path / "docs" / "img" / "black-thursday-no-insurance-fund.png"),
        "--report",
        str(tmp_path / "reports" / "black-thursday-no-insurance-fund.json"),
    ]
    options = commands["options-2021.json"]
    assert options[:5] == ["/venv/bin/python", "-m", "keeper", "replay", "--options"]
    assert options[-6:] == [
        "--start",
        "2021-05-18T00:00:00Z",
        "--end",
        "2021-05-21T00:00:00Z",
        "--report",
        str(tmp_path / "reports" / "options-2021.json"),
    ]


def test_a_block_of_two_reports_waits_for_both(tmp_path):
    root = make_tree(tmp_path, {"options-2020.json": OPTIONS_2020})
    (root / "docs" / "replay.md").write_text("<!-- figures:replay-options -->\nold\n<!-- /figures:replay-options -->\n")
    code, _, err = run(root)
    assert code == 0 and "reports/options-2021.json is missing: kept block(s) 'replay-options'" in err
    assert "old" in (root / "docs" / "replay.md").read_text()


def test_gas_report_has_no_baseline_for_the_vault_and_only_updates_what_it_measured():
    """benchmarks.gas: the backstop vault's scenarios are measured on this tree only (the baseline
    revision has no vault), and `--only` replaces just their figures in reports/gas.json."""
    from benchmarks import gas

    def txs(execution: int) -> list[dict]:
        return [{"label": "x", "gas": execution + 21_000, "intrinsic": 21_000, "execution": execution, "refund": 0}]

    current = {"scenarios": {name: txs(100_000 + i) for i, name in enumerate(gas.ALL_SCENARIOS)}}
    baseline = {"scenarios": {name: txs(200_000) for name in gas.SCENARIOS}}
    out = gas.report(current, baseline, "abc1234")
    assert set(gas.CURRENT_ONLY) == {"liquidate_routed", "unwind", "buy_collateral", "deleverage", "nominate"}
    assert all(name in out and name in out["receipt_gas"] for name in gas.ALL_SCENARIOS)
    assert not set(gas.CURRENT_ONLY) & set(out["baseline"])
    assert figures.render_gas(out).count("| - |") >= 2  # the vault's rows: no "before"
    updated = gas.update_report(out, {"scenarios": {"unwind": txs(7)}})
    assert updated["unwind"] == 7 and updated["receipt_gas"]["unwind"] == 21_007
    assert {k: v for k, v in updated.items() if k not in ("unwind", "receipt_gas")} == {
        k: v for k, v in out.items() if k not in ("unwind", "receipt_gas")
    }
