"""Auto-deleveraging (`MarginEngine.nominate`, `MarginEngine.deleverage`): a bankrupt account the
insurance fund and the backstop vault cannot cover is closed against the opposite positions in
profit nominated in its round, at the bankruptcy price, by non-increasing profit times leverage.
By hand, against the keeper's mirror (`keeper.risk.adl`), and against what a coalition would try:
deleverage an account the fund could cover, nominate an account in loss or on the same side,
leave its own account out of the round or deleverage before anyone else could nominate it, take
more than a counterparty's profit, and charge an account with no positions."""

from __future__ import annotations

import boa
import pytest

from keeper.risk import adl
from tests.boa_protocol import WAD, funded, liquidate, named, tx_logs

ETH_PERP = 0
SCALE = 10**12  # USDC units -> WAD


@pytest.fixture
def p(protocol):
    assert protocol.vault.insurance_fund() == 0 and protocol.vault.cash(protocol.backstop.address) == 0
    return protocol


def bankrupt(p):
    """A long 40 ETH-PERP (20 from `b` at $2,000, 20 from `c` at $1,900) on $10,000 of cash,
    with ETH at $1,650: equity about -$2,000. Returns (account, b, c)."""
    a, b, c = funded(p, 10_000), funded(p, 1_000_000), funded(p, 100_000)
    p.trade(a, b, ETH_PERP, 20 * WAD, 2000 * WAD)
    p.set_price("ETH", 1900)
    p.trade(a, c, ETH_PERP, 20 * WAD, 1900 * WAD)
    p.set_price("ETH", 1650)
    assert p.equity(a.address) < 0
    return a, b, c


def nominate(p, caller, account, counterparties, market=ETH_PERP) -> list:
    """`nominate` sent by `caller`; its `Nominated` events."""
    with boa.env.prank(caller.address):
        p.engine.nominate(account.address, market, [c.address for c in counterparties])
    return named(tx_logs(p.engine), "Nominated")


def nominated(p, caller, account, counterparties, market=ETH_PERP) -> None:
    """Open the account's round with `counterparties` and let its notice pass."""
    nominate(p, caller, account, counterparties, market)
    boa.env.time_travel(seconds=adl.NOTICE)


def deleverage(p, caller, account, market=ETH_PERP) -> tuple[int, list]:
    with boa.env.prank(caller.address):
        closed = p.engine.deleverage(account.address, market)
    return closed, named(tx_logs(p.engine), "Deleveraged")


