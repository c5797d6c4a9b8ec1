"""Collusion: the protocol attacked by a group of accounts that act together (machine below).

(The module docstring is completed with the state machine.)
"""

from __future__ import annotations

from fractions import Fraction

import boa

from tests.boa_protocol import WAD

ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = 0, 1, 2, 3
ETH, BTC = 0, 1  # price ids
USDC = 10**6  # one dollar in USDC units
FUNDING_PERIOD = 8 * 3600
MM_RATE = 5 * 10**16  # config/local.yaml, both underlyings


def now() -> int:
    return boa.env.evm.patch.timestamp


def block() -> int:
    return boa.env.evm.patch.block_number


def reason(err: Exception) -> str:
    frame = err.stack_trace.last_frame
    return frame if isinstance(frame, str) else str(frame.pretty_vm_reason)


def named(logs, name: str) -> list:
    return [lg for lg in logs if type(lg).__name__ == name]


def fund_insurance(p, dollars: int) -> None:
    units = dollars * USDC
    p.usdc.mint(p.admin, units)
    with boa.env.prank(p.admin):
        p.usdc.approve(p.vault.address, units)
        p.vault.fund_insurance(units)


def set_eth(p, answer8: int) -> None:
    """Publish an exact 8-decimal ETH answer, stamped now."""
    p.feeds["ETH"].set_answer(answer8)


def equity(p, user) -> int:
    return p.engine.margin_summary(user.address).equity


def liquidate(p, liquidator, account) -> list:
    with boa.env.prank(liquidator.address):
        p.engine.liquidate(account.address)
        return p.engine.get_logs(strict=False)


def waterfall(p) -> int:
    """What the insurance fund and the socialized bad debt have paid so far, relative to a
    reference read with `waterfall_ref` (fund decrease + bad debt increase, WAD)."""
    return -p.vault.insurance_fund() + p.vault.bad_debt()


# ====================================================================== the four findings


