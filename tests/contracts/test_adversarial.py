"""Adversarial tests: one named test (or small group) per class of real DeFi incident.

Each test states, in its docstring, the incident and what would go wrong here if the protocol
repeated it; each would fail if the protocol were vulnerable. Tests that document a gap that is
really there are marked ``xfail(strict=True)`` with the reason, so they turn into failures (and
must be un-marked) the day the gap is closed.

Already covered elsewhere and referenced rather than duplicated:
- many small liquidations vs one large (the ladder of falling prices):
  ``test_liquidation.py::test_many_small_liquidations_do_not_pay_more``;
- signature replay, expired orders, another chain id / verifying contract, malleable high-s,
  bad length / v: ``test_trading.py::test_nonce_replay``, ``test_order_expired``,
  ``test_invalid_signature_tampered_order``, ``test_malleable_signature_rejected``,
  ``test_bad_signature_length_and_v``;
- basic donations to the vault: ``test_vault.py::test_tokens_sent_directly_are_ignored``;
- settle_market dropping a basis trade's spread credit (an Euler-class state change that made
  a healthy account liquidatable, fixed by fading the future's netting over its last week):
  ``test_invariants.py::test_settle_market_keeps_initial_margin``; the Euler test below also
  settles a basis trade held exactly at initial margin.
"""

from __future__ import annotations

from fractions import Fraction

import boa
import pytest
from eth_abi import decode
from eth_keys import keys

from keeper.chain.orders import Order, order_digest, sign_order
from tests.boa_protocol import (
    WAD,
    ceil_div,
    deploy_unique,
    deployer,
    events,
    liquidate,
    named,
    now,
    replace_feeds,
    source_deployer,
)

ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = 0, 1, 2, 3
ETH, BTC = 0, 1  # price ids
WETH_ID, WBTC_ID = 0, 1
HAIRCUT = 85 * 10**16
IM_RATE, MM_RATE = 10**17, 5 * 10**16
PENALTY, SHARE, TARGET = 2 * 10**16, 5 * 10**17, 125 * 10**16
BAND = 5 * 10**16
USDC = 10**6  # one dollar in USDC units
MAX_UINT = 2**256 - 1
ZERO = "0x0000000000000000000000000000000000000000"

_nonce = [7 * 10**12]


def make(p, user, market, size, price, *, nonce=None, deadline=None):
    """A signed order of `user` (fresh nonce unless given)."""
    if nonce is None:
        _nonce[0] += 1
        nonce = _nonce[0]
    order = Order(user.address, market, size, price, nonce, now() + 3600 if deadline is None else deadline)
    return order.as_tuple(), sign_order(order, user.key, boa.env.evm.patch.chain_id, p.matching.address)


def trade(p, buyer, seller, market, size, price):
    m, ms = make(p, buyer, market, size, price)
    t, ts = make(p, seller, market, -size, price)
    p.matching.match_orders(m, ms, t, ts)


def set_eth(p, answer8: int):
    """Publish an exact 8-decimal ETH answer."""
    p.feeds["ETH"].set_answer(answer8)


def summary(p, who) -> tuple:
    return tuple(p.engine.margin_summary(who if isinstance(who, str) else who.address))


def meets_im(p, who) -> bool:
    return p.engine.meets_initial_margin(who if isinstance(who, str) else who.address)


def world(p, *accounts) -> dict:
    """Every piece of protocol state the tests can observe for `accounts`, plus the globals."""
    v, e = p.vault, p.engine
    addrs = [a if isinstance(a, str) else a.address for a in accounts]
    tokens = [p.usdc] + list(p.tokens.values())
    return {
        "fund": v.insurance_fund(),
        "bad_debt": v.bad_debt(),
        "settlement_total": v.settlement_total(),
        "asset_totals": [v.assets(i).total for i in range(v.asset_count())],
        "markets": [tuple(e.markets(i)) for i in range(e.market_count())],
        "market_states": [tuple(x) for x in p.lens.market_states()],
        "accounts": [
            (
                v.cash(a),
                list(v.collateral_balances(a)),
                [tuple(x) for x in p.lens.account_states([a])[0].positions],
                list(e.open_markets(a)),
                tuple(e.margin_summary(a)),
            )
            for a in addrs
        ],
        "token_balances": [[t.balanceOf(x) for x in [v.address] + addrs] for t in tokens],
    }


# ====================================================================== Mango Markets 2022


def test_mango_off_market_pump_refused_and_unrealized_profit_is_not_cash(protocol):
    """Mango Markets, Oct 2022: two colluding accounts traded MNGO perps with each other to
    pump the mark price, then borrowed the whole treasury against the resulting unrealized
    profit. Here (1) a self-matched trade far from the index is refused by the price band,
    (2) a trade at the band edge does not move the mark (the mark is the oracle index, not the
    last trade), and (3) a real, large unrealized profit can neither be withdrawn as cash nor
    borrowed against (cash can never be made negative by a withdrawal); only realized cash is
    withdrawable, and only down to initial margin."""
    p = protocol
    e, v, usdc = p.engine, p.vault, p.usdc
    a, b = p.new_user(), p.new_user()  # colluders
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 10_000)

    # (1) pump by 50%, and by one wei beyond the 5% band: refused
    for price in (3000 * WAD, 2100 * WAD + 1, 1900 * WAD - 1):
        m, ms = make(p, a, ETH_PERP, 10 * WAD, price)
        t, ts = make(p, b, ETH_PERP, -10 * WAD, price)
        with boa.reverts("engine: price too far from index"):
            p.matching.match_orders(m, ms, t, ts)
    assert e.positions(a.address, ETH_PERP).size == 0

    # (2) at the band edge the trade goes through but the mark does not follow it
    trade(p, a, b, ETH_PERP, 10 * WAD, 2100 * WAD)
    assert p.oracle.index_price(ETH) == 2000 * WAD
    # valued at the index: the buyer is down 1000, the seller up 1000 (unrealized)
    assert summary(p, a) == (9_000 * WAD, 2_000 * WAD, 1_000 * WAD, 9 * WAD)
    assert summary(p, b) == (11_000 * WAD, 2_000 * WAD, 1_000 * WAD, 11 * WAD)
    assert v.cash(b.address) == 10_000 * WAD  # the "profit" is not cash
    with boa.env.prank(b.address):
        with boa.reverts("vault: insufficient cash"):
            v.withdraw(usdc.address, 10_000 * USDC + 1)

    # (3) a real move: d is long 10 ETH from c at 2000, ETH doubles to 4000 on the oracle
    c, d = p.new_user(), p.new_user()
    p.deposit_usd(c, 1_000_000)
    p.deposit_usd(d, 10_000)
    trade(p, d, c, ETH_PERP, 10 * WAD, 2000 * WAD)
    set_eth(p, 4000 * 10**8)
    assert summary(p, d)[:2] == (30_000 * WAD, 4_000 * WAD)  # +20,000 unrealized
    with boa.env.prank(d.address):
        with boa.reverts("vault: insufficient cash"):
            v.withdraw(usdc.address, 10_000 * USDC + 1)
        v.withdraw(usdc.address, 10_000 * USDC)  # its own deposit, IM still met
        # nothing left to withdraw: no borrowing against the 20,000 of unrealized profit
        with boa.reverts("vault: insufficient cash"):
            v.withdraw(usdc.address, 1)
    assert v.cash(d.address) == 0
    assert summary(p, d)[:2] == (20_000 * WAD, 4_000 * WAD)

    # sell half at 4000: a fill realizes the whole position's PnL (entry resets to 4000), so
    # cash is 20,000; then ETH falls to 2200: equity 20,000 - 5 * 1,800 = 11,000, IM 1,100
    trade(p, c, d, ETH_PERP, 5 * WAD, 4000 * WAD)
    assert v.cash(d.address) == 20_000 * WAD
    assert tuple(e.positions(d.address, ETH_PERP))[:2] == (5 * WAD, 4000 * WAD)
    set_eth(p, 2200 * 10**8)
    assert summary(p, d)[:2] == (11_000 * WAD, 1_100 * WAD)
    # realized cash is withdrawable only down to IM: 9,900 of the 20,000
    with boa.env.prank(d.address):
        with boa.reverts("vault: below initial margin"):
            v.withdraw(usdc.address, 9_900 * USDC + 1)
        v.withdraw(usdc.address, 9_900 * USDC)
        with boa.reverts("vault: below initial margin"):
            v.withdraw(usdc.address, 1)
    assert summary(p, d)[:2] == (1_100 * WAD, 1_100 * WAD)
    assert v.cash(d.address) == 10_100 * WAD
    assert usdc.balanceOf(d.address) == 19_900 * USDC


