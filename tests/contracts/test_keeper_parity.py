"""The keeper's risk engine equals the contract to the wei on random portfolios.

Each case deploys the protocol with random token decimals (including a 0- or 2-decimal asset),
random feed decimals and random haircuts, funds random accounts with USDC / WETH / WBTC / GOV,
trades them against each other on all four markets at prices within 4.5% of the index in two
rounds (prices move and funding accrues between rounds), then moves every feed by 20-35%, lets
funding accrue (and, in two cases of three, settles a future), and compares `keeper.risk.margin.margin`
on `account_states` / `market_states` / `index_prices` with `margin_summaries` and `is_liquidatable`.
Every case also lists the settlement asset's USDC / USD price with a random depeg rule (the vault's
`_cash_value`) and values the accounts with USDC below the threshold, above par (debt counts more)
or without a valid price (cash at par): `DEPEG_PRICES`.
"""

from __future__ import annotations

import dataclasses

import boa
import numpy as np
import pytest

from keeper.config import AssetConfig, DepegConfig, MarketConfig, PriceIdConfig, load_config
from keeper.params import bounds
from keeper.risk.margin import AccountBook, MarketTable, RiskParams, margin, margin_loop
from tests.boa_protocol import CONTRACT_TESTS_CONFIG, WAD, BoaProtocol, republish

ACCOUNTS = 72
CASES = [(11, False), (12, True), (13, True)]  # (seed, settle ETH-FUT before valuing)
# USDC / USD at the valuation point, per case: depegged below any threshold, above par, no price
DEPEG_PRICES = [0.93712345, 1.01734567, 0.0]


