"""keeper.risk.margin against hand calculations (Python ints written out here), and the vectorized
exact path against the per-account loop and the float path on random books."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import numpy as np
import pytest

from keeper.config import load_config
from keeper.risk.margin import (
    AccountBook,
    MarginResult,
    MarketTable,
    RiskParams,
    cash_value,
    isolated_initial_margin,
    margin,
    margin_float,
    margin_loop,
    valuation,
)
from keeper.units import MAX_UINT256, WAD

PCT = WAD // 100
ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = range(4)

# Underlyings ETH (price id 0) and BTC (1): IM 10%, MM 5%, spread IM 2%, spread MM 1%.
# Assets: WETH (18 decimals, haircut 85%), WBTC (8 decimals, 90%), GOV (2 decimals, price id 2, 60%).
PARAMS = RiskParams(
    price_id=[0, 1],
    im_rate=[10 * PCT, 10 * PCT],
    mm_rate=[5 * PCT, 5 * PCT],
    spread_im_rate=[2 * PCT, 2 * PCT],
    spread_mm_rate=[1 * PCT, 1 * PCT],
    asset_price_id=[0, 1, 2],
    asset_decimals=[18, 8, 2],
    asset_haircut=[85 * PCT, 90 * PCT, 60 * PCT],
)
LIVE = MarketTable(underlying=[0, 0, 1, 1], settlement_price=[0, 0, 0, 0], funding_index=[0, 0, 0, 0])


def prices(eth: int, btc: int = 30_000 * WAD, gov: int = 3 * WAD) -> list[int]:
    return [eth, btc, gov]


def account(cash: int = 0, collateral=(0, 0, 0), positions=()) -> tuple:
    """One `account_states` entry as web3 returns it: plain tuples."""
    return (cash, list(collateral), [tuple(p) for p in positions])


def value(accounts, markets=LIVE, params=PARAMS, index=None) -> MarginResult:
    """margin(...) after checking that the loop implementation agrees exactly."""
    book = AccountBook.from_states(accounts, params.n_assets, markets.n_markets)
    exact = margin(book, markets, params, index)
    assert_same(exact, margin_loop(book, markets, params, index))
    return exact


def assert_same(a: MarginResult, b: MarginResult) -> None:
    for field in ("equity", "initial_margin", "maintenance_margin", "health_factor"):
        assert getattr(a, field).tolist() == getattr(b, field).tolist(), field
    assert a.liquidatable.tolist() == b.liquidatable.tolist()


def row(r: MarginResult, i: int = 0) -> tuple:
    return r.equity[i], r.initial_margin[i], r.maintenance_margin[i], r.health_factor[i], bool(r.liquidatable[i])


# ---------------------------------------------------------------- hand calculations


def test_single_long_perp():
    # 2 ETH long at 2000, index 2150, cash 10,000
    r = value([account(10_000 * WAD, positions=[(ETH_PERP, 2 * WAD, 2000 * WAD, 0)])], index=prices(2150 * WAD))
    equity = 10_000 * WAD + 2 * 150 * WAD  # 10,300
    im = 2 * 2150 * WAD // 10  # 10% of 4,300 notional = 430
    mm = 2 * 2150 * WAD // 20  # 5% = 215
    health = 47_906_976_744_186_046_511  # 10,300 / 215 = 47.9069767441860465116... floored at 18 decimals
    assert health == equity * WAD // mm
    assert row(r) == (equity, im, mm, health, False)
    assert r.meets_initial_margin.tolist() == [True]
    book = AccountBook.from_states([account(0, positions=[(ETH_PERP, 2 * WAD, 2000 * WAD, 0)])], 3, 4)
    assert isolated_initial_margin(book, LIVE, PARAMS, prices(2150 * WAD)).tolist() == [im]


def test_basis_trade_nets_and_pays_spread_charge():
    # long 10 ETH-PERP at 2000, short 8 ETH-FUT at 2010, index 1990
    positions = [(ETH_PERP, 10 * WAD, 2000 * WAD, 0), (ETH_FUT, -8 * WAD, 2010 * WAD, 0)]
    r = value([account(5_000 * WAD, positions=positions)], index=prices(1990 * WAD))
    equity = (5_000 - 100 + 160) * WAD  # perp 10 x -10, future -8 x -20
    # net 2 ETH at the full rate, offset 8 ETH at the spread rate
    im = 2 * 1990 * WAD // 10 + 8 * 1990 * WAD * 2 // 100  # 398 + 318.4 = 716.4
    mm = 2 * 1990 * WAD // 20 + 8 * 1990 * WAD // 100  # 199 + 159.2 = 358.2
    assert (im, mm) == (7164 * WAD // 10, 3582 * WAD // 10)
    assert row(r) == (equity, im, mm, 14_126_186_487_995_533_221, False)  # 5060 / 358.2
    # isolated: 18 ETH gross at 10%, no spread credit
    book = AccountBook.from_states([account(positions=positions)], 3, 4)
    assert isolated_initial_margin(book, LIVE, PARAMS, prices(1990 * WAD)).tolist() == [18 * 1990 * WAD // 10]


def test_cross_asset_positions_do_not_offset():
    # long 1 BTC at 30,000 (index 31,000), short 15 ETH at 2000 (index 2100)
    positions = [(BTC_PERP, WAD, 30_000 * WAD, 0), (ETH_PERP, -15 * WAD, 2000 * WAD, 0)]
    r = value([account(20_000 * WAD, positions=positions)], index=prices(2100 * WAD, 31_000 * WAD))
    equity = (20_000 + 1_000 - 1_500) * WAD
    im = (3_100 + 3_150) * WAD  # 10% of each notional: no netting across underlyings
    mm = (1_550 + 1_575) * WAD
    assert row(r) == (equity, im, mm, 6_240_000_000_000_000_000, False)  # 19,500 / 3,125 = 6.24


def test_collateral_haircut_and_decimals():
    weth = 1_234_567_890_123_456_789  # 1.234567890123456789 WETH (18 decimals)
    wbtc = 12_345_678  # 0.12345678 WBTC (8 decimals)
    gov = 12_345  # 123.45 GOV (2 decimals)
    eth, btc, gov_price = 20_005 * WAD // 10, 30_001 * WAD, 3_333_333_333_333_333_333
    r = value([account(-100 * WAD, (weth, wbtc, gov))], index=prices(eth, btc, gov_price))
    # 1.234567890123456789 x 2000.5 x 0.85 = 2099.290104563179010435.325 -> floor
    weth_value = 2_099_290_104_563_179_010_435
    # 0.12345678 x 30001 x 0.9 = 3333.444171102 exactly
    wbtc_value = 3_333_444_171_102_000_000_000
    # 123.45 x 3.333333333333333333 x 0.6 = 246.899999999999999975.3... -> floor
    gov_value = 246_899_999_999_999_999_975
    assert weth_value == weth * eth * (85 * PCT) // (10**18 * WAD)
    assert wbtc_value == wbtc * btc * (90 * PCT) // (10**8 * WAD)
    assert gov_value == gov * gov_price * (60 * PCT) // (10**2 * WAD)
    equity = -100 * WAD + weth_value + wbtc_value + gov_value
    assert row(r) == (equity, 0, 0, MAX_UINT256, False)


def test_collateral_rounds_down_per_asset():
    # each asset floors separately: 1 wei of value lost per asset, not per account
    params = RiskParams([0], [10 * PCT], [5 * PCT], [0], [0], [0, 0], [0, 6], [WAD // 3, WAD // 3])
    markets = MarketTable([0], [0], [0])
    r = value([account(0, (1, 1), [])], markets, params, [WAD + 1])
    # 1 token of 0 decimals: (1e18 + 1) x 333...333 / 1e18 = 333333333333333333.333... -> floor
    # 1 unit of a 6-decimal token: (1e18 + 1) x 333...333 / 1e24 = 333333333333.333... -> floor
    # (one floor over the sum would give ...666667: the vault floors asset by asset)
    assert r.equity.tolist() == [333_333_333_333_333_333 + 333_333_333_333]


def test_settled_future_marks_at_settlement_and_leaves_netting():
    # ETH-FUT settled at 2200; index now 1800. Long 3 settled future, short 3 live perp.
    markets = MarketTable([0, 0, 1, 1], [0, 2200 * WAD, 0, 0], [0, 0, 0, 0])
    positions = [(ETH_FUT, 3 * WAD, 2000 * WAD, 0), (ETH_PERP, -3 * WAD, 2000 * WAD, 0)]
    r = value([account(1_000 * WAD, positions=positions)], markets, index=prices(1800 * WAD))
    equity = (1_000 + 3 * 200 + 3 * 200) * WAD  # future at settlement (+600), perp short (+600)
    im = 3 * 1800 * WAD // 10  # the short perp alone: the settled future nets nothing
    mm = 3 * 1800 * WAD // 20
    assert row(r) == (equity, im, mm, 2_200 * WAD * WAD // mm, False)
    book = AccountBook.from_states([account(positions=positions)], 3, 4)
    assert isolated_initial_margin(book, markets, PARAMS, prices(1800 * WAD)).tolist() == [im]


def test_funding_owed_rounds_up_and_pnl_rounds_down():
    size = WAD + 1  # 1 ETH and 1 wei of size
    funding = 7 * WAD + 3  # cumulative funding since entry, WAD USD per ETH
    markets = MarketTable([0, 0, 1, 1], [0, 0, 0, 0], [funding, 0, 0, 0])
    long = account(0, positions=[(ETH_PERP, size, 2000 * WAD, 0)])
    short = account(0, positions=[(ETH_PERP, -size, 2000 * WAD, 0)])
    r = value([long, short], markets, index=prices(2000 * WAD))
    # long owes ceil((1e18 + 1)(7e18 + 3) / 1e18) = ceil(7e18 + 10 + 3e-18) = 7e18 + 11
    # short is owed ceil(-(7e18 + 10 + 3e-18)) = -(7e18 + 10): receives one wei less
    assert r.equity.tolist() == [-(7 * WAD + 11), 7 * WAD + 10]
    # pnl of the short after a 1-wei move up: floor(-(1e18 + 1) / 1e18) = -2, not -1
    r = value([short], index=prices(2000 * WAD + 1))
    assert r.equity.tolist() == [-2]


def test_margin_charge_rounds_up():
    # 7 wei of ETH at 1 USD + 1 wei: 7 x (1e18 + 1) x 0.1e18 / 1e36 = 0.7000... -> 1 wei of IM
    r = value([account(0, positions=[(ETH_PERP, 7, WAD + 1, 0)])], index=prices(WAD + 1))
    assert row(r) == (0, 1, 1, 0, True)  # equity 0 < MM 1: liquidatable, health 0


def test_negative_equity_health_zero():
    r = value(
        [account(-1_000 * WAD, positions=[(ETH_PERP, WAD, 2_000 * WAD, 0)]), account(-5)],
        index=prices(1_500 * WAD),
    )
    assert row(r, 0) == (-1_500 * WAD, 150 * WAD, 75 * WAD, 0, True)
    # debt and nothing to maintain: health 0, liquidatable (equity < MM = 0)
    assert row(r, 1) == (-5, 0, 0, 0, True)


def test_no_positions_health_max():
    r = value([account(100 * WAD), account(0)], index=prices(2_000 * WAD))
    assert row(r, 0) == (100 * WAD, 0, 0, MAX_UINT256, False)
    assert row(r, 1) == (0, 0, 0, MAX_UINT256, False)
    f = margin_float(AccountBook.from_states([account(100 * WAD), account(0)], 3, 4), LIVE, PARAMS, prices(WAD))
    assert f.health_factor.tolist() == [np.inf, np.inf]


# ---------------------------------------------------------------- data model


def test_from_states_accepts_titanoboa_structs_and_web3_tuples():
    Position = namedtuple("PositionState", "market size entry_price funding_index")
    State = namedtuple("AccountState", "cash collateral positions")
    boa_like = [State(5, [1, 2, 3], [Position(2, -4, 6, 7)]), State(-1, [0, 0, 0], [])]
    web3_like = [(5, [1, 2, 3], [(2, -4, 6, 7)]), (-1, [0, 0, 0], [])]
    for states in (boa_like, web3_like):
        book = AccountBook.from_states(states, 3, 4)
        assert book.cash.tolist() == [5, -1]
        assert book.collateral.tolist() == [[1, 2, 3], [0, 0, 0]]
        assert book.size.tolist() == [[0, 0, -4, 0], [0, 0, 0, 0]]
        assert book.entry_price.tolist() == [[0, 0, 6, 0], [0, 0, 0, 0]]
        assert book.funding_index.tolist() == [[0, 0, 7, 0], [0, 0, 0, 0]]
    empty = AccountBook.from_states([], 3, 4)
    assert margin(empty, LIVE, PARAMS, prices(WAD)).equity.shape == (0,)
    MarketState = namedtuple(
        "MarketState", "underlying is_perpetual expiry settlement_price funding_rate funding_index"
    )
    table = MarketTable.from_states([MarketState(1, True, 0, 0, 5, -9), (0, False, 99, 1234, 0, 0)], 50)
    assert table.underlying.tolist() == [1, 0]
    assert table.settlement_price.tolist() == [0, 1234]
    assert table.funding_index.tolist() == [-9, 0]


def test_params_from_config():
    config = load_config()
    params = RiskParams.from_config(config)
    assert params.price_id.tolist() == [u.price_id for u in config.underlyings]
    assert params.im_rate.tolist() == [10 * PCT, 10 * PCT]
    assert params.asset_decimals.tolist() == [18, 8]
    assert params.asset_haircut.tolist() == [85 * PCT, 85 * PCT]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="collateral balances"):
        AccountBook.from_states([account(0, (1, 2))], 3, 4)
    with pytest.raises(ValueError, match="outside"):
        AccountBook.from_states([account(0, positions=[(4, 1, 1, 0)])], 3, 4)
    with pytest.raises(ValueError, match="twice"):
        AccountBook.from_states([account(0, positions=[(1, 1, 1, 0), (1, 2, 1, 0)])], 3, 4)
    with pytest.raises(TypeError, match="integers"):
        AccountBook.from_states([account(1.5)], 3, 4)
    book = AccountBook.from_states([account(1)], 3, 4)
    with pytest.raises(ValueError, match="price id"):
        margin(book, LIVE, PARAMS, [WAD, WAD])
    with pytest.raises(ValueError, match="markets"):
        margin(book, MarketTable([0], [0], [0]), PARAMS, prices(WAD))
    with pytest.raises(ValueError, match="negative"):
        margin(book, LIVE, PARAMS, [WAD, -WAD, WAD])
    with pytest.raises(ValueError, match="read-only"):
        book.cash[0] = 2
    # numpy integers become Python ints: an int64 x WAD product would overflow
    r = margin(AccountBook.from_states([account(np.int64(3))], 3, 4), LIVE, PARAMS, np.array(prices(WAD)))
    assert type(r.equity[0]) is int


# ---------------------------------------------------------------- random books


def test_valuation_splits_equity_into_cash_collateral_and_pnl_with_funding():
    # the long of the test above, 10 WETH at 85% and 1,000 cash, ETH at 2,100
    size = WAD + 1
    markets = MarketTable([0, 0, 1, 1], [0, 0, 0, 0], [7 * WAD + 3, 0, 0, 0])
    states = [account(1000 * WAD, (10 * WAD, 0, 0), [(ETH_PERP, size, 2000 * WAD, 0)])]
    book = AccountBook.from_states(states, PARAMS.n_assets, markets.n_markets)
    v = valuation(book, markets, PARAMS, prices(2100 * WAD))
    assert v.cash_value.tolist() == [1000 * WAD]
    assert v.collateral_value.tolist() == [[17_850 * WAD, 0, 0]]
    assert v.price_pnl[0, ETH_PERP] == 100 * WAD + 100  # (1e18 + 1) x 100 USD
    assert v.funding[0, ETH_PERP] == 7 * WAD + 11  # owed, rounded up
    assert v.unrealized_pnl[0].tolist() == [93 * WAD + 89, 0, 0, 0]
    assert v.equity.tolist() == [(1000 + 17_850 + 93) * WAD + 89]
    assert v.equity.tolist() == margin(book, markets, PARAMS, prices(2100 * WAD)).equity.tolist()


def test_valuation_equity_equals_margin_equity_on_random_books():
    rng = np.random.default_rng(7)
    for _ in range(100):
        book, markets, params, index = random_case(rng)
        v = valuation(book, markets, params, index)
        assert v.equity.tolist() == margin(book, markets, params, index).equity.tolist()
        assert (v.unrealized_pnl[np.asarray(book.size == 0, dtype=bool)] == 0).all()


def big(rng: np.random.Generator, shape, magnitude: int, signed: bool = True) -> np.ndarray:
    """Python ints up to ~magnitude at full wei resolution (beyond int64)."""
    hi = rng.integers(-(10**9) if signed else 0, 10**9, size=shape).astype(object)
    lo = rng.integers(0, 10**9, size=shape).astype(object)
    wei = rng.integers(0, 1000, size=shape).astype(object)
    return hi * (magnitude // 10**9) + lo * (magnitude // 10**18 or 1) + wei


def random_case(rng: np.random.Generator):
    n_u = int(rng.integers(1, 5))
    n_p = n_u + int(rng.integers(0, 3))
    n_a = int(rng.integers(0, 5))
    n_m = int(rng.integers(1, 9))
    n = int(rng.integers(1, 30))
    im = rng.integers(PCT, WAD, size=n_u).astype(object)
    mm = np.array([int(rng.integers(PCT // 2, v + 1)) for v in im], dtype=object)
    sim = np.array([int(rng.integers(0, v + 1)) for v in im], dtype=object)
    smm = np.array([int(rng.integers(0, min(a, b) + 1)) for a, b in zip(sim, mm)], dtype=object)
    params = RiskParams(
        price_id=rng.integers(0, n_p, size=n_u),
        im_rate=im,
        mm_rate=mm,
        spread_im_rate=sim,
        spread_mm_rate=smm,
        asset_price_id=rng.integers(0, n_p, size=n_a),
        asset_decimals=rng.choice([0, 2, 6, 8, 18], size=n_a),
        asset_haircut=rng.integers(0, WAD + 1, size=n_a).astype(object),
    )
    index = big(rng, n_p, 10**22, signed=False) + 1
    # the settlement asset's price and depeg rule, from a generator of their own (the rest of the
    # case is drawn as before): unset, absent from the prices, missing (0), or near par
    drng = np.random.default_rng(int(rng.integers(2**32)))
    if drng.random() < 0.75:
        sid = int(drng.integers(0, n_p + 1))  # n_p: beyond the prices given, cash at par
        params = dataclasses.replace(
            params,
            settlement_price_id=sid,
            depeg_threshold=int(drng.integers(9 * 10**17, WAD + 1)),
            depeg_factor=int(drng.integers(0, 3 * WAD + 1)),
        )
        if sid < n_p:
            used = set(params.price_id.tolist()) | set(params.asset_price_id.tolist())
            missing = drng.random() < 0.15 and sid not in used  # 0 elsewhere: "no valid price" reverts
            index[sid] = 0 if missing else int(drng.integers(6 * 10**17, 13 * 10**17))
    settled = rng.random(n_m) < 0.25
    markets = MarketTable(
        underlying=rng.integers(0, n_u, size=n_m),
        settlement_price=np.where(settled, big(rng, n_m, 10**22, signed=False) + 1, 0),
        funding_index=big(rng, n_m, 10**20),
    )
    held = rng.random((n, n_m)) < 0.6
    size = np.where(held, big(rng, (n, n_m), 10**24), 0)
    size = np.where(rng.random((n, n_m)) < 0.05, rng.integers(-9, 10, size=(n, n_m)).astype(object), size)  # dust
    book = AccountBook(
        cash=big(rng, n, 10**24),
        collateral=np.where(rng.random((n, n_a)) < 0.5, big(rng, (n, n_a), 10**24, signed=False), 0),
        size=size,
        entry_price=np.where(held, big(rng, (n, n_m), 10**22, signed=False), 0),
        funding_index=np.where(held, big(rng, (n, n_m), 10**20), 0),
    )
    return book, markets, params, index


def test_vectorized_equals_loop_and_float_is_close_on_random_books():
    rng = np.random.default_rng(20240601)
    accounts = 0
    for _ in range(200):
        book, markets, params, index = random_case(rng)
        exact = margin(book, markets, params, index)
        assert_same(exact, margin_loop(book, markets, params, index))
        accounts += book.n_accounts

        fast = margin_float(book, markets, params, index)
        # scale of each account's amounts: float error is relative to these, not to their sum
        mark = np.where(markets.live, index[params.price_id[markets.underlying]], markets.settlement_price)
        gross = (abs(book.size) * (mark + book.entry_price + abs(markets.funding_index) + abs(book.funding_index))).sum(
            axis=1
        ) // WAD
        collateral = (book.collateral * index[params.asset_price_id]).sum(axis=1)
        scale = np.array((abs(book.cash) + collateral + gross + 1).tolist(), dtype=float)
        # rounding on chain moves equity by up to one wei per floor and requirements by one per ceiling
        wei = 2 * markets.n_markets + params.n_assets + 2 * params.n_underlyings + 1
        for field in ("equity", "initial_margin", "maintenance_margin"):
            want = getattr(exact, field).astype(float)
            assert np.all(np.abs(getattr(fast, field) - want) <= 1e-9 * np.maximum(np.abs(want), scale) + wei), field
        hf = exact.health_factor
        top = np.array([v == MAX_UINT256 for v in hf], dtype=bool)
        assert np.all(np.isinf(fast.health_factor[top]))
        eq, mm = exact.equity.astype(float), exact.maintenance_margin.astype(float)
        finite = ~top & (mm > 0) & (eq > 0)
        rel = (1e-9 * scale[finite] + wei) / eq[finite] + (1e-9 * mm[finite] + wei) / mm[finite]
        want = hf[finite].astype(float)
        assert np.all(np.abs(fast.health_factor[finite] - want) <= rel * want + 1)
        assert np.all(fast.health_factor[~top & (eq < -1e-9 * scale - wei)] == 0)
        clear = np.abs(eq - mm) > 1e-9 * scale + 2 * wei
        assert fast.liquidatable[clear].tolist() == exact.liquidatable[clear].tolist()
    assert accounts > 2000


def test_accounts_split_into_blocks_give_the_same_result(monkeypatch):
    import keeper.risk.margin as margin_module

    rng = np.random.default_rng(99)
    for _ in range(40):
        book, markets, params, index = random_case(rng)
        want = margin_loop(book, markets, params, index)
        monkeypatch.setattr(margin_module, "BLOCK", int(rng.integers(1, 6)))
        assert_same(margin(book, markets, params, index), want)


def test_accounts_needing_an_unavailable_price_are_flagged_and_never_liquidatable():
    """The oracle returns 0 for a price id without a valid feed; the contract then reverts
    "no valid price" for accounts that need it, and values the others normally."""
    from keeper.risk.margin import AccountBook, MarketTable, RiskParams, margin, margin_loop

    W = 10**18
    params = RiskParams(
        price_id=np.array([0, 1]),
        im_rate=np.array([W // 10, W // 10], dtype=object),
        mm_rate=np.array([W // 20, W // 20], dtype=object),
        spread_im_rate=np.array([W // 50, W // 50], dtype=object),
        spread_mm_rate=np.array([W // 100, W // 100], dtype=object),
        asset_price_id=np.array([1]),
        asset_decimals=np.array([8]),
        asset_haircut=np.array([W * 85 // 100], dtype=object),
    )
    markets = MarketTable(
        underlying=np.array([0, 1]),
        settlement_price=np.array([0, 0], dtype=object),
        funding_index=np.array([0, 0], dtype=object),
    )
    z = lambda *rows: np.array(rows, dtype=object)  # noqa: E731
    book = AccountBook(
        cash=z(-100 * W, -100 * W, 0),
        collateral=z([0], [10**8], [0]),  # account 1 holds BTC collateral
        size=z([W, 0], [0, 0], [0, W]),  # account 0 long ETH, account 2 long BTC
        entry_price=z([3000 * W, 0], [0, 0], [0, 30000 * W]),
        funding_index=z([0, 0], [0, 0], [0, 0]),
    )
    prices = np.array([2000 * W, 0], dtype=object)  # BTC has no valid feed
    for fn in (margin, margin_loop):
        r = fn(book, markets, params, prices)
        assert r.priced.tolist() == [True, False, False]
        assert r.liquidatable.tolist() == [True, False, False]


# ------------------------------------------------------------------ settlement-asset depeg


DEPEG = dataclasses.replace(PARAMS, settlement_price_id=3, depeg_threshold=98 * PCT, depeg_factor=WAD)


def with_usdc(usdc: int) -> list[int]:
    return prices(2000 * WAD) + [usdc]


def test_depeg_rule_hand_calculated():
    """`CollateralVault._cash_value`: positive cash at min(p, 1) - factor x max(threshold - p, 0),
    rounded down, never below 0; debt at max(p, 1) rounded up; no price = par."""
    cash = [100_000 * WAD, -50_000 * WAD, -1, 0]
    # 0.95 with threshold 0.98 and factor 1: 0.95 - 0.03 = 0.92
    assert cash_value(cash, DEPEG, with_usdc(95 * PCT)).tolist() == [92_000 * WAD, -50_000 * WAD, -1, 0]
    assert cash_value(cash, DEPEG, with_usdc(99 * PCT)).tolist() == [99_000 * WAD, -50_000 * WAD, -1, 0]
    assert cash_value(cash, DEPEG, with_usdc(102 * PCT)).tolist() == [100_000 * WAD, -51_000 * WAD, -2, 0]
    assert cash_value(cash, DEPEG, with_usdc(0)).tolist() == cash  # no valid price
    assert cash_value(cash, DEPEG, prices(2000 * WAD)).tolist() == cash  # price id beyond the prices
    assert cash_value(cash, PARAMS, with_usdc(50 * PCT)).tolist() == cash  # unset
    deep = dataclasses.replace(DEPEG, depeg_factor=3 * WAD)
    assert cash_value(cash, deep, with_usdc(70 * PCT)).tolist() == [0, -50_000 * WAD, -1, 0]
    # a rounding that matters: odd cash and factor
    odd = dataclasses.replace(DEPEG, depeg_factor=1_234_567_890_123_456_789)
    px = 95_123_457 * 10**10
    c = 123_456_789 * 10**12
    unit = px * WAD - odd.depeg_factor * (98 * PCT - px)
    assert c * unit % WAD**2 != 0
    assert cash_value([c], odd, with_usdc(px)).tolist() == [c * unit // WAD**2]


def test_depeg_makes_a_healthy_account_liquidatable():
    """100,000 USDC, long 450 ETH from 2,000 with ETH at 1,900 (P&L -45,000, MM 42,750): healthy
    at par, liquidatable once USDC counts below 0.8775 (p < 0.92875 with threshold 0.98, factor 1)."""
    trader = account(100_000 * WAD, positions=[(ETH_PERP, 450 * WAD, 2000 * WAD, 0)])
    index = lambda usdc: [1900 * WAD, 30_000 * WAD, 3 * WAD, usdc]  # noqa: E731
    at_par = value([trader], params=DEPEG, index=index(WAD))
    assert at_par.equity.tolist() == [55_000 * WAD] and not at_par.liquidatable[0]
    assert at_par.maintenance_margin.tolist() == [42_750 * WAD]
    edge = 92_875 * 10**13
    assert value([trader], params=DEPEG, index=index(edge)).equity.tolist() == [42_750 * WAD]  # = MM: not yet
    assert not value([trader], params=DEPEG, index=index(edge)).liquidatable[0]
    low = value([trader], params=DEPEG, index=index(88 * PCT))  # the March 2023 low
    assert low.equity.tolist() == [33_000 * WAD] and low.liquidatable[0]
    fast = margin_float(AccountBook.from_states([trader], 3, 4), LIVE, DEPEG, index(88 * PCT))
    assert abs(fast.equity[0] - 33_000 * WAD) < 1e-9 * 33_000 * WAD and fast.liquidatable[0]


def test_depeg_params_from_config():
    config = load_config()
    params = RiskParams.from_config(config)
    assert config.depeg is not None
    assert params.settlement_price_id == config.price_id("USDC") == 2
    assert (params.depeg_threshold, params.depeg_factor) == (98 * PCT, WAD)