def test_mango_underwater_account_cannot_dump_value_to_a_colluder(protocol):
    """Mango Markets, Oct 2022, second half: the attacker extracted value by trading between
    two accounts it controlled, leaving one of them with debt the protocol had to eat. Here an
    account already below maintenance margin (equity 1,000 against MM 4,550) sells its 50 ETH
    long to its own second account at index - 5% (inside the band). The trade only reduces
    risk, so `_trade_allowed` accepts it although it moves 4,550 of value to the colluder and
    leaves the first account at -3,550. An honest liquidation instead would have closed the
    position at the index and taken at most the remaining 1,000 as penalty: no bad debt.
    Repro: deposit 10,000; long 50 ETH-PERP at 2000 vs B; ETH -> 1820; B buys 50 from A at 1729;
    liquidate A -> bad_debt 3,550, pair equity +3,550."""
    p = protocol
    v = p.vault
    a, b, stranger = p.new_user(), p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 1_000_000)
    p.deposit_usd(stranger, 1_000_000)
    trade(p, a, b, ETH_PERP, 50 * WAD, 2000 * WAD)
    set_eth(p, 1820 * 10**8)
    assert summary(p, a)[:3] == (1_000 * WAD, 9_100 * WAD, 4_550 * WAD)
    assert p.engine.is_liquidatable(a.address)
    pair_before = p.equity(a.address) + p.equity(b.address)
    fund_before = v.insurance_fund()

    # the dump: 1729 = 1820 * 0.95, exactly on the band
    try:
        trade(p, b, a, ETH_PERP, 50 * WAD, 1729 * WAD)
    except boa.BoaError:
        pass  # refusing it is one acceptable fix
    if p.engine.is_liquidatable(a.address):
        liquidate(p, stranger, a)

    assert v.bad_debt() == 0
    assert v.insurance_fund() >= fund_before
    assert p.equity(a.address) + p.equity(b.address) <= pair_before


# ====================================================================== Compound DAI 2020 / bZx 2020


def _three_eth_feeds(p, answers8=(2000 * 10**8,) * 3):
    factory = deployer("MockAggregator")
    feeds = [deploy_unique(factory, 8, "ETH / USD", x) for x in answers8]
    replace_feeds(p.oracle, ETH, [f.address for f in feeds], [3600] * 3)
    assert p.oracle.index_price(ETH) == 2000 * WAD
    return feeds


