"""The chain layer's typed results: decoded from web3's raw tuples with the ABI's field names,
same values, still tuples for the risk engine's positional readers."""

from __future__ import annotations

import json
from pathlib import Path

from keeper.chain.types import (
    AccountState,
    AssetInfo,
    MarginSummary,
    MarketState,
    OptionState,
    PositionState,
    SeriesState,
    UnderlyingRates,
)
from keeper.risk.margin import AccountBook, MarketTable

ABI = Path(__file__).resolve().parents[2] / "abi"
WAD = 10**18


def _outputs(contract: str, function: str) -> list[str]:
    for entry in json.loads((ABI / f"{contract}.json").read_text()):
        if entry.get("type") == "function" and entry["name"] == function:
            (out,) = entry["outputs"]
            return [c["name"] for c in out["components"]]
    raise AssertionError(f"{contract}.{function} not in the ABI")


def test_field_names_are_the_abi_outputs():
    assert list(MarginSummary._fields) == _outputs("MarginLens", "margin_summaries")
    assert list(MarginSummary._fields) == _outputs("MarginEngine", "margin_summary")
    assert list(UnderlyingRates._fields) == _outputs("MarginEngine", "rates_now")
    assert list(AssetInfo._fields) == _outputs("CollateralVault", "assets")
    assert list(MarketState._fields) == _outputs("MarginLens", "market_states")
    assert list(AccountState._fields) == _outputs("MarginLens", "account_states")
    assert list(OptionState._fields) == _outputs("OptionMarket", "option_states")
    assert list(SeriesState._fields) == _outputs("OptionMarket", "series_states")


def test_decoded_values_are_unchanged_and_still_tuples():
    raw = (5 * WAD, 2 * WAD, WAD, 5 * WAD)
    s = MarginSummary.decode(raw)
    assert s == raw and (s.equity, s.maintenance_margin) == (5 * WAD, WAD)
    state = AccountState.decode((-3, [1, 0], [(1, -WAD, 2000 * WAD, 7)]))
    assert state.positions == (PositionState(market=1, size=-WAD, entry_price=2000 * WAD, funding_index=7),)
    book = AccountBook.from_states([state], n_assets=2, n_markets=2)  # keeper.risk reads by position
    assert (book.cash.tolist(), book.size.tolist(), book.funding_index.tolist()) == ([-3], [[0, -WAD]], [[0, 7]])
    market = MarketState.decode((0, True, 0, 0, -5, 9))
    assert market.is_perpetual is True and MarketTable.from_states([market], 0).funding_index.tolist() == [9]


def test_single_struct_reads_are_named_as_the_abi():
    import dataclasses

    from keeper.chain.types import FeedInfo, MarketInfo, OptionSeries
    from keeper.config import OptionRiskConfig

    assert list(MarketInfo._fields) == _outputs("MarginEngine", "markets")
    assert list(OptionSeries._fields) == _outputs("OptionMarket", "series")
    # the listing's option risk parameters are the contract's RiskParams, field for field
    assert [f.name for f in dataclasses.fields(OptionRiskConfig)] == _outputs("OptionMarket", "risk_params")
    assert list(FeedInfo._fields) == _outputs("OracleRouter", "feeds")
