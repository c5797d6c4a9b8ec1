"""The replay's option legs meet the option market's minimum position notional: every set-up trade
leaves the account and its market maker flat or at least `min_position_notional` at the index
(OptionMarket.trade reverts "options: position below minimum notional" otherwise), and the
population is otherwise the seed's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from keeper.config import load_config
from keeper.replay.option_books import min_position_units, plan_option_fills
from keeper.replay.population import TRADE_UNIT, AccountSpec, make_population, trade_size
from keeper.units import WAD

OPTIONS_CONFIG = Path(__file__).resolve().parents[2] / "config" / "options.yaml"
MIN_NOTIONAL = load_config(OPTIONS_CONFIG).min_position_notional  # the deployment's, WAD USD
# index prices (WAD) at the start of the replays (docs/replay.md; the option-book integration
# test): the first hourly prices (Binance, as PricePath.as_wad) at 2020-03-11, 2021-05-18 and
# 2020-03-12 06:00 UTC
WINDOWS = {
    "2020-03-11": {"ETH": 2022 * 10**17, "BTC": 794048 * 10**16},
    "2021-05-18": {"ETH": 335543 * 10**16, "BTC": 4438626 * 10**16},
    "2020-03-12T06": {"ETH": 1738 * 10**17, "BTC": 749417 * 10**16},
}


def check_fills(specs, planned, fills, makers, index, min_notional):
    """Replay `fills` on a ledger: each leaves both sides flat or above the minimum, every
    account's legs are traded as `planned` states them, and a leg differs from the seed's only
    where it had to."""
    held: dict = {}
    for f in fills:
        und, is_call, multiple, _ = f.leg
        least = min_position_units(min_notional, index[und])
        key = (und, is_call, multiple)
        for side, amount in ((("holder", f.holder), f.size), (("maker", f.maker), -f.size)):
            after = held.get((side, key), 0) + amount
            assert after == 0 or abs(after) >= least, (side, key, after / WAD, least / WAD)
            held[(side, key)] = after
        assert f.size % TRADE_UNIT == 0 and 0 <= f.maker < makers
    holders = [i for i, s in enumerate(specs) if s.options]
    for i in holders:
        traded = sorted((f.leg[:3], f.size) for f in fills if f.holder == i)
        assert traded == sorted((leg[:3], trade_size(leg[3])) for leg in planned[i].options)
    for before, after in zip(specs, planned):
        assert after.kind == before.kind and after.trades == before.trades and after.deposits == before.deposits
        for (und, *_, seed), (_, *_, sized) in zip(before.options, after.options):
            assert sized == seed or abs(sized - seed) * index[und] <= min_notional + TRADE_UNIT * index[und] // WAD


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(("accounts", "seed"), [(100, 7), (30, 7), (20, 7), (100, 3), (250, 11), (1000, 1)])
def test_every_option_fill_leaves_both_sides_flat_or_above_the_minimum(window, accounts, seed):
    index = WINDOWS[window]
    specs = make_population(accounts, {u: p / WAD for u, p in index.items()}, seed, options=True)
    makers = math.ceil(accounts / 20)  # driver.ACCOUNTS_PER_MAKER
    planned, fills = plan_option_fills(specs, makers, index, MIN_NOTIONAL)
    check_fills(specs, planned, fills, makers, index, MIN_NOTIONAL)


def test_the_documented_population_keeps_its_accounts():
    """100 accounts, seed 7: the seed nets one maker's ATM ETH put to $0.43. That fill goes to
    another maker; every account is the seed's."""
    index = WINDOWS["2020-03-11"]
    specs = make_population(100, {u: p / WAD for u, p in index.items()}, 7, options=True)
    planned, fills = plan_option_fills(specs, 5, index, MIN_NOTIONAL)
    assert planned == specs
    assert sum(f.maker != j % 5 for j, f in enumerate(_first_fill_per_holder(fills))) <= 1
    assert any(f.maker != _holder_rank(specs, f.holder) % 5 for f in fills)


def _holder_rank(specs, i):
    return [k for k, s in enumerate(specs) if s.options].index(i)


def _first_fill_per_holder(fills):
    seen, out = set(), []
    for f in fills:
        if f.holder not in seen:
            seen.add(f.holder)
            out.append(f)
    return out


def _straddle(units: float) -> AccountSpec:
    return AccountSpec(
        "short_straddle", {"USDC": 10_000.0}, (), 10_000.0, (("ETH", True, 1.0, -units), ("ETH", False, 1.0, -units))
    )


def test_a_leg_below_the_minimum_is_raised_to_it_and_a_lone_maker_is_left_flat():
    index = {"ETH": 200 * WAD}  # $10 minimum: 0.05 ETH
    least = min_position_units(10 * WAD, index["ETH"])
    assert least == 5 * 10**16
    # a 0.01 ETH straddle is raised to 0.05 ETH on both legs
    planned, fills = plan_option_fills([_straddle(0.01)], 1, index, 10 * WAD)
    assert [f.size for f in fills] == [-least, -least]
    assert planned[0].options == (("ETH", True, 1.0, -0.05), ("ETH", False, 1.0, -0.05))
    # one maker, which the second account's legs would leave 0.001 ETH short: that account's
    # legs take the maker's whole position instead (it is left flat)
    planned, fills = plan_option_fills([_straddle(1.0), _straddle(-0.999)], 1, index, 10 * WAD)
    check_fills([_straddle(1.0), _straddle(-0.999)], planned, fills, 1, index, 10 * WAD)
    assert [f.size for f in fills[2:]] == [WAD, WAD] and planned[1].options[0][3] == 1.0
    # no minimum (min_position_notional 0): the seed's sizes, unchanged
    specs = [_straddle(1.0), _straddle(-0.999)]
    planned, fills = plan_option_fills(specs, 1, index, 0)
    assert planned == specs and [f.size for f in fills[2:]] == [999 * 10**15] * 2


def test_a_lone_maker_is_left_at_the_minimum_when_that_is_nearer_than_flat():
    # one series twice in an account: after the first account's +1 ETH the maker is short 1 ETH;
    # -0.97 would leave it 0.03 short: the leg becomes -0.95 (maker 0.05 short, the minimum),
    # then -0.03 would leave it 0.02 short: that leg becomes -0.05 (maker flat)
    legs = (("ETH", True, 1.0, -0.97), ("ETH", True, 1.0, -0.03))
    specs = [_straddle(-1.0), AccountSpec("odd", {"USDC": 1.0}, (), 1.0, legs)]
    planned, fills = plan_option_fills(specs, 1, {"ETH": 200 * WAD}, 10 * WAD)
    assert [f.size for f in fills[2:]] == [-95 * 10**16, -5 * 10**16]
    assert planned[1].options == (("ETH", True, 1.0, -0.95), ("ETH", True, 1.0, -0.05))