def random_config(rng: np.random.Generator, case: int):
    """The local config with random feed decimals and haircuts; token decimals are drawn so that
    the cases together cover 6, 8 and 18 for WETH and WBTC, and 0 and 2 for GOV."""
    base = load_config(CONTRACT_TESTS_CONFIG)
    feed = lambda: int(rng.choice([6, 8, 18]))  # noqa: E731
    price_ids = (
        dataclasses.replace(base.price_ids[0], feed_decimals=feed()),
        dataclasses.replace(base.price_ids[1], feed_decimals=feed()),
        PriceIdConfig("GOV", feed(), 3, 3600),
        PriceIdConfig("USDC", int(np.random.default_rng(100 + case).choice([6, 8, 18])), 1, 86400),
    )
    # the depeg rule from its own generator, so that the rest of each case is drawn as before
    drng = np.random.default_rng(200 + case)
    depeg = DepegConfig(3, int(drng.integers(9 * 10**17, WAD + 1)), int(drng.integers(0, 3 * WAD + 1)))
    cover = np.random.default_rng(0)  # same permutations in every case: each case takes its column
    decimals = [int(cover.permutation([6, 8, 18])[case]), int(cover.permutation([6, 8, 18])[case]), [0, 2, 0][case]]
    haircut = lambda lo: int(rng.integers(lo, WAD + 1))  # noqa: E731  # odd WAD values: rounding matters
    assets = tuple(
        AssetConfig(symbol, dec, pid, haircut(lo), 10**12 * 10**dec)
        for symbol, dec, pid, lo in zip(("WETH", "WBTC", "GOV"), decimals, (0, 1, 2), (WAD // 2, WAD // 2, WAD // 4))
    )
    markets = (
        MarketConfig("ETH-PERP", 0, None),
        MarketConfig("ETH-FUT", 0, 1.0),  # expires after a day: settled in some cases
        MarketConfig("BTC-PERP", 1, None),
        MarketConfig("BTC-FUT", 1, 90.0),
    )
    return dataclasses.replace(
        base,
        settlement_decimals=int(rng.choice([6, 18])),
        price_ids=price_ids,
        assets=assets,
        markets=markets,
        depeg=depeg,
    )


def publish(p: BoaProtocol, rng: np.random.Generator, usd: dict[str, float], move: float, least: float = 0.0) -> None:
    """Move every feed up or down by a random fraction in [`least`, `move`] and publish it now
    (fresh after time travel)."""
    for symbol in usd:
        usd[symbol] *= 1 + rng.choice([-1, 1]) * rng.uniform(least, move)
        dec = p.deployment.feed_decimals[symbol]
        p.feeds[symbol].set_answer(int(usd[symbol] * 10**dec) + int(rng.integers(0, 10 ** min(dec, 6))))


def odd_amount(rng: np.random.Generator, whole: float, decimals: int) -> int:
    """About `whole` tokens, in token units with random low digits."""
    return max(1, int(whole * 10**decimals) + int(rng.integers(0, 10 ** min(decimals, 9) + 1)))


def populate(p: BoaProtocol, rng: np.random.Generator, settle: bool) -> list:
    """Fund, trade, move prices and let funding accrue; returns the users (the first two empty).

    Trades dominate the run time (a `match_orders` executes ~20k opcodes in py-evm), so every funded
    account trades about once per round, in two rounds."""
    users = [p.new_user() for _ in range(ACCOUNTS)]
    usd = {"ETH": 2000.0, "BTC": 30000.0, "GOV": 3.0}
    budget = {}
    for user in users[2:]:
        value = 0.0
        if rng.random() < 0.75:
            dollars = float(rng.uniform(500, 200_000))
            p.deposit(user, "USDC", odd_amount(rng, dollars, p.config.settlement_decimals))
            value += dollars
        if value == 0 or rng.random() < 0.4:  # accounts without cash hold collateral only
            symbol, price = [("WETH", usd["ETH"]), ("WBTC", usd["BTC"]), ("GOV", usd["GOV"])][int(rng.integers(3))]
            dollars = float(rng.uniform(500, 100_000))
            p.deposit(user, symbol, odd_amount(rng, dollars / price, p.deployment.asset_decimals[symbol]))
            value += dollars * 0.5
        budget[user.address] = value
    traders = users[2:]
    markets = list(p.deployment.markets)
    traded: dict[str, set[str]] = {}
    filled = failed = 0
    for pairs in (len(traders) // 2, len(traders) // 3):
        order = rng.permutation(len(traders))
        for i in range(pairs):
            buyer, seller = traders[order[2 * i]], traders[order[2 * i + 1]]
            # half the time trade a market one side already holds: fills realize PnL into cash,
            # which is how collateral-only accounts end up with negative cash
            held = sorted(traded.get(buyer.address, set()) | traded.get(seller.address, set()))
            if held and rng.random() < 0.5:
                market = held[int(rng.integers(len(held)))]
            else:
                market = markets[int(rng.integers(len(markets)))]
            price = usd["ETH" if market.startswith("ETH") else "BTC"] * (1 + rng.uniform(-0.045, 0.045))
            notional = min(budget[buyer.address], budget[seller.address]) * rng.uniform(0.3, 7.0)
            size = int(notional / price * WAD) + int(rng.integers(0, 10**12))
            try:
                p.trade(buyer, seller, market, size, int(price * WAD) + int(rng.integers(0, 10**15)))
                filled += 1
                for user in (buyer, seller):
                    traded.setdefault(user.address, set()).add(market)
            except boa.BoaError:
                failed += 1  # below initial margin: skipped
        boa.env.time_travel(seconds=int(rng.integers(600, 3000)))
        publish(p, rng, usd, 0.03)
    assert filled > 4 * failed, (filled, failed)

    # the valuation point: prices jump, funding accrues, maybe a future settles
    if settle:
        boa.env.time_travel(seconds=86_400 + int(rng.integers(60, 3600)))
        publish(p, rng, usd, 0.1)
        p.engine.settle_market(p.deployment.markets["ETH-FUT"])
    else:
        boa.env.time_travel(seconds=int(rng.integers(3600, 12 * 3600)))
    publish(p, rng, usd, 0.35, least=0.2)  # one side of every market loses big
    return users


def params_on_chain(p: BoaProtocol) -> RiskParams:
    """The rates and haircuts in force, as `ProtocolClient.risk_params` reads them."""
    us = [p.engine.rates_now(u) for u in range(p.engine.underlying_count())]
    assets = [p.vault.assets(a) for a in range(p.vault.asset_count())]
    haircuts = [p.vault.haircut_now(a) for a in range(p.vault.asset_count())]
    return RiskParams(
        price_id=[u[0] for u in us],
        im_rate=[u[1] for u in us],
        mm_rate=[u[2] for u in us],
        spread_im_rate=[u[3] for u in us],
        spread_mm_rate=[u[4] for u in us],
        asset_price_id=[a[2] for a in assets],
        asset_decimals=[a[1] for a in assets],
        asset_haircut=haircuts,
        settlement_price_id=p.vault.settlement_price_id() if p.vault.settlement_priced() else -1,
        depeg_threshold=p.vault.depeg_threshold(),
        depeg_factor=p.vault.depeg_factor(),
    )


@pytest.fixture
def isolated_env():
    """Roll back everything a case deploys, and the sender it sets."""
    eoa = boa.env.eoa
    with boa.env.anchor():
        yield
    boa.env.eoa = eoa


@pytest.mark.parametrize("case", range(len(CASES)))
def test_keeper_margin_equals_contract(isolated_env, case):
    seed, settle = CASES[case]
    rng = np.random.default_rng(seed)
    config = random_config(rng, case)
    p = BoaProtocol.deploy(config)
    users = populate(p, rng, settle)
    addresses = [u.address for u in users]

    params = RiskParams.from_config(config)
    chain = params_on_chain(p)
    for field in dataclasses.fields(RiskParams):
        mine, theirs = getattr(params, field.name), getattr(chain, field.name)
        if isinstance(mine, np.ndarray):
            mine, theirs = mine.tolist(), theirs.tolist()
        assert mine == theirs, field.name
    # the settlement asset's price at the valuation point (0: no valid price, cash at par)
    usdc = DEPEG_PRICES[case]
    dec = p.deployment.feed_decimals["USDC"]
    p.feeds["USDC"].set_answer(int(usdc * 10**dec) + (int(rng.integers(1, 10 ** min(dec, 6))) if usdc else 0))

    states = p.lens.account_states(addresses)
    markets = MarketTable.from_states(p.lens.market_states(), boa.env.evm.patch.timestamp)
    prices = p.oracle.index_prices()
    book = AccountBook.from_states(states, p.vault.asset_count(), p.engine.market_count())
    result = margin(book, markets, params, prices)
    summaries = p.lens.margin_summaries(addresses)

    for i, summary in enumerate(summaries):
        assert result.equity[i] == summary.equity, i
        assert result.initial_margin[i] == summary.initial_margin, i
        assert result.maintenance_margin[i] == summary.maintenance_margin, i
        assert result.health_factor[i] == summary.health_factor, i
        assert bool(result.liquidatable[i]) == p.engine.is_liquidatable(addresses[i]), i
    loop = margin_loop(book, markets, params, prices)
    assert loop.equity.tolist() == result.equity.tolist()

    # the case exercised what it should
    held = (book.size != 0).sum(axis=1)
    assert (held >= 2).any() and (held == 0).any()
    assert result.liquidatable.any() and not result.liquidatable.all()
    assert (book.cash < 0).any()
    usdc_price = prices[p.deployment.price_ids["USDC"]]
    if usdc:  # the rule changed the value of cash (positive below the threshold, debt above par)
        moved = (
            result.equity != margin(book, markets, dataclasses.replace(params, settlement_price_id=-1), prices).equity
        )
        assert np.asarray(moved, dtype=bool).any() and usdc_price != WAD
    else:
        assert usdc_price == 0
    assert (book.collateral != 0).any(axis=0).all()
    assert all(markets.funding_index[m] != 0 for m in (0, 2))  # both perpetuals accrued funding
    assert (book.funding_index != 0).any()
    if settle:
        assert markets.settlement_price[1] != 0 and (book.size[:, 1] != 0).any()

    # a third of the way into a phase-in: every rate raised, every haircut cut; the keeper's
    # params (the values in force) still give the contract's figures to the wei
    for u in range(p.engine.underlying_count()):
        p.engine.set_underlying_params(
            u, *(min(WAD, 2 * r) for r in tuple(p.engine.underlyings(u))[1:]), sender=p.admin
        )
    for a in range(p.vault.asset_count()):
        p.vault.set_asset_params(a, p.vault.assets(a)[3] // 2, 2**256 - 1, sender=p.admin)
    boa.env.time_travel(seconds=bounds.REQUIREMENT_RAMP // 3)
    for feed in p.feeds.values():  # fresh again, same answers
        republish(feed.address)
    ramped = params_on_chain(p)
    assert (
        ramped.mm_rate.tolist() != params.mm_rate.tolist()
        and ramped.asset_haircut.tolist() != params.asset_haircut.tolist()
    )
    states = p.lens.account_states(addresses)
    markets = MarketTable.from_states(p.lens.market_states(), boa.env.evm.patch.timestamp)
    book = AccountBook.from_states(states, p.vault.asset_count(), p.engine.market_count())
    result = margin(book, markets, ramped, p.oracle.index_prices())
    for i, summary in enumerate(p.lens.margin_summaries(addresses)):
        assert (result.equity[i], result.initial_margin[i], result.maintenance_margin[i]) == tuple(summary)[:3], i