def _long_and_short(p):
    """a long and b short 40 ETH at 2000 with 10,000 each: health 2.5, IM 8,000, MM 4,000."""
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 10_000)
    trade(p, a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    for x in (a, b):
        assert summary(p, x) == (10_000 * WAD, 8_000 * WAD, 4_000 * WAD, 25 * 10**17)
    return a, b


@pytest.mark.parametrize("spike", [20_000 * 10**8, 1], ids=["10x", "1 wei"])
def test_compound_bzx_one_manipulated_feed_of_three_changes_nothing(protocol, spike):
    """Compound DAI (Nov 2020, one Coinbase price of DAI spiked to 1.30 and liquidated ~$89M)
    and bZx (Feb 2020, one manipulable DEX price): a single bad source must not move the index.
    With three feeds, one spiking 10x or collapsing to 1 wei leaves the median exactly where it
    was: no account changes value or becomes liquidatable, and the trade band stays centred on
    the true price (a trade one wei outside it is still refused)."""
    p = protocol
    feeds = _three_eth_feeds(p)
    a, b = _long_and_short(p)
    before = world(p, a, b)
    feeds[2].set_answer(spike)
    assert p.oracle.index_price(ETH) == 2000 * WAD
    assert p.oracle.index_prices() == [2000 * WAD, 30_000 * WAD, WAD]  # ETH, BTC, USDC
    assert world(p, a, b) == before
    assert not p.engine.is_liquidatable(a.address) and not p.engine.is_liquidatable(b.address)
    c, d = p.new_user(), p.new_user()
    p.deposit_usd(c, 100_000)
    p.deposit_usd(d, 100_000)
    for bad in (2100 * WAD + 1, 1900 * WAD - 1):
        m, ms = make(p, c, ETH_PERP, WAD, bad)
        t, ts = make(p, d, ETH_PERP, -WAD, bad)
        with boa.reverts("engine: price too far from index"):
            p.matching.match_orders(m, ms, t, ts)
    trade(p, c, d, ETH_PERP, WAD, 2100 * WAD)
    trade(p, d, c, ETH_PERP, WAD, 1900 * WAD)
    # a liquidation attempt on the healthy accounts still fails
    with boa.reverts("engine: account not liquidatable"):
        liquidate(p, c, b if spike > 2000 * 10**8 else a)


def test_compound_bzx_two_of_three_manipulated_median_follows(protocol):
    """Compound DAI / bZx, the limit of a median: with two of three feeds manipulated the
    median IS the manipulated price. Documented behaviour, not a defence: the index becomes
    20,000, the short becomes liquidatable (equity 10,000 - 40 * 18,000), the trade band
    re-centres on 20,000. Only feed diversity (independent sources) protects against this."""
    p = protocol
    feeds = _three_eth_feeds(p)
    a, b = _long_and_short(p)
    feeds[1].set_answer(20_000 * 10**8)
    feeds[2].set_answer(20_000 * 10**8)
    assert p.oracle.index_price(ETH) == 20_000 * WAD
    assert summary(p, b)[:3] == (10_000 * WAD - 40 * 18_000 * WAD, 80_000 * WAD, 40_000 * WAD)
    assert p.engine.is_liquidatable(b.address)
    assert not p.engine.is_liquidatable(a.address)
    # and down to 1 wei: the long is wiped out on paper
    feeds[1].set_answer(1)
    feeds[2].set_answer(1)
    assert p.oracle.index_price(ETH) == 10**10
    assert p.engine.is_liquidatable(a.address)


@pytest.mark.xfail(
    strict=True,
    reason="DESIGN LIMIT: with one of three feeds stale (ignored), the median of the two valid "
    "feeds is their mean, so ONE manipulated feed moves the index halfway to its value (2000 -> "
    "11000 for a 10x spike); a single-source manipulation again (Compound DAI / bZx class).",
)
def test_compound_bzx_one_manipulated_feed_while_another_is_stale(protocol):
    """Compound DAI / bZx with a feed outage: feeds lapse exactly in the volatile moments an
    attacker picks. If one honest feed is stale and another is manipulated, an even count of
    valid feeds makes the index the mean of the honest and the manipulated answer. A robust
    router would refuse the price (no quorum) or keep it within the honest answers; this test
    accepts either: the index must not leave the honest range [2000, 2000]."""
    p = protocol
    feeds = _three_eth_feeds(p)
    boa.env.time_travel(seconds=1800)
    feeds[1].set_answer(2000 * 10**8)
    feeds[2].set_answer(2000 * 10**8)
    boa.env.time_travel(seconds=1801)  # feed 0 is now 3601 s old: stale
    feeds[1].set_answer(2000 * 10**8)
    feeds[2].set_answer(20_000 * 10**8)  # manipulated
    index = p.oracle.index_prices()[ETH]
    assert index in (0, 2000 * WAD), f"index {index} follows a single manipulated feed"


# ====================================================================== Euler 2023


@pytest.fixture
def euler(protocol):
    """a holds 50 ETH long (25 perp + 25 future, same direction: no spread credit involved),
    cash, WETH and WBTC, and is exactly at initial margin (equity == IM == 10,000)."""
    p = protocol
    a, b, stranger = p.new_user(), p.new_user(), p.new_user()
    p.deposit_usd(a, 10_000)
    p.deposit(a, "WETH", WAD)  # 1,700 of margin
    p.deposit(a, "WBTC", 10**7)  # 0.1 BTC: 2,550 of margin
    p.deposit_usd(b, 1_000_000)
    p.deposit_usd(stranger, 1_000_000)
    trade(p, a, b, ETH_PERP, 25 * WAD, 2000 * WAD)
    trade(p, a, b, ETH_FUT, 25 * WAD, 2000 * WAD)
    with boa.env.prank(a.address):
        p.vault.withdraw(p.usdc.address, 4_250 * USDC)
    assert summary(p, a) == (10_000 * WAD, 10_000 * WAD, 5_000 * WAD, 2 * WAD)
    return p, a, b, stranger


def guarded(p, accounts, fn, reverts=None):
    """Run `fn`; every account of `accounts` that met IM before must meet it after. With
    `reverts` the call must revert with that message and change nothing at all."""
    met = [meets_im(p, x) for x in accounts]
    before = world(p, *accounts) if reverts is not None else None
    if reverts is not None:
        with boa.reverts(reverts):
            fn()
        assert world(p, *accounts) == before
    else:
        fn()
    for x, ok in zip(accounts, met):
        if ok:
            assert meets_im(p, x), f"{x.address} left below initial margin"


def _max_withdrawable(p, a, asset_id, price, decimals):
    """Largest amount of a collateral asset `a` can withdraw and still meet IM, by hand."""
    eq, im = summary(p, a)[:2]
    bal = p.vault.balances(a.address, asset_id)
    value = bal * price * HAIRCUT // (10**decimals * WAD)
    need = im - (eq - value)  # what this asset must still be worth
    keep = ceil_div(need * 10**decimals * WAD, price * HAIRCUT) if need > 0 else 0
    return bal - keep


EULER_FUNCTIONS = [
    "deposit",
    "deposit_for",
    "withdraw_USDC",
    "withdraw_WETH",
    "withdraw_WBTC",
    "match_orders",
    "cancel_nonce",
    "liquidate",
    "settle_market",
    "settle_positions",
    "fund_insurance",
]


@pytest.mark.parametrize("fn", EULER_FUNCTIONS)
def test_euler_no_user_function_skips_the_margin_check(euler, fn):
    """Euler Finance, Mar 2023 ($197M): `donateToReserves` reduced an account's collateral
    without the health check every other function had, so the attacker made itself insolvent
    on purpose and liquidated itself at a profit. Here every state-changing function a user
    can call is driven from an account sitting exactly at initial margin (no slack at all),
    with the most aggressive arguments; each call either reverts and changes nothing, or leaves
    every account it touched that met IM still meeting IM (a liquidation must not lower the
    liquidated account's health)."""
    p, a, b, stranger = euler
    e, v, usdc = p.engine, p.vault, p.usdc
    acting = [a, b, stranger]

    if fn == "deposit":
        for symbol, amount, gain in (("USDC", 1, 10**12), ("WETH", 1, 1_700), ("WBTC", 1, 255 * 10**12)):
            eq = summary(p, a)[0]
            guarded(p, acting, lambda symbol=symbol, amount=amount: p.deposit(a, symbol, amount))
            assert summary(p, a)[0] == eq + gain
            assert summary(p, a)[1] == 10_000 * WAD

    elif fn == "deposit_for":
        for symbol in ("USDC", "WETH", "WBTC"):
            token = p.token(symbol)
            token.mint(stranger.address, 10**6)
            hf = summary(p, a)[3]

            def deposit_for(token=token):
                with boa.env.prank(stranger.address):
                    token.approve(v.address, 10**6)
                    v.deposit_for(token.address, 10**6, a.address)

            guarded(p, acting, deposit_for)
            assert summary(p, a)[3] >= hf

    elif fn == "withdraw_USDC":
        with boa.env.prank(a.address):
            guarded(p, acting, lambda: v.withdraw(usdc.address, 1), "vault: below initial margin")
        p.deposit(a, "USDC", 123_456_789)
        with boa.env.prank(a.address):
            guarded(p, acting, lambda: v.withdraw(usdc.address, 123_456_790), "vault: below initial margin")
            guarded(p, acting, lambda: v.withdraw_to(usdc.address, 123_456_789, stranger.address))
            guarded(p, acting, lambda: v.withdraw(usdc.address, 1), "vault: below initial margin")
        assert summary(p, a)[:2] == (10_000 * WAD, 10_000 * WAD)

    elif fn in ("withdraw_WETH", "withdraw_WBTC"):
        symbol = fn.split("_")[1]
        asset_id, price, decimals = (WETH_ID, 2000 * WAD, 18) if symbol == "WETH" else (WBTC_ID, 30_000 * WAD, 8)
        token = p.tokens[symbol]
        with boa.env.prank(a.address):
            guarded(p, acting, lambda: v.withdraw(token.address, 1), "vault: below initial margin")
        p.deposit_usd(a, 100)  # 100 of slack
        x = _max_withdrawable(p, a, asset_id, price, decimals)
        assert 0 < x < v.balances(a.address, asset_id)
        with boa.env.prank(a.address):
            guarded(p, acting, lambda: v.withdraw(token.address, x + 1), "vault: below initial margin")
            guarded(p, acting, lambda: v.withdraw(token.address, x))
            guarded(p, acting, lambda: v.withdraw(token.address, 1), "vault: below initial margin")

    elif fn == "match_orders":

        def attempt(buyer, seller, size, price, market=ETH_PERP):
            m, ms = make(p, buyer, market, size, price)
            t, ts = make(p, seller, market, -size, price)
            return lambda: p.matching.match_orders(m, ms, t, ts)

        # more risk, by one wei, at the index or at the worst price: refused
        guarded(p, acting, attempt(a, b, 1, 2000 * WAD), "engine: below initial margin")
        guarded(p, acting, attempt(a, b, 1, 2100 * WAD), "engine: below initial margin")
        guarded(p, acting, attempt(a, b, WAD // 100, 30_000 * WAD, BTC_PERP), "engine: below initial margin")
        # a flip through zero at a bad price is not "reducing": refused
        guarded(p, acting, attempt(b, a, 100 * WAD, 1990 * WAD), "engine: below initial margin")
        # reducing at the worst price in the band: allowed, and IM is still met
        guarded(p, acting, attempt(b, a, 5 * WAD, 1900 * WAD))
        assert summary(p, a)[:2] == (9_500 * WAD, 9_000 * WAD)
        # a flip at the index: net short 45 with 25 offset needs 10,000 > 9,500: refused
        guarded(p, acting, attempt(b, a, 90 * WAD, 2000 * WAD), "engine: below initial margin")
        # closing the perpetual at the index: allowed, IM met
        guarded(p, acting, attempt(b, a, 20 * WAD, 2000 * WAD))
        assert summary(p, a)[:2] == (9_500 * WAD, 5_000 * WAD)
        assert e.open_markets(a.address) == [ETH_FUT]

    elif fn == "cancel_nonce":
        before = world(p, a)
        with boa.env.prank(a.address):
            guarded(p, acting, lambda: p.matching.cancel_nonce(123))
            guarded(p, acting, lambda: p.matching.cancel_nonce(123), "matching: nonce used")
        assert world(p, a) == before

    elif fn == "liquidate":
        # a healthy account (exactly at IM) cannot be liquidated
        guarded(p, acting, lambda: liquidate(p, b, a), "engine: account not liquidatable")
        guarded(p, acting, lambda: liquidate(p, stranger, a), "engine: account not liquidatable")
        # c goes under on BTC; a's WBTC falls too: top a up to exactly IM again
        c = p.new_user()
        p.deposit_usd(c, 10_000)
        trade(p, c, b, BTC_PERP, 3 * WAD, 30_000 * WAD)
        p.set_price("BTC", 27_500)
        eq, im = summary(p, a)[:2]
        p.deposit(a, "USDC", ceil_div(im - eq, 10**12))
        assert meets_im(p, a) and summary(p, a)[0] - summary(p, a)[1] < 10**12
        assert p.engine.is_liquidatable(c.address)
        # a, with no slack, may not take positions over as liquidator
        guarded(p, acting + [c], lambda: liquidate(p, a, c), "engine: liquidator below IM")
        hf = summary(p, c)[3]
        guarded(p, acting + [c], lambda: liquidate(p, stranger, c))
        assert summary(p, c)[3] >= hf
        assert e.open_markets(c.address) == [BTC_PERP]  # partial: health raised, not lowered

    elif fn in ("settle_market", "settle_positions"):
        # d holds a basis trade (long perpetual, short future): its netting credit is at stake
        d = p.new_user()
        p.deposit_usd(d, 25_000)
        trade(p, d, b, ETH_PERP, 100 * WAD, 2000 * WAD)
        trade(p, b, d, ETH_FUT, 100 * WAD, 2000 * WAD)
        expiry = p.deployment.market_expiries["ETH-FUT"]
        boa.env.time_travel(seconds=expiry - now())
        p.set_price("ETH", 2000)
        p.set_price("BTC", 30_000)
        assert summary(p, a) == (10_000 * WAD, 10_000 * WAD, 5_000 * WAD, 2 * WAD)
        # at expiry the future no longer nets: bring d to exactly IM, to the micro-dollar
        eq, im = summary(p, d)[:2]
        if eq < im:
            p.deposit(d, "USDC", ceil_div(im - eq, 10**12))
        else:
            with boa.env.prank(d.address):
                v.withdraw(usdc.address, (eq - im) // 10**12)
        assert meets_im(p, d) and summary(p, d)[0] - summary(p, d)[1] < 10**12
        acting = acting + [d]
        guarded(p, acting, lambda: e.settle_market(ETH_FUT))
        # the settled future needs no margin any more; valuation unchanged
        assert summary(p, a)[:3] == (10_000 * WAD, 5_000 * WAD, 2_500 * WAD)
        if fn == "settle_positions":
            before = summary(p, a)
            with boa.env.prank(stranger.address):
                guarded(p, acting, lambda: e.settle_positions(a.address))
                guarded(p, acting, lambda: e.settle_positions(b.address))
            assert summary(p, a) == before
            assert e.open_markets(a.address) == [ETH_PERP]

    elif fn == "fund_insurance":
        usdc.mint(a.address, 1_000 * USDC)
        fund = v.insurance_fund()
        before = world(p, a)

        def donate():
            with boa.env.prank(a.address):
                usdc.approve(v.address, 1_000 * USDC)
                v.fund_insurance(1_000 * USDC)

        guarded(p, acting, donate)
        assert v.insurance_fund() == fund + 1_000 * WAD
        after = world(p, a)
        assert after["accounts"] == before["accounts"]  # the account is untouched

    else:  # pragma: no cover
        raise AssertionError(fn)
    assert meets_im(p, a)


def test_euler_donate_to_reserves_pattern(euler):
    """Euler Finance, Mar 2023: the exploit was a "donation" that lowered the donor's own
    collateral with no health check. The analogues here: `fund_insurance` (a donation to the
    reserves) takes tokens from the caller's wallet, never from its margin account, so it
    cannot make the donor insolvent; and `deposit(..., account)` into someone else's account
    can only raise that account's equity and health, never lower them, by any asset or amount."""
    p, a, b, stranger = euler
    v = p.vault
    # the donor has an account at exactly IM and tokens in its wallet (9,250 USDC)
    p.usdc.mint(a.address, 5_000 * USDC)
    wallet = p.usdc.balanceOf(a.address)
    assert wallet == 9_250 * USDC
    before = world(p, a)
    with boa.env.prank(a.address):
        p.usdc.approve(v.address, MAX_UINT)
        v.fund_insurance(wallet)
        (ev,) = events(v, "InsuranceFunded")
        assert (ev.sender, ev.amount) == (a.address, 9_250 * WAD)
        # with an empty wallet there is nothing to donate: the account cash is not reachable
        with boa.reverts("mock: balance too low"):
            v.fund_insurance(1)
    after = world(p, a)
    assert after["accounts"] == before["accounts"]
    assert after["fund"] == before["fund"] + 9_250 * WAD
    # deposits into a's account by a stranger: equity rises by exactly the credit, IM unchanged
    for symbol, amount, credit in (
        ("USDC", 1, 10**12),
        ("WETH", 1, 2000 * HAIRCUT // WAD),
        ("WBTC", 1, 30_000 * WAD * HAIRCUT // (10**8 * WAD)),
        ("USDC", 7_777 * USDC, 7_777 * WAD),
        ("WETH", 3 * WAD + 5, (3 * WAD + 5) * 2000 * HAIRCUT // WAD),
    ):
        token = p.token(symbol)
        token.mint(stranger.address, amount)
        s0 = summary(p, a)
        cv0 = v.collateral_value(a.address)
        with boa.env.prank(stranger.address):
            token.approve(v.address, amount)
            v.deposit_for(token.address, amount, a.address)
        s1 = summary(p, a)
        if symbol == "USDC":
            assert s1[0] == s0[0] + credit
        else:
            assert s1[0] - s0[0] == v.collateral_value(a.address) - cv0 >= 0
        assert s1[1:3] == s0[1:3]
        assert s1[3] >= s0[3]
    with boa.env.prank(stranger.address):
        with boa.reverts("vault: zero account"):
            v.deposit_for(p.usdc.address, 1, ZERO)


# ====================================================================== MakerDAO Black Thursday 2020


def test_maker_black_thursday_liquidation_at_index_never_below_discount(protocol):
    """MakerDAO Black Thursday, Mar 2020: collateral auctions cleared at zero bids because a
    keeper could win with a 0 DAI bid when nobody else bid, so vaults lost all their ETH for
    nothing. Here there is no auction: positions move to the liquidator at exactly the index
    (mark) price, and collateral is sold at exactly index * (1 - discount) with
    discount = min(penalty, (1 - haircut) / 2), the only rounding being < 1 wei per whole token
    plus 1 wei (in token terms: the liquidator's payment is floored). The liquidator passes only
    the account: two different liquidators get identical prices and amounts."""
    p = protocol
    e, v = p.engine, p.vault
    assert [x["name"] for x in e.abi if x.get("name") == "liquidate"] == ["liquidate"]
    assert [len(x["inputs"]) for x in e.abi if x.get("name") == "liquidate"] == [1]
    a, b, liq1, liq2 = (p.new_user() for _ in range(4))
    for x in (b, liq1, liq2):
        p.deposit_usd(x, 1_000_000)

    # ---- positions: a partial close at an odd index
    p.deposit_usd(a, 10_000)
    trade(p, a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    set_eth(p, 182_345_678_901)  # 1823.45678901
    index = 182_345_678_901 * 10**10
    assert p.oracle.index_price(ETH) == index and p.engine.is_liquidatable(a.address)
    results = []
    for liq in (liq1, liq2):
        with boa.env.anchor():
            eq_a, eq_l = p.equity(a.address), p.equity(liq.address)
            _, logs = liquidate(p, liq, a)
            moved = named(logs, "PositionLiquidated")
            assert moved and all(x.price == index for x in moved)
            changed = [x for x in named(logs, "PositionChanged") if x.account == liq.address]
            assert changed and all(x.entry_price == index for x in changed)
            (ev,) = named(logs, "Liquidation")
            # nothing moves between the two but the penalty: the transfer is at mark
            assert p.equity(a.address) == eq_a - ev.penalty
            assert p.equity(liq.address) == eq_l + ev.penalty * SHARE // WAD
            results.append(([(x.market, x.size, x.price) for x in moved], ev.notional, ev.penalty))
    assert results[0] == results[1]

    # ---- collateral: c ends with no positions and debt; its WETH is sold to the liquidator
    c = p.new_user()
    set_eth(p, 2000 * 10**8)
    p.deposit_usd(c, 1_000)
    p.deposit(c, "WETH", 12 * 10**17)  # 1.2 WETH
    trade(p, c, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    set_eth(p, 170_012_345_678)  # 1700.12345678
    index = 170_012_345_678 * 10**10
    assert p.equity(c.address) < 0
    discount = min(PENALTY, (WAD - HAIRCUT) // 2)
    assert discount == PENALTY
    sales = []
    for liq in (liq1, liq2):
        with boa.env.anchor():
            cash_c = v.cash(c.address)
            _, logs = liquidate(p, liq, c)
            assert [x.price for x in named(logs, "PositionLiquidated")] == [index]
            (sale,) = named(logs, "CollateralLiquidated")
            debt = -(cash_c + 10 * (index - 2000 * WAD))  # cash after the close (no penalty), negated
            assert named(logs, "Liquidation")[0].penalty == 0
            unit_price = index * (WAD - discount) // WAD
            assert sale.amount == min(12 * 10**17, ceil_div(debt * WAD, unit_price))
            assert sale.payment == sale.amount * unit_price // WAD
            exact = Fraction(sale.amount * index * (WAD - discount), WAD * WAD)
            # never more than the discount below the index, up to flooring dust
            assert exact - 1 - Fraction(sale.amount, WAD) < sale.payment <= exact
            assert sale.payment >= debt  # the sale clears the debt
            assert v.cash(c.address) == sale.payment - debt
            assert v.balances(c.address, WETH_ID) == 12 * 10**17 - sale.amount
            sales.append((sale.amount, sale.payment))
    assert sales[0] == sales[1]


# ====================================================================== dYdX YFI 2023


def test_dydx_yfi_open_interest_is_capped(protocol):
    """dYdX YFI, Nov 2023: positions far larger than the market could absorb were pushed
    through a thin oracle, leaving ~$9M of losses for the insurance fund. A protocol needs
    per-market open-interest (and per-account position) caps, whatever margin is posted. The
    listing caps ETH-PERP at 500,000 ETH per account and 5,000,000 ETH of open interest (sum
    of longs): one wei more than either reverts, with IM met many times over, so the incident's
    1,000,000 ETH (2 billion USD) position is refused (see also
    test_position_caps.py::test_listing_caps_stop_a_dydx_sized_position); and the risk admin
    can tighten a market at once."""
    p = protocol
    e = p.engine
    cap_pos, cap_oi = e.max_position(ETH_PERP), e.max_open_interest(ETH_PERP)
    assert (cap_pos, cap_oi) == (500_000 * WAD, 5_000_000 * WAD)
    n = cap_oi // cap_pos
    longs = [p.new_user() for _ in range(n)]
    shorts = [p.new_user() for _ in range(n)]
    x, y = p.new_user(), p.new_user()
    for u in longs + shorts + [x, y]:
        p.deposit_usd(u, 105_000_000)  # IM of 500,000 ETH at 2000 is 100,000,000 USD
    with boa.reverts("engine: position above cap"):
        trade(p, longs[0], shorts[0], ETH_PERP, cap_pos + 1, 2000 * WAD)  # the long
    trade(p, longs[0], shorts[0], ETH_PERP, cap_pos, 2000 * WAD)  # exactly at the cap
    with boa.reverts("engine: position above cap"):
        trade(p, x, shorts[0], ETH_PERP, 1, 2000 * WAD)  # the short, one wei above
    for lo, sh in zip(longs[1:], shorts[1:]):
        trade(p, lo, sh, ETH_PERP, cap_pos, 2000 * WAD)
    assert e.open_interest(ETH_PERP) == cap_oi  # ten accounts at the cap fill the market
    with boa.reverts("engine: open interest above cap"):
        trade(p, x, y, ETH_PERP, 1, 2000 * WAD)
    # a long changing hands does not add open interest; closing frees room again
    trade(p, x, longs[0], ETH_PERP, WAD, 2000 * WAD)
    trade(p, shorts[1], longs[1], ETH_PERP, WAD, 2000 * WAD)
    assert e.open_interest(ETH_PERP) == cap_oi - WAD
    # the risk admin tightens the market: even a smaller position is refused outright
    e.set_position_caps(ETH_PERP, 100_000 * WAD, 20_000 * WAD)
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 300_000_000)
    p.deposit_usd(b, 300_000_000)
    m, ms = make(p, a, ETH_PERP, 10**6 * WAD, 2000 * WAD)
    t, ts = make(p, b, ETH_PERP, -(10**6) * WAD, 2000 * WAD)
    with boa.reverts("engine: position above cap"):
        p.matching.match_orders(m, ms, t, ts)


# ====================================================================== Vyper 0.2.15-0.3.0 lock, 2023


def reentrant(decimals=18):
    return deploy_unique(source_deployer("mocks/ReentrantToken.vy"), "Reentrant", "RE", decimals)


@pytest.fixture
def rtoken(protocol):
    """A re-entrant ERC20 listed as collateral on the ETH price id; the token itself holds
    tokens, USDC, approvals and a funded margin account, so that every inner call it makes
    would succeed if the vault were not locked (each test checks that with a control)."""
    p = protocol
    v = p.vault
    r = reentrant()
    aid = v.list_asset(r.address, ETH, HAIRCUT, 10**30)
    u = p.new_user()
    r.mint(u.address, 100 * WAD)
    with boa.env.prank(u.address):
        r.approve(v.address, MAX_UINT)
        v.deposit(r.address, 10 * WAD)
    # the token as a user: wallet, approvals, cash and collateral in the vault
    r.mint(r.address, 100 * WAD)
    p.usdc.mint(r.address, 1_000 * USDC)
    r.execute(r.address, r.approve.prepare_calldata(v.address, MAX_UINT))
    r.execute(p.usdc.address, p.usdc.approve.prepare_calldata(v.address, MAX_UINT))
    p.usdc.mint(p.admin, 1_000_000 * USDC)
    with boa.env.prank(p.admin):
        p.usdc.approve(v.address, MAX_UINT)
        v.deposit_for(p.usdc.address, 1_000_000 * USDC, r.address)
    r.execute(v.address, v.deposit.prepare_calldata(r.address, 10 * WAD))
    return p, r, aid, u


def _vault_calls(p, r, aid, u):
    """Inner calls into every state-changing function of the vault, made by the token."""
    v = p.vault
    return {
        "deposit same token (double credit)": v.deposit.prepare_calldata(r.address, WAD),
        "deposit same token for the outer account": v.deposit_for.prepare_calldata(r.address, WAD, u.address),
        "deposit settlement token": v.deposit.prepare_calldata(p.usdc.address, USDC),
        "withdraw settlement token": v.withdraw.prepare_calldata(p.usdc.address, USDC),
        "withdraw same token": v.withdraw.prepare_calldata(r.address, WAD),
        "withdraw settlement token to another receiver": v.withdraw_to.prepare_calldata(
            p.usdc.address, USDC, u.address
        ),
        "fund_insurance": v.fund_insurance.prepare_calldata(USDC),
        "settle_cash": v.settle_cash.prepare_calldata(r.address, 10**18),
        "charge_penalty": v.charge_penalty.prepare_calldata(u.address, r.address, 10**18, 10**18),
        "liquidate_collateral": v.liquidate_collateral.prepare_calldata(u.address, r.address, [2000 * 10**18] * 3, 0),
        "cover_deficit": v.cover_deficit.prepare_calldata(u.address),
    }


VAULT_CALLS = [
    "deposit same token (double credit)",
    "deposit same token for the outer account",
    "deposit settlement token",
    "withdraw settlement token",
    "withdraw same token",
    "withdraw settlement token to another receiver",
    "fund_insurance",
    "settle_cash",
    "charge_penalty",
    "liquidate_collateral",
    "cover_deficit",
]
ENGINE_ONLY = {"settle_cash", "charge_penalty", "liquidate_collateral", "cover_deficit"}


def _ledger_consistent(p, r, aid, accounts, *, no_pnl=True):
    """Token balances of the vault equal its ledger; with no PnL anywhere, cash + fund equal
    the settlement tokens held, exactly."""
    v = p.vault
    total = v.assets(aid).total
    assert r.balanceOf(v.address) == total == sum(v.balances(x, aid) for x in accounts)
    assert p.usdc.balanceOf(v.address) == v.settlement_total()
    if no_pnl:
        assert v.settlement_total() * 10**12 == sum(v.cash(x) for x in accounts) + v.insurance_fund()


@pytest.mark.parametrize("call", VAULT_CALLS)
@pytest.mark.parametrize("phase", ["deposit", "withdraw"])
def test_vyper_lock_vault_cannot_be_reentered(rtoken, phase, call):
    """Vyper 0.2.15-0.3.0 reentrancy lock bug, Jul 2023 (Curve pools: ~$70M): `@nonreentrant`
    compiled to no lock at all, so a token callback re-entered the pool mid-update. Here a
    token whose transfer calls back into the vault, during a deposit or a withdrawal of that
    token, tries every state-changing vault function (the classic double credit: a deposit
    inside a deposit, whose tokens would be counted by both balance differences). Every inner
    call reverts with the lock's empty revert data; the same call made outside a transfer
    succeeds (control); the outer call credits/debits exactly its amount, and the token balance
    of the vault equals the sum of credited balances afterwards."""
    p, r, aid, u = rtoken
    v = p.vault
    data = _vault_calls(p, r, aid, u)[call]
    accounts = [u.address, r.address]
    _ledger_consistent(p, r, aid, accounts)
    if call not in ENGINE_ONLY:
        with boa.env.anchor():  # control: outside a transfer the call goes through
            r.execute(v.address, data)
            _ledger_consistent(p, r, aid, accounts)
    else:
        with boa.env.anchor():
            with boa.reverts("vault: not engine"):
                r.execute(v.address, data)
    before = world(p, r.address)
    r.arm([v.address], [data])
    with boa.env.prank(u.address):
        if phase == "deposit":
            v.deposit(r.address, 5 * WAD)
        else:
            v.withdraw(r.address, 2 * WAD)
    assert r.hook_count() == 1 and r.call_count() == 1 and not r.armed()
    assert r.success(0) is False
    assert r.response(0) == b""  # the lock's revert (an auth check would carry a reason)
    expected = 15 * WAD if phase == "deposit" else 8 * WAD
    assert v.balances(u.address, aid) == expected
    assert r.balanceOf(u.address) == 100 * WAD - expected
    after = world(p, r.address)
    assert after["accounts"] == before["accounts"]  # the token's own account untouched
    assert after["fund"] == before["fund"] and after["bad_debt"] == before["bad_debt"]
    _ledger_consistent(p, r, aid, accounts)


def test_vyper_lock_engine_only_vault_functions_cannot_be_reentered(protocol):
    """Vyper lock bug, 2023, engine-only half: the vault's engine-only ledger functions share
    the same lock. To show the lock (and not the `not engine` check) stops them, a second vault
    is wired with the re-entrant token as BOTH its settlement token and its engine: the token
    may call settle_cash / charge_penalty / liquidate_collateral / cover_deficit (controls succeed),
    yet from inside a cash deposit or withdrawal of itself every one of them, and deposit,
    withdraw and fund_insurance, reverts. The balance-difference credit of the cash path is
    exact: a nested deposit cannot be counted twice."""
    p = protocol
    s = reentrant(6)
    vault2 = deploy_unique(deployer("CollateralVault"), p.admin, s.address, p.oracle.address)
    vault2.set_engine(s.address)
    weth = p.tokens["WETH"]
    vault2.list_asset(weth.address, ETH, HAIRCUT, 10**30)
    u = p.new_user()
    s.mint(u.address, 10_000 * USDC)
    weth.mint(u.address, WAD)
    with boa.env.prank(u.address):
        s.approve(vault2.address, MAX_UINT)
        weth.approve(vault2.address, MAX_UINT)
        vault2.deposit(s.address, 1_000 * USDC)
        vault2.deposit(weth.address, WAD)
    s.mint(s.address, 1_000 * USDC)
    s.execute(s.address, s.approve.prepare_calldata(vault2.address, MAX_UINT))
    s.execute(vault2.address, vault2.deposit.prepare_calldata(s.address, 100 * USDC))
    s.execute(vault2.address, vault2.fund_insurance.prepare_calldata(100 * USDC))
    calls = {
        "deposit": vault2.deposit.prepare_calldata(s.address, USDC),
        "withdraw": vault2.withdraw.prepare_calldata(s.address, USDC),
        "fund_insurance": vault2.fund_insurance.prepare_calldata(USDC),
        "settle_cash": vault2.settle_cash.prepare_calldata(u.address, 10**18),
        "charge_penalty": vault2.charge_penalty.prepare_calldata(u.address, s.address, 10**18, 5 * 10**17),
        "liquidate_collateral": vault2.liquidate_collateral.prepare_calldata(u.address, s.address, [], 0),
        "cover_deficit": vault2.cover_deficit.prepare_calldata(u.address),
    }

    def state():
        return (
            vault2.cash(u.address),
            vault2.cash(s.address),
            vault2.insurance_fund(),
            vault2.bad_debt(),
            vault2.settlement_total(),
            vault2.balances(u.address, 0),
            vault2.balances(s.address, 0),
        )

    for data in calls.values():
        with boa.env.anchor():
            s.execute(vault2.address, data)  # control: allowed outside a transfer
    for phase in ("deposit", "withdraw"):
        for name, data in calls.items():
            before = state()
            s.arm([vault2.address], [data])
            with boa.env.prank(u.address):
                if phase == "deposit":
                    vault2.deposit(s.address, 7 * USDC)
                else:
                    vault2.withdraw(s.address, 3 * USDC)
            assert (s.success(0), s.response(0)) == (False, b""), (phase, name)
            delta = 7 * USDC if phase == "deposit" else -3 * USDC
            after = state()
            assert after[0] == before[0] + delta * 10**12
            assert after[1:4] == before[1:4] and after[5:] == before[5:]
            assert after[4] == before[4] + delta == s.balanceOf(vault2.address)
    assert vault2.settlement_total() * 10**12 == (
        vault2.cash(u.address) + vault2.cash(s.address) + vault2.insurance_fund()
    )


def test_vyper_lock_views_inside_the_callback_are_consistent(rtoken):
    """Vyper lock bug, 2023, read-only reentrancy (the Curve `get_virtual_price` class): views
    read from inside a transfer callback must not expose half-updated state. During a deposit
    the callback sees exactly the state before the credit (balances, asset total, collateral
    value, margin summary); during a withdrawal it sees exactly the state after the debit,
    which is then final (checks, effects, interaction), and token balance == ledger."""
    p, r, aid, u = rtoken
    v, e = p.vault, p.engine
    views = [
        (v.address, v.balances.prepare_calldata(u.address, aid), "uint256"),
        (v.address, v.assets.prepare_calldata(aid), "(address,uint256,uint256,uint256,uint256,uint256)"),
        (v.address, v.collateral_value.prepare_calldata(u.address), "uint256"),
        (e.address, e.margin_summary.prepare_calldata(u.address), "(int256,uint256,uint256,uint256)"),
        (r.address, r.balanceOf.prepare_calldata(v.address), "uint256"),
    ]

    def read_now():
        return [
            v.balances(u.address, aid),
            tuple(v.assets(aid)),
            v.collateral_value(u.address),
            tuple(e.margin_summary(u.address)),
            r.balanceOf(v.address),
        ]

    def read_inside():
        out = []
        for i, (_, _, typ) in enumerate(views):
            assert r.success(i), i
            (x,) = decode([typ], r.response(i))
            out.append(tuple(x) if isinstance(x, tuple) else x)
        return out

    def normalise(xs):
        """Addresses compared case-insensitively (checksummed vs lower-case decoding)."""
        low = lambda y: str(y).lower() if isinstance(y, str) else y  # noqa: E731
        return [tuple(low(y) for y in x) if isinstance(x, tuple) else x for x in xs]

    # deposit: inside == before the credit (the tokens themselves have already arrived)
    pre = read_now()
    r.arm([x[0] for x in views], [x[1] for x in views])
    with boa.env.prank(u.address):
        v.deposit(r.address, 5 * WAD)
    inside = read_inside()
    assert normalise(inside[:4]) == normalise(pre[:4])
    assert inside[4] == pre[4] + 5 * WAD
    post = read_now()
    assert post[0] == pre[0] + 5 * WAD
    assert post[2] > pre[2] and post[3] != pre[3]  # a half-applied credit would have shown
    assert post[4] == inside[4] == post[1][5]  # after the credit, ledger == token balance

    # withdraw: inside == after the debit == final
    r.arm([x[0] for x in views], [x[1] for x in views])
    with boa.env.prank(u.address):
        v.withdraw(r.address, 2 * WAD)
    inside = read_inside()
    final = read_now()
    assert normalise(inside) == normalise(final)
    assert final[0] == 13 * WAD
    assert inside[4] == final[1][5] == v.balances(u.address, aid) + v.balances(r.address, aid)


def test_vyper_lock_is_released_after_the_call(rtoken):
    """Vyper lock bug, 2023, the other failure mode: a lock that is never released (or shared
    wrongly) bricks the contract. After a deposit whose callback was refused, a plain deposit,
    withdrawal and insurance funding all succeed, including the very call the lock refused."""
    p, r, aid, u = rtoken
    v = p.vault
    data = v.deposit.prepare_calldata(r.address, WAD)
    r.arm([v.address], [data])
    with boa.env.prank(u.address):
        v.deposit(r.address, WAD)
    assert r.success(0) is False
    r.execute(v.address, data)  # the refused call, now outside: accepted
    assert v.balances(r.address, aid) == 11 * WAD
    with boa.env.prank(u.address):
        v.deposit(r.address, WAD)
        v.withdraw(r.address, 3 * WAD)
    assert v.balances(u.address, aid) == 9 * WAD
    r.execute(v.address, v.fund_insurance.prepare_calldata(USDC))
    r.execute(v.address, v.withdraw.prepare_calldata(p.usdc.address, USDC))
    _ledger_consistent(p, r, aid, [u.address, r.address])


def test_vyper_lock_engine_reentered_from_a_vault_deposit(rtoken):
    """Vyper lock bug, 2023, cross-contract: from inside a vault deposit the token calls the
    margin engine. A trade that only opens positions writes nothing to the vault and goes
    through; it is margined on the state before the outer credit (conservative) and leaves the
    ledger exact. A trade that realizes PnL, and a liquidation, must write to the locked vault:
    they revert as a whole (nonces unspent, nothing moved) and succeed once the lock is free."""
    p, r, aid, u = rtoken
    v, e = p.vault, p.engine
    x, y, big = p.new_user(), p.new_user(), p.new_user()
    p.deposit_usd(x, 10_000)
    p.deposit_usd(y, 10_000)
    p.deposit_usd(big, 1_000_000)
    accounts = [u.address, r.address, x.address, y.address, big.address]

    # opening trade inside the deposit: goes through, exactly as outside
    m, ms = make(p, x, ETH_PERP, WAD, 2000 * WAD)
    t, ts = make(p, y, ETH_PERP, -WAD, 2000 * WAD)
    r.arm([p.matching.address], [p.matching.match_orders.prepare_calldata(m, ms, t, ts)])
    with boa.env.prank(u.address):
        v.deposit(r.address, WAD)
    assert r.success(0) is True
    assert tuple(e.positions(x.address, ETH_PERP))[:2] == (WAD, 2000 * WAD)
    assert tuple(e.positions(y.address, ETH_PERP))[:2] == (-WAD, 2000 * WAD)
    assert v.cash(x.address) == v.cash(y.address) == 10_000 * WAD
    assert v.balances(u.address, aid) == 11 * WAD
    _ledger_consistent(p, r, aid, accounts)

    # closing trade inside the deposit: would settle cash in the locked vault -> reverts
    m, ms = make(p, y, ETH_PERP, WAD, 2010 * WAD)
    t, ts = make(p, x, ETH_PERP, -WAD, 2010 * WAD)
    before = world(p, x, y)
    r.arm([p.matching.address], [p.matching.match_orders.prepare_calldata(m, ms, t, ts)])
    with boa.env.prank(u.address):
        v.deposit(r.address, WAD)
    assert (r.success(0), r.response(0)) == (False, b"")
    assert world(p, x, y)["accounts"] == before["accounts"]
    assert not p.matching.nonce_used(y.address, m[4]) and not p.matching.nonce_used(x.address, t[4])
    p.matching.match_orders(m, ms, t, ts)  # outside: fine
    assert v.cash(x.address) == 10_010 * WAD and v.cash(y.address) == 9_990 * WAD

    # liquidation inside the deposit: charges a penalty in the locked vault -> reverts
    victim = p.new_user()
    p.deposit_usd(victim, 10_000)
    trade(p, victim, big, ETH_PERP, 40 * WAD, 2000 * WAD)
    set_eth(p, 1820 * 10**8)
    assert p.engine.is_liquidatable(victim.address)
    data = e.liquidate.prepare_calldata(victim.address)
    before = world(p, victim, r.address)
    r.arm([e.address], [data])
    with boa.env.prank(u.address):
        v.deposit(r.address, WAD)
    assert (r.success(0), r.response(0)) == (False, b"")
    after = world(p, victim, r.address)
    for key in ("accounts", "fund", "bad_debt", "markets"):
        assert after[key] == before[key]
    r.execute(e.address, data)  # the token as liquidator, outside the deposit: fine
    assert not p.engine.is_liquidatable(victim.address)
    _ledger_consistent(p, r, aid, accounts + [victim.address], no_pnl=False)


# ====================================================================== donations


def test_donations_sent_straight_to_the_vault_are_ignored(protocol):
    """Donation / inflation attacks (e.g. the ERC4626 first-depositor inflation, Euler's
    donation): tokens transferred to the vault without `deposit` must not change anyone's
    credit, must not be withdrawable by anyone, and must not use up a deposit cap. (The basic
    case is in test_vault.py::test_tokens_sent_directly_are_ignored; this one donates before
    anyone deposits, to a capped asset, and lets the donor and a newcomer try to take it.)"""
    p = protocol
    v, usdc, wbtc, weth = p.vault, p.usdc, p.tokens["WBTC"], p.tokens["WETH"]
    attacker, victim, newcomer = p.new_user(), p.new_user(), p.new_user()
    v.set_asset_params(WBTC_ID, HAIRCUT, 5 * 10**8)  # cap: 5 WBTC
    usdc.mint(attacker.address, 1_000_000 * USDC)
    wbtc.mint(attacker.address, 5 * 10**8)
    weth.mint(attacker.address, 100 * WAD)
    with boa.env.prank(attacker.address):
        usdc.transfer(v.address, 1_000_000 * USDC)
        wbtc.transfer(v.address, 5 * 10**8)  # the whole cap, sent straight
        weth.transfer(v.address, 100 * WAD)
    assert (v.settlement_total(), v.insurance_fund(), v.assets(WBTC_ID).total, v.assets(WETH_ID).total) == (0, 0, 0, 0)
    # the cap still admits its full amount, and each deposit credits exactly what it sent
    p.deposit(victim, "WBTC", 5 * 10**8)
    p.deposit(victim, "USDC", 1)
    p.deposit(victim, "WETH", 1)
    assert (v.cash(victim.address), v.balances(victim.address, WBTC_ID), v.balances(victim.address, WETH_ID)) == (
        10**12,
        5 * 10**8,
        1,
    )
    assert summary(p, victim)[0] == 10**12 + 5 * 30_000 * HAIRCUT + 2000 * HAIRCUT // WAD
    with boa.reverts("vault: deposit cap exceeded"):
        p.deposit(newcomer, "WBTC", 1)
    for who in (attacker, newcomer):
        assert summary(p, who)[0] == 0
        with boa.env.prank(who.address):
            with boa.reverts("vault: insufficient cash"):
                v.withdraw(usdc.address, 1)
            with boa.reverts("vault: insufficient collateral"):
                v.withdraw(wbtc.address, 1)
            with boa.reverts("vault: insufficient collateral"):
                v.withdraw(weth.address, 1)
    # the victim takes out exactly its own and nothing more
    with boa.env.prank(victim.address):
        v.withdraw(usdc.address, 1)
        v.withdraw(wbtc.address, 5 * 10**8)
        v.withdraw(weth.address, 1)
        with boa.reverts("vault: insufficient cash"):
            v.withdraw(usdc.address, 1)
        with boa.reverts("vault: insufficient collateral"):
            v.withdraw(wbtc.address, 1)
    assert (usdc.balanceOf(v.address), wbtc.balanceOf(v.address), weth.balanceOf(v.address)) == (
        1_000_000 * USDC,
        5 * 10**8,
        100 * WAD,
    )


# ====================================================================== self-liquidation


def test_self_liquidation_through_a_second_account_gains_nothing(protocol):
    """Self-liquidation for profit (Euler 2023's final step; Aave/Compound "liquidate yourself
    for the bonus" griefing): `liquidate` refuses msg.sender == account, but an owner can use a
    second account. The pair must gain nothing: positions move at mark, so the two accounts'
    combined equity falls by exactly the insurance fund's share of the penalty; the liquidator
    share only moves between the two. When the account is bankrupt, the deficit written off is
    the same whoever liquidates (nothing extra is gained by liquidating oneself)."""
    p = protocol
    v = p.vault
    a, a2, b, stranger = (p.new_user() for _ in range(4))
    p.deposit_usd(a, 10_000)
    for x in (a2, b, stranger):
        p.deposit_usd(x, 1_000_000)
    trade(p, a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    set_eth(p, 1820 * 10**8)  # equity 2,800 < MM 3,640
    assert summary(p, a)[:3] == (2_800 * WAD, 7_280 * WAD, 3_640 * WAD)
    pair0 = p.equity(a.address) + p.equity(a2.address)
    fund0 = v.insurance_fund()
    with boa.env.anchor():
        _, logs = liquidate(p, stranger, a)
        (by_stranger,) = named(logs, "Liquidation")
        a_after_stranger = summary(p, a)
    _, logs = liquidate(p, a2, a)
    (ev,) = named(logs, "Liquidation")
    assert ev.penalty > 0
    fund_share = ev.penalty - ev.penalty * SHARE // WAD
    assert v.insurance_fund() - fund0 == fund_share
    pair1 = p.equity(a.address) + p.equity(a2.address)
    assert pair1 - pair0 == -fund_share < 0
    # the liquidated account fares exactly as with a stranger
    assert (ev.notional, ev.penalty) == (by_stranger.notional, by_stranger.penalty)
    assert summary(p, a) == a_after_stranger

    # bankrupt: the write-off is identical whoever liquidates
    c = p.new_user()
    p.deposit_usd(c, 2_000)
    set_eth(p, 2000 * 10**8)
    trade(p, c, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    set_eth(p, 1750 * 10**8)  # equity 2,000 - 2,500 = -500
    outcomes = []
    for liq in (a2, stranger):
        with boa.env.anchor():
            _, logs = liquidate(p, liq, c)
            (cover,) = named(logs, "DeficitCovered")
            (ev,) = named(logs, "Liquidation")
            outcomes.append((cover.from_insurance, cover.bad_debt, ev.penalty, summary(p, c)))
    assert outcomes[0] == outcomes[1]
    from_fund, written_off, penalty, _ = outcomes[0]
    assert (from_fund + written_off, penalty) == (500 * WAD, 0)


def test_split_liquidation_at_one_price_pays_no_second_bonus(protocol):
    """Many small liquidations vs one large (Compound/Aave close-factor loops, where repeated
    small liquidations each earn a bonus): a partial liquidation restores health to the target
    (1.25 > 1), so a second call at the same price is refused and no second penalty is paid.
    The falling-price ladder (k small <= one large) is
    test_liquidation.py::test_many_small_liquidations_do_not_pay_more."""
    p = protocol
    a, b, l1, l2 = (p.new_user() for _ in range(4))
    p.deposit_usd(a, 10_000)
    for x in (b, l1, l2):
        p.deposit_usd(x, 1_000_000)
    trade(p, a, b, ETH_PERP, 40 * WAD, 2000 * WAD)
    set_eth(p, 1820 * 10**8)
    _, logs = liquidate(p, l1, a)
    (ev,) = named(logs, "Liquidation")
    assert ev.health_after >= TARGET
    state = world(p, a, l1, l2)
    for liq in (l1, l2):
        with boa.reverts("engine: account not liquidatable"):
            liquidate(p, liq, a)
    assert world(p, a, l1, l2) == state


# ====================================================================== decimals


@pytest.mark.parametrize("feed_decimals", [6, 8, 18])
@pytest.mark.parametrize("token_decimals", [0, 6, 8, 18])
def test_decimals_collateral_value_is_exact_and_never_rounds_up(protocol, token_decimals, feed_decimals):
    """Decimal-conversion incidents (e.g. the 2021 Compound/Cream-style mispriced WBTC and
    tokens assumed to have 18 decimals): a token's units are converted once, with the token's
    own decimals and the feed's own decimals. For every combination, collateral value equals
    floor(amount * price_wad * haircut / (10**decimals * 1e18)) exactly, and never exceeds the
    exact rational value (rounding favours the protocol)."""
    p = protocol
    v, o = p.vault, p.oracle
    token = deploy_unique(deployer("MockERC20"), "Odd", "ODD", token_decimals)
    answer = {6: 1234_567891, 8: 1234_56789123, 18: 1234_567891234567891234}[feed_decimals]
    price = answer * 10 ** (18 - feed_decimals)
    feed = deploy_unique(deployer("MockAggregator"), feed_decimals, "ODD / USD", answer)
    pid = o.add_price_id("ODD")
    o.set_feeds(pid, [feed.address], [3600])
    assert o.index_price(pid) == price
    haircut = 777_777_777_777_777_777
    aid = v.list_asset(token.address, pid, haircut, 10**40)
    a = p.new_user()
    unit = 10**token_decimals
    balance = 0
    for amount in (1, unit, 3 * unit + unit // 3 + 1, 987_654_321 * unit + 7):
        token.mint(a.address, amount)
        with boa.env.prank(a.address):
            token.approve(v.address, amount)
            v.deposit(token.address, amount)
        (ev,) = events(v, "Deposit")
        assert (ev.amount, ev.credited_wad) == (amount, 0)
        balance += amount
        assert v.balances(a.address, aid) == balance
        value = balance * price * haircut // (unit * WAD)
        exact = Fraction(balance * price * haircut, unit * WAD)
        assert v.collateral_value(a.address) == value
        assert value <= exact < value + 1
        assert p.equity(a.address) == value
    # one base unit alone, from another account
    b = p.new_user()
    token.mint(b.address, 1)
    with boa.env.prank(b.address):
        token.approve(v.address, 1)
        v.deposit(token.address, 1)
    assert v.collateral_value(b.address) == price * haircut // (unit * WAD)


# ====================================================================== signatures


def test_signatures_far_future_deadline_zero_address_and_garbage(protocol):
    """Signature incidents (Wintermute/Profanity-era replays, the Polygon/0x and many
    "ecrecover returns address(0)" bugs): what test_trading.py does not already cover.
    (1) a deadline of 2**256-1 is accepted, but the nonce is spent: the same signed order, the
    same nonce re-signed with other terms, or a cancel afterwards are all refused; (2) a garbage
    signature recovers to the zero address, and an order whose account IS the zero address must
    still be refused (an engine comparing `signer == account` alone would accept it); (3) a
    garbage but well-formed signature for a real account is refused."""
    p = protocol
    e = p.engine
    a, b = p.new_user(), p.new_user()
    p.deposit_usd(a, 100_000)
    p.deposit_usd(b, 100_000)

    # (1) far-future deadline
    m, ms = make(p, a, ETH_PERP, WAD, 2000 * WAD, deadline=MAX_UINT)
    t, ts = make(p, b, ETH_PERP, -WAD, 2000 * WAD, deadline=MAX_UINT)
    boa.env.time_travel(seconds=10 * 365 * 86400)
    p.set_price("ETH", 2000)
    p.set_price("BTC", 30_000)
    p.matching.match_orders(m, ms, t, ts)
    assert e.positions(a.address, ETH_PERP).size == WAD
    t2, ts2 = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    with boa.reverts("matching: nonce used"):
        p.matching.match_orders(m, ms, t2, ts2)  # the same signed order again
    m3, ms3 = make(p, a, ETH_PERP, 2 * WAD, 2001 * WAD, nonce=m[4], deadline=MAX_UINT)
    t3, ts3 = make(p, b, ETH_PERP, -2 * WAD, 2001 * WAD)
    with boa.reverts("matching: nonce used"):
        p.matching.match_orders(m3, ms3, t3, ts3)  # same nonce, new terms, fresh signature
    with boa.env.prank(a.address):
        with boa.reverts("matching: nonce used"):
            p.matching.cancel_nonce(m[4])

    # (2) garbage recovering to address(0), for an order of the zero address
    garbage = (0).to_bytes(32, "big") + (1).to_bytes(32, "big") + bytes([27])
    zero_order = Order(ZERO, ETH_PERP, WAD, 2000 * WAD, 1, now() + 3600)
    digest = order_digest(zero_order, boa.env.evm.patch.chain_id, p.matching.address)
    assert p.matching.order_digest(zero_order.as_tuple()) == digest
    t4, ts4 = make(p, b, ETH_PERP, -WAD, 2000 * WAD)
    with boa.reverts("matching: invalid signature"):
        p.matching.match_orders(zero_order.as_tuple(), garbage, t4, ts4)
    assert not p.matching.nonce_used(ZERO, 1)

    # (3) well-formed garbage (low s, valid v) for a real account
    m5, _ = make(p, a, ETH_PERP, WAD, 2000 * WAD)
    for r_, s_ in ((0, 1), (1, 1), (2**255, 12345)):
        junk = r_.to_bytes(32, "big") + s_.to_bytes(32, "big") + bytes([28])
        with boa.reverts("matching: invalid signature"):
            p.matching.match_orders(m5, junk, t4, ts4)
    # a real signature of a different digest by a's key is refused too
    other = keys.PrivateKey(a.key).sign_msg_hash(b"\x11" * 32)
    sig = other.r.to_bytes(32, "big") + other.s.to_bytes(32, "big") + bytes([other.v + 27])
    with boa.reverts("matching: invalid signature"):
        p.matching.match_orders(m5, sig, t4, ts4)
    assert not p.matching.nonce_used(a.address, m5[4]) and not p.matching.nonce_used(b.address, t4[4])


# ====================================================================== healthy account


def test_healthy_account_liquidation_reverts_and_changes_nothing(protocol):
    """Liquidating healthy accounts (e.g. the 2021-2022 incidents where a wrong health check let
    keepers seize solvent positions for the bonus): a healthy account, including one holding
    collateral against negative cash and an empty account, cannot be liquidated by anyone; the
    call reverts, no fee is paid, and nothing at all changes: cash, collateral, positions,
    markets and funding, insurance fund, bad debt, token balances of every party."""
    p = protocol
    a, b, rich, poor, empty = (p.new_user() for _ in range(5))
    p.deposit(a, "WETH", 2 * WAD)
    p.deposit_usd(b, 1_000_000)
    p.deposit_usd(rich, 1_000_000)
    p.deposit_usd(poor, 10)
    p.fund_insurance(5_000)
    trade(p, a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    set_eth(p, 1900 * 10**8)
    trade(p, b, a, ETH_PERP, 5 * WAD, 1900 * WAD)  # realizes the whole -1,000: negative cash
    assert p.vault.cash(a.address) == -1_000 * WAD
    assert summary(p, a)[:3] == (2_230 * WAD, 950 * WAD, 475 * WAD)
    everyone = (a, b, rich, poor, empty)
    before = world(p, *everyone)
    for liq in (rich, b, poor, empty):
        for target in (a, b, rich, empty):
            if liq is target:
                continue
            with boa.reverts("engine: account not liquidatable"):
                liquidate(p, liq, target)
    with boa.reverts("engine: self liquidation"):
        liquidate(p, a, a)
    assert world(p, *everyone) == before