def mirror(p, account, market=ETH_PERP) -> list[tuple[str, int, int, int]]:
    """What `keeper.risk.adl` says `deleverage` does now: (counterparty, size, price, score) per
    fill, the round's nominees in turn."""
    price = p.oracle.index_prices()[0]
    size = p.engine.positions(account.address, market).size
    penalty = p.engine.liquidation_penalty()
    cover, sale_gain = p.vault.deficit_cover(account.address, p.oracle.index_prices(), penalty)
    u = adl.uncovered(p.equity(account.address), sale_gain, cover)
    gross = sum(
        abs(p.engine.positions(account.address, m).size) * price // WAD for m in p.engine.open_markets(account.address)
    )
    need = adl.market_need(u, abs(size) * price // WAD, gross)
    nominees = [str(c) for c in p.engine.adl_round(account.address, market)[1]]
    positions = [p.engine.positions(c, market) for c in nominees]
    scores = [adl.eligible_score(q.size, q.entry_price, price, p.equity(c), size) for c, q in zip(nominees, positions)]
    turn = adl.turn_order(scores)
    done = adl.fills(size, price, need, [(positions[k].size, positions[k].entry_price) for k in turn])
    return [(nominees[k], f.size, f.price, scores[k]) for k, f in zip(turn, done)]


def test_deleverage_by_hand(p):
    a, b, c = bankrupt(p)
    keeper, flat = p.new_user(), funded(p, 50_000)
    nominated(p, keeper, a, [b, c])  # in any order: the contract ranks them
    equity = p.equity(a.address)
    # U = -equity (no fund, empty vault, no collateral); G = 40 * 1650; d = ceil(1650 * U / G)
    d = -(-1650 * WAD * -equity // (40 * 1650 * WAD))
    assert abs(d - 50 * WAD) < 10**15  # ~$50 a unit: $2,000 over 40 units
    # C (short from $1,900, $100k) ranks above B (short from $2,000, $1M): more leverage
    score_b = 350 * WAD * WAD // (2000 * WAD) * (20 * 1650 * WAD) // p.equity(b.address)
    score_c = 250 * WAD * WAD // (1900 * WAD) * (20 * 1650 * WAD) // p.equity(c.address)
    assert score_c > score_b
    expected = mirror(p, a)
    cash_b, cash_c = p.vault.cash(b.address), p.vault.cash(c.address)
    oi = p.engine.open_interest(ETH_PERP)
    closed, logs = deleverage(p, keeper, a)
    assert closed == 40 * WAD
    assert [(log.counterparty, log.size, log.price, log.score) for log in logs] == expected
    assert [log.price for log in logs] == [1650 * WAD + d] * 2
    assert [log.score for log in logs] == [score_c, score_b]
    # each short bought back 20 at 1650 + d: realized (entry - fill) * 20, funding aside
    assert abs(p.vault.cash(c.address) - cash_c - 20 * (1900 * WAD - 1650 * WAD - d)) < 10**16
    assert abs(p.vault.cash(b.address) - cash_b - 20 * (2000 * WAD - 1650 * WAD - d)) < 10**16
    # the account is flat at equity 0 (the discount rounds up: a few wei over, never under)
    assert p.engine.open_markets(a.address) == []
    assert 0 <= p.equity(a.address) < 40 * WAD // 10**15
    assert p.engine.open_interest(ETH_PERP) == oi - 40 * WAD
    assert p.vault.cash(flat.address) == 50_000 * 10**6 * SCALE
    assert p.vault.bad_debt() == 0


def test_deficit_beyond_the_fund_is_deleveraged_whole_and_the_fund_kept(p):
    # the fund holds $1,000 of a ~$2,000 deficit: it pays only deficits it can pay whole, so a
    # second bankrupt account in the same crash still finds it
    a, b, c = bankrupt(p)
    p.fund_insurance(1000)
    nominated(p, p.new_user(), a, [c, b])
    deficit = -p.equity(a.address)
    expected = mirror(p, a)
    _, logs = deleverage(p, p.new_user(), a)
    d = -(-deficit * WAD // (40 * WAD))  # need = U (one market): ceil(U / 40) a unit
    assert logs[0].price == 1650 * WAD + d
    assert [(log.counterparty, log.size, log.price, log.score) for log in logs] == expected
    assert 0 <= p.equity(a.address) < 10**6
    assert p.vault.insurance_fund() == 1000 * WAD and p.vault.bad_debt() == 0


def test_deficit_the_fund_covers_is_not_deleveraged(p):
    a, b, c = bankrupt(p)
    p.fund_insurance(-p.equity(a.address) // WAD + 2)
    nominated(p, p.new_user(), a, [c, b])
    with boa.reverts("engine: deficit covered"):
        deleverage(p, p.new_user(), a)
    # a healthy account has no round to open
    with boa.reverts("engine: account not bankrupt"):
        nominate(p, p.new_user(), c, [a])


def test_nominations_and_rounds_are_checked(p):
    a, b, c = bankrupt(p)
    keeper = p.new_user()
    with boa.reverts("engine: no deleveraging round"):
        deleverage(p, keeper, a)
    # a long, like the account, is not a counterparty; nor the account itself, nor a flat one
    long_one = funded(p, 100_000)
    p.trade(long_one, funded(p, 100_000), ETH_PERP, 5 * WAD, 1650 * WAD)
    for wrong in (long_one, a, p.new_user()):
        with boa.reverts("engine: counterparty not in profit"):
            nominate(p, keeper, a, [wrong])
    # a short opened at $1,600 is in loss at $1,650: not eligible
    loser = funded(p, 100_000)
    p.set_price("ETH", 1600)
    p.trade(funded(p, 100_000), loser, ETH_PERP, 5 * WAD, 1600 * WAD)
    p.set_price("ETH", 1650)
    with boa.reverts("engine: counterparty not in profit"):
        nominate(p, keeper, a, [c, loser])
    with boa.reverts("engine: no position to deleverage"):
        nominate(p, keeper, a, [c], market=1)
    # an empty nomination opens the round; nobody can deleverage before its notice has passed
    assert nominate(p, keeper, a, []) == []
    opened = p.engine.adl_round(a.address, ETH_PERP)[0]
    assert opened == boa.env.evm.patch.timestamp
    boa.env.time_travel(seconds=adl.NOTICE - 1)
    with boa.reverts("engine: nominations still open"):
        deleverage(p, keeper, a)
    boa.env.time_travel(seconds=1)
    with boa.reverts("engine: no counterparty"):
        deleverage(p, keeper, a)
    # after the round lapses, the next nomination opens a new one, with a new notice
    boa.env.time_travel(seconds=adl.ROUND_TIME + 1)
    with boa.reverts("engine: no deleveraging round"):
        deleverage(p, keeper, a)
    (log,) = nominate(p, keeper, a, [b])
    assert log.opened_at == boa.env.evm.patch.timestamp > opened and log.counterparty == b.address
    with boa.reverts("engine: nominations still open"):
        deleverage(p, keeper, a)
    # a deleveraged round is closed: what is left needs a new round
    boa.env.time_travel(seconds=adl.NOTICE)
    closed, _ = deleverage(p, keeper, a)
    assert closed == 20 * WAD and p.engine.adl_round(a.address, ETH_PERP)[0] == 0
    with boa.reverts("engine: no deleveraging round"):
        deleverage(p, keeper, a)


def test_the_coalition_cannot_leave_its_own_account_out(p):
    """C (most leveraged short, the coalition's) would rather B paid: the coalition opens the round
    naming B alone and calls as soon as it may. An honest keeper's nomination during the notice
    puts C in the round, and `deleverage` takes C first whoever calls."""
    a, b, c = bankrupt(p)
    coalition, keeper = p.new_user(), p.new_user()
    nominate(p, coalition, a, [b])
    with boa.reverts("engine: nominations still open"):
        deleverage(p, coalition, a)
    (log,) = nominate(p, keeper, a, [c, b])  # B already nominated: passed over
    assert log.counterparty == c.address
    boa.env.time_travel(seconds=adl.NOTICE)
    expected = mirror(p, a)
    _, logs = deleverage(p, coalition, a)
    assert [log.counterparty for log in logs] == [c.address, b.address]
    assert [(log.counterparty, log.size, log.price, log.score) for log in logs] == expected


def test_a_full_round_admits_only_a_higher_rank(p):
    """Eight small shorts fill the round; a ninth with more leverage takes the place of the
    lowest-ranked, one with less is passed over, and `deleverage` runs in score order."""
    whale = funded(p, 10_000_000)
    shorts = []
    for k in range(10):
        u = funded(p, 2_000 + 1_000 * k)  # more cash, less leverage: lower score
        p.trade(whale, u, ETH_PERP, WAD, 2000 * WAD)
        shorts.append(u)
    a, b, c = bankrupt(p)
    keeper = p.new_user()
    nominate(p, keeper, a, shorts[1:9])  # ranks 1..8
    with boa.env.anchor():  # one call with both: the same as one after the other
        logs = nominate(p, keeper, a, [shorts[9], shorts[0]])
        assert [log.counterparty for log in logs] == [shorts[0].address]
        assert [str(x) for x in p.engine.adl_round(a.address, ETH_PERP)[1]] == [u.address for u in shorts[1:8]] + [
            shorts[0].address
        ]
    assert nominate(p, keeper, a, [shorts[9]]) == []  # below all eight: passed over
    (log,) = nominate(p, keeper, a, [shorts[0]])  # above all: replaces the lowest, shorts[8]
    assert log.counterparty == shorts[0].address
    nominees = [str(x) for x in p.engine.adl_round(a.address, ETH_PERP)[1]]
    assert nominees == [u.address for u in shorts[1:8]] + [shorts[0].address]
    boa.env.time_travel(seconds=adl.NOTICE)
    expected = mirror(p, a)
    _, logs = deleverage(p, keeper, a)
    assert [log.counterparty for log in logs] == [u.address for u in shorts[:8]]
    assert [(log.counterparty, log.size, log.price, log.score) for log in logs] == expected
    assert all(x.score > y.score for x, y in zip(logs, logs[1:]))


def test_counterparty_never_gives_back_more_than_its_profit(p):
    # a short opened at $1,660 has $10 a unit of profit at $1,650, less than the ~$50 discount
    a, b, c = bankrupt(p)
    thin = funded(p, 1_700)
    p.set_price("ETH", 1660)
    p.trade(funded(p, 100_000), thin, ETH_PERP, 10 * WAD, 1660 * WAD)
    p.set_price("ETH", 1650)
    nominated(p, p.new_user(), a, [b, c, thin])
    cash = p.vault.cash(thin.address)
    expected = mirror(p, a)
    assert expected[0][0] == thin.address and expected[0][3] > expected[1][3]  # most leveraged first
    _, logs = deleverage(p, p.new_user(), a)
    assert [(log.counterparty, log.size, log.price, log.score) for log in logs] == expected
    assert logs[0].price == 1660 * WAD  # its entry: it gives back its profit, no more
    assert p.vault.cash(thin.address) >= cash - 10**16  # funding aside, no loss
    assert p.engine.open_markets(thin.address) == []
    # B gave 10 of its 20: the rest keeps its entry, so its profit still ranks it next time
    rest = p.engine.positions(b.address, ETH_PERP)
    assert rest.size == -10 * WAD and rest.entry_price == 2000 * WAD


def test_collateral_sale_gain_counts_before_anyone_is_deleveraged(p):
    # a WETH deposit is valued at its haircut; a liquidation sale would raise more than that
    a, b = p.new_user(), funded(p, 1_000_000)
    p.deposit_usd(a, 2_000)
    p.deposit(a, "WETH", 4 * WAD)  # $8,000 at $2,000
    p.trade(a, b, ETH_PERP, 30 * WAD, 2000 * WAD)
    p.set_price("ETH", 1700)
    cover, sale_gain = p.vault.deficit_cover(a.address, p.oracle.index_prices(), p.engine.liquidation_penalty())
    assert cover == 0 and sale_gain > 0
    equity = p.equity(a.address)
    assert equity < 0
    nominated(p, p.new_user(), a, [b])
    expected = mirror(p, a)
    _, logs = deleverage(p, p.new_user(), a)
    assert [(log.counterparty, log.size, log.price, log.score) for log in logs] == expected
    # afterwards the sale covers what is left: liquidation leaves no bad debt
    assert abs(p.equity(a.address) + sale_gain) < 10**15
    liquidate(p, funded(p, 100_000), a)
    assert p.vault.bad_debt() == 0 and p.vault.cash(a.address) >= 0


def test_liquidation_after_adl_leaves_no_bad_debt_and_flat_accounts_whole(p):
    a, b, c = bankrupt(p)
    flat = funded(p, 50_000)
    nominated(p, p.new_user(), a, [c, b])
    deleverage(p, p.new_user(), a)
    assert p.vault.bad_debt() == 0
    # without ADL the same crash is bad debt, charged to cash holders like `flat` on withdrawal
    p.set_price("ETH", 2000)
    a2, _, _ = bankrupt(p)
    assert p.equity(a2.address) < 0
    liquidate(p, funded(p, 500_000), a2)
    assert p.vault.bad_debt() > 0
    assert p.vault.cash(flat.address) == 50_000 * 10**6 * SCALE


def test_nobody_liquidates_into_bad_debt_while_the_round_runs(p):
    """Liquidating first would turn what the round's counterparties pay into bad debt on
    everyone's cash: refused while the round has a nominee and only ADL can pay the deficit;
    allowed once the fund could pay it, once the round is deleveraged, or once it lapses."""
    a, b, c = bankrupt(p)
    liquidator = funded(p, 1_000_000)
    nominate(p, p.new_user(), a, [])  # an empty round holds nothing up
    with boa.env.anchor():
        liquidate(p, liquidator, a)
        assert p.vault.bad_debt() > 0
    nominate(p, p.new_user(), a, [c])
    with boa.reverts("engine: deleverage first"):
        liquidate(p, liquidator, a)
    with boa.env.anchor():  # the fund can pay it now: nothing for ADL to do
        p.fund_insurance(-p.equity(a.address) // WAD + 2)
        liquidate(p, liquidator, a)
        assert p.vault.bad_debt() == 0
    with boa.env.anchor():  # lapsed: the last resort
        boa.env.time_travel(seconds=adl.NOTICE + adl.ROUND_TIME + 1)
        liquidate(p, liquidator, a)
    boa.env.time_travel(seconds=adl.NOTICE)
    deleverage(p, p.new_user(), a)  # c closes 20 of the 40; the round is closed
    # a next round may open (b is eligible) for ADL_NOTICE: nobody liquidates meanwhile
    assert p.engine.deleveraged_at(a.address) == boa.env.evm.patch.timestamp
    boa.env.time_travel(seconds=adl.NOTICE)
    with boa.reverts("engine: deleverage first"):
        liquidate(p, liquidator, a)
    boa.env.time_travel(seconds=1)  # nobody nominated: the last resort
    liquidate(p, liquidator, a)
    assert p.vault.bad_debt() > 0  # what c's profit could not pay: the rest of the position


def test_a_round_whose_nominees_left_holds_nothing(p):
    """A round holds the liquidation only while a nominee could still pay: once its only nominee
    has bought back its short during the notice, the account is liquidated at once, not after
    the round lapses."""
    a, b, c = bankrupt(p)
    liquidator = funded(p, 1_000_000)
    nominate(p, p.new_user(), a, [c])
    with boa.reverts("engine: deleverage first"):
        liquidate(p, liquidator, a)
    p.trade(c, funded(p, 1_000_000), ETH_PERP, 20 * WAD, 1650 * WAD)
    opened, nominees = p.engine.adl_round(a.address, ETH_PERP)
    assert [str(x) for x in nominees] == [c.address] and p.engine.positions(c.address, ETH_PERP).size == 0
    now = boa.env.evm.patch.timestamp
    assert not adl.holds_liquidation(now, p.engine.deleveraged_at(a.address), [(opened, [0])])
    liquidate(p, liquidator, a)
    assert p.vault.bad_debt() > 0


def test_dust_nominees_cannot_open_the_way_to_a_liquidation_first(p):
    """Eight small, highly leveraged coalition shorts outrank the coalition's large short C, so
    any honest ranking nominates them, and the round closes only their few units. Right behind
    its `deleverage` the coalition liquidates the bankrupt account: its remaining deficit would
    become bad debt on everyone's cash while C kept its profit. Refused for ADL_NOTICE after a
    deleveraging while only ADL can pay: the keeper opens the next round, and C pays."""
    whale = funded(p, 10_000_000)
    dust = []
    for _ in range(adl.MAX_COUNTERPARTIES):
        u = funded(p, 300)
        p.trade(whale, u, ETH_PERP, WAD // 2, 2000 * WAD)
        dust.append(u)
    a, b, c = bankrupt(p)
    ranked = mirror_rank(p, a, [*dust, b, c])
    assert set(ranked[: adl.MAX_COUNTERPARTIES]) == {u.address for u in dust}  # they outrank C and B
    nominated(p, p.new_user(), a, dust)
    closed, _ = deleverage(p, p.new_user(), a)
    assert closed == adl.MAX_COUNTERPARTIES * WAD // 2  # 4 of the 40 units
    liquidator = funded(p, 1_000_000)
    with boa.reverts("engine: deleverage first"):
        liquidate(p, liquidator, a)
    boa.env.time_travel(seconds=adl.NOTICE - 1)
    keeper = p.new_user()
    assert all(p.engine.positions(u.address, ETH_PERP).size == 0 for u in dust)
    assert mirror_rank(p, a, [b, c]) == [c.address, b.address]
    nominate(p, keeper, a, [b, c])
    boa.env.time_travel(seconds=1)  # past the window after the deleveraging: the round holds it
    with boa.reverts("engine: deleverage first"):
        liquidate(p, liquidator, a)
    boa.env.time_travel(seconds=adl.NOTICE)
    expected = mirror(p, a)
    equity_c = p.equity(c.address)
    _, logs = deleverage(p, keeper, a)
    assert [(log.counterparty, log.size, log.price, log.score) for log in logs] == expected
    assert logs[0].counterparty == c.address and p.equity(c.address) < equity_c
    assert p.engine.positions(a.address, ETH_PERP).size == 0
    assert p.equity(a.address) >= 0 and p.vault.bad_debt() == 0


def mirror_rank(p, account, counterparties, market=ETH_PERP) -> list[str]:
    """`counterparties` by `keeper.risk.adl.eligible_score` against the account now, highest first."""
    price = p.oracle.index_prices()[0]
    size = p.engine.positions(account.address, market).size
    scored = []
    for u in counterparties:
        q = p.engine.positions(u.address, market)
        scored.append((adl.eligible_score(q.size, q.entry_price, price, p.equity(u.address), size), u.address))
    return [x for _, x in sorted(scored, reverse=True)]