def test_finding1_insolvent_account_cannot_pay_colluder(protocol):
    """Finding 1 (Mango pattern): A deposits 10,000 USDC and goes long 50 ETH-PERP at 2,000
    against its colluder B; ETH falls to 1,790, so A's equity is -500. B then buys A's 50 ETH
    at 1,700.5 (index - 5%, exactly the band edge): the trade only reduces A's position and
    `_health` is 0 both before and after (equity <= 0), so `_trade_allowed` accepts it and
    moves 4,475 of value from the insurance fund's future payout to B. SAFE: the trade is
    refused ("engine: below initial margin": A is below IM after it, and its equity valued at
    the index falls), and liquidating A costs the fund exactly its 500 deficit."""
    p = protocol
    e = p.engine
    a, b, keeper = p.new_user(), p.new_user(), p.new_user()
    fund_insurance(p, 1_000_000)
    p.deposit_usd(a, 10_000)
    p.deposit_usd(b, 1_000_000)
    p.deposit_usd(keeper, 1_000_000)
    p.trade(a, b, "ETH-PERP", 50 * WAD, 2000 * WAD)
    set_eth(p, 1790 * 10**8)
    assert equity(p, a) == -500 * WAD
    paid0 = waterfall(p)

    with boa.reverts("engine: below initial margin"):
        p.trade(b, a, "ETH-PERP", 50 * WAD, 17005 * WAD // 10)  # 1790 * 0.95, the band edge
    assert e.positions(a.address, ETH_PERP).size == 50 * WAD
    assert equity(p, a) == -500 * WAD

    logs = liquidate(p, keeper, a)
    (cover,) = named(logs, "DeficitCovered")
    assert cover.from_insurance + cover.bad_debt == 500 * WAD
    assert waterfall(p) - paid0 == 500 * WAD


def test_finding2_dust_wash_trade_cannot_move_funding(protocol):
    """Finding 2: funding moves by `funding_smoothing` of a trade's premium whatever the
    trade's size, so a 1-wei wash trade between two colluding accounts at the band edge sets
    the rate to its cap (0.1 x 5% = 0.5% per 8 h) and every honest long pays it. SAFE (the fix
    being written: a trade moves the rate towards its premium by
        funding_smoothing * min(1, trade notional / open-interest notional)):
    with 100 ETH of honest open interest, a 1-wei trade changes the rate by at most
    0.1 * (1e-18 * 2100 / (100 * 2000)) * 5% (< 1 wei of rate) plus 1 wei of rounding, and the
    honest long pays (next to) nothing over the next 8 hours."""
    p = protocol
    e = p.engine
    h1, h2, c1, c2 = (p.new_user() for _ in range(4))
    for x in (h1, h2, c1, c2):
        p.deposit_usd(x, 1_000_000)
    p.trade(h1, h2, "ETH-PERP", 100 * WAD, 2000 * WAD)  # honest, at the index: premium 0
    assert e.markets(ETH_PERP).funding_rate == 0
    oi = e.open_interest(ETH_PERP)
    edge = 2000 * WAD + 2000 * WAD * e.max_price_deviation() // WAD  # 2100: index + 5%
    p.trade(c1, c2, "ETH-PERP", 1, edge)  # the dust wash trade
    rate = e.markets(ETH_PERP).funding_rate
    premium = Fraction(edge - 2000 * WAD, 2000 * WAD)
    weight = min(Fraction(1), Fraction(1 * edge, oi * 2000 * WAD))
    bound = Fraction(e.funding_smoothing(), WAD) * weight * premium * WAD + 1
    assert abs(rate) <= bound, f"a 1-wei trade moved the funding rate to {rate / WAD:.4%} per 8 h"

    eq0 = equity(p, h1)
    boa.env.time_travel(seconds=FUNDING_PERIOD)
    set_eth(p, 2000 * 10**8)
    paid = eq0 - equity(p, h1)
    # 100 ETH x 2000 x |rate| over one period, plus rounding
    assert paid <= 100 * 2000 * bound + 2, f"the honest long paid {paid / WAD} USD of funding in 8 h"


def _first_round_at_or_after(feed, t: int) -> tuple:
    """(round id, answer, updatedAt) of the first round of a mock feed stamped at or after t,
    found by walking back from the latest round with getRoundData; None if there is none."""
    rid, answer, _, updated, _ = feed.latestRoundData()
    if updated < t:
        return None
    found = (rid, answer, updated)
    while rid > 1:
        rid -= 1
        r, ans, _, upd, _ = feed.getRoundData(rid)
        if upd < t:
            break
        found = (r, ans, upd)
    return found


def expected_settlement(p, market_id: int):
    """Median over the price id's feeds of each feed's first answer at or after expiry (WAD),
    as the fixed `settle_market` must record it; None if some feed has none yet."""
    m = p.engine.markets(market_id)
    price_id = p.engine.underlyings(m.underlying).price_id
    answers = []
    for feed in p.oracle.feeds(price_id):
        agg = p.feeds[[s for s, f in p.feeds.items() if f.address == feed.aggregator][0]]
        first = _first_round_at_or_after(agg, m.expiry)
        if first is None:
            return None
        answers.append(first[1] * feed.scale)
    answers.sort()
    n = len(answers)
    return answers[n // 2] if n % 2 else (answers[n // 2 - 1] + answers[n // 2]) // 2


def test_finding3_settlement_price_independent_of_call_time(protocol):
    """Finding 3: `settle_market` records the index at the moment it is called, so whoever
    settles a dated future first picks the price: ETH-FUT expires; the feed publishes 2,000 one
    second after expiry and 2,400 fifty minutes later (still fresh): a settle at that point pays
    a 10 ETH long 4,000. SAFE: the settlement price is the median over the feeds of each feed's
    first round with updatedAt >= expiry (2,000 here), whenever the call is made, and the long
    bought at 2,000 gets nothing."""
    p = protocol
    e = p.engine
    long_, short = p.new_user(), p.new_user()
    p.deposit_usd(long_, 100_000)
    p.deposit_usd(short, 100_000)
    p.trade(long_, short, "ETH-FUT", 10 * WAD, 2000 * WAD)
    expiry = e.markets(ETH_FUT).expiry
    boa.env.time_travel(seconds=expiry + 1 - now())
    set_eth(p, 2000 * 10**8)
    boa.env.time_travel(seconds=50 * 60 - 1)  # expiry + 50 min: the first answer is still fresh
    set_eth(p, 2400 * 10**8)
    assert p.oracle.index_price(ETH) == 2400 * WAD
    assert expected_settlement(p, ETH_FUT) == 2000 * WAD
    eq0 = equity(p, long_)
    with boa.env.prank(short.address):  # any caller; here the side that would lose
        e.settle_market(ETH_FUT)
    assert e.markets(ETH_FUT).settlement_price == 2000 * WAD
    e.settle_positions(long_.address)
    assert p.vault.cash(long_.address) == 100_000 * WAD
    assert equity(p, long_) - eq0 == 10 * (2000 - 2400) * WAD  # marked at the index before


def gap_allowance_notional(gross: int, p_old: int, p_new: int, mm_rate: int) -> Fraction:
    """gross notional x max(0, |P_new / P_old - 1| - mm_rate) (WAD USD, exact)."""
    j = abs(Fraction(p_new, p_old) - 1)
    return gross * max(Fraction(0), j - Fraction(mm_rate, WAD))


def test_finding4_same_block_gap_front_run(protocol):
    """Finding 4: an attacker who knows a price gap is coming opens, in one block, a 10x long
    on account V against its own account W, lets the feed publish -30% and liquidates V with
    its third account L: W keeps the 30,000 gain and the insurance fund pays V's 20,000
    deficit. SAFE (the fix being written): no liquidation of an account in the same block
    (block.number) in which it increased a position ("engine: position opened this block");
    the keeper liquidates V in the next block, and the fund's loss stays within the gap
    allowance: sum over the coalition's accounts of gross notional before the move x
    max(0, j - mm_rate) with j = 30%, i.e. (100,000 + 100,000) x 25% = 50,000; and within V's
    own deficit created by the move (20,000), the tighter allowance the state machine uses."""
    p = protocol
    e = p.engine
    v, w, l, keeper = (p.new_user() for _ in range(4))
    fund_insurance(p, 1_000_000)
    p.deposit_usd(v, 10_000)
    for x in (w, l, keeper):
        p.deposit_usd(x, 1_000_000)
    b0 = block()
    p.trade(v, w, "ETH-PERP", 50 * WAD, 2000 * WAD)  # 100,000 notional on 10,000: exactly IM
    gross = {x.address: 50 * 2000 * WAD for x in (v, w)}
    deficit0 = max(0, -equity(p, v))
    set_eth(p, 1400 * 10**8)  # -30%
    deficit_created = max(0, -equity(p, v)) - deficit0
    assert block() == b0  # all in one block
    paid0 = waterfall(p)
    with boa.env.prank(l.address), boa.reverts("engine: position opened this block"):
        e.liquidate(v.address)
    assert e.positions(v.address, ETH_PERP).size == 50 * WAD

    boa.env.time_travel(blocks=1)
    liquidate(p, keeper, v)
    loss = waterfall(p) - paid0
    allowance = sum(gap_allowance_notional(g, 2000 * WAD, 1400 * WAD, MM_RATE) for g in gross.values())
    assert loss <= allowance
    assert loss <= deficit_created
