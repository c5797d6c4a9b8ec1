"""Bad debt socialized over positive cash (CollateralVault), exact to the wei: a withdrawal's
withheld share rounds up, and insurance funding and liquidation penalties retire bad debt first.

Every expected value is a hand calculation in Python ints that mirrors the contracts' rounding
(tests/contracts/default_listing.py states the listing and the reference liquidation step).
"""

from __future__ import annotations

import boa
import pytest

from tests.boa_protocol import WAD, ceil_div, liquidate, named
from tests.contracts.default_listing import BTC_PERP, ETH_PERP, PENALTY, SCALE, SHARE, USDC, close_step


def accounting(p, users) -> int:
    """Checks total_positive_cash and returns the vault's rounding dust:
    balance * 1e12 - (sum(cash) + fund + unrealized PnL - bad_debt), which must be >= 0."""
    v = p.vault
    cash = [v.cash(u.address) for u in users]
    assert v.total_positive_cash() == sum(max(c, 0) for c in cash)
    unrealized = sum(p.equity(u.address) - c for u, c in zip(users, cash))  # no collateral here
    held = p.usdc.balanceOf(v.address) * SCALE
    dust = held - (sum(cash) + v.insurance_fund() + unrealized - v.bad_debt())
    assert 0 <= dust < 100
    return dust


def withdraw(p, user, units):
    before = p.usdc.balanceOf(user.address)
    with boa.env.prank(user.address):
        p.vault.withdraw(p.usdc.address, units)
        logs = p.vault.get_logs()
    return p.usdc.balanceOf(user.address) - before, logs


@pytest.fixture
def bad_debt(protocol):
    """a (2,000 USD) buys 10 ETH at 2000 from b; ETH falls to 1700: a's equity is -1,000 USD and,
    with an empty insurance fund, its liquidation leaves exactly 1,000 USD of bad debt."""
    p = protocol
    v = p.vault
    a, b, liq = p.new_user(), p.new_user(), p.new_user()
    users = [a, b, liq]
    assert (v.insurance_fund(), v.bad_debt(), v.total_positive_cash()) == (0, 0, 0)
    p.deposit_usd(a, 2_000)
    p.deposit_usd(b, 100_000)
    p.deposit_usd(liq, 100_000)
    assert v.total_positive_cash() == 202_000 * WAD
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    accounting(p, users)
    p.set_price("ETH", 1700)
    assert p.equity(a.address) == -1_000 * WAD
    accounting(p, users)
    notional, logs = liquidate(p, liq, a)
    assert notional == 17_000 * WAD
    (cover,) = named(logs, "DeficitCovered")
    assert (cover.account, cover.from_insurance, cover.bad_debt) == (a.address, 0, 1_000 * WAD)
    (ev,) = named(logs, "Liquidation")
    assert ev.penalty == 0  # negative equity: nothing to charge
    assert v.cash(a.address) == 0 and v.bad_debt() == 1_000 * WAD and v.insurance_fund() == 0
    assert v.total_positive_cash() == 200_000 * WAD
    assert accounting(p, users) == 0
    return p, users


def test_withdrawal_haircut_exact(bad_debt):
    p, users = bad_debt
    a, b, liq = users
    v = p.vault
    x = 333_333_333  # 333.333333 USDC
    # withheld = ceil(x * 1000e18 / 200000e18) = ceil(1666666.665) = 1666667 units
    withheld = ceil_div(x * 1_000 * WAD, 200_000 * WAD)
    assert withheld == 1_666_667
    received, logs = withdraw(p, b, x)
    assert received == x - withheld == 331_666_666
    assert v.cash(b.address) == 100_000 * WAD - x * SCALE  # debited in full
    assert v.bad_debt() == 1_000 * WAD - withheld * SCALE == 998_333_333 * 10**12
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (withheld * SCALE, True)
    (w,) = named(logs, "Withdraw")
    assert w.amount == received
    assert v.total_positive_cash() == 200_000 * WAD - x * SCALE
    accounting(p, users)
    # the second withdrawer pays the same rate on the new base
    y = 1_000 * USDC
    bd, tpc = v.bad_debt(), v.total_positive_cash()
    withheld2 = ceil_div(y * bd, tpc)
    assert withheld2 == 5_000_000  # ceil(1e9 * 998333333 / 199666666667) = ceil(4999999.9983)
    received2, logs = withdraw(p, liq, y)
    assert received2 == y - withheld2
    assert v.bad_debt() == bd - withheld2 * SCALE
    assert v.cash(liq.address) == 100_000 * WAD - y * SCALE
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (withheld2 * SCALE, True)
    accounting(p, users)


def test_funding_insurance_retires_bad_debt_first(bad_debt):
    p, users = bad_debt
    v = p.vault
    balance = p.usdc.balanceOf(v.address)
    logs = p.fund_insurance(100)  # less than the bad debt: all of it retires bad debt
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (100 * WAD, False)
    (fund,) = named(logs, "InsuranceFunded")
    assert fund.amount == 100 * WAD
    assert (v.bad_debt(), v.insurance_fund()) == (900 * WAD, 0)
    accounting(p, users)
    logs = p.fund_insurance(5_000)  # the rest goes to the fund
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (900 * WAD, False)
    assert (v.bad_debt(), v.insurance_fund()) == (0, 4_100 * WAD)
    assert p.usdc.balanceOf(v.address) == balance + 5_100 * USDC
    accounting(p, users)
    logs = p.fund_insurance(1)  # no bad debt: no retirement
    assert named(logs, "BadDebtRetired") == []
    assert v.insurance_fund() == 4_101 * WAD
    # and without bad debt a withdrawal pays in full
    b = users[1]
    received, logs = withdraw(p, b, 1_000 * USDC)
    assert received == 1_000 * USDC and named(logs, "BadDebtRetired") == []
    accounting(p, users)


def test_liquidation_penalty_retires_bad_debt_first(bad_debt):
    p, users = bad_debt
    a, b, liq = users
    v = p.vault
    c = p.new_user()
    users.append(c)
    p.deposit_usd(c, 10_000)
    p.trade(c, b, BTC_PERP, 3 * WAD, 30_000 * WAD)
    p.set_price("BTC", 27_300)  # c: equity 10000 - 8100 = 1900 < MM 4095
    accounting(p, users)
    amount, closed, penalty = close_step(
        1_900 * WAD, 4_095 * WAD, 4_095 * WAD, 81_900 * WAD, 3 * WAD, 27_300 * WAD, penalty_rate=PENALTY
    )
    share = penalty * SHARE // WAD
    to_fund = penalty - share
    assert 0 < to_fund < 1_000 * WAD  # smaller than the bad debt: all of it retires bad debt
    liq_cash = v.cash(liq.address)
    _, logs = liquidate(p, liq, c)
    (ev,) = named(logs, "Liquidation")
    assert (ev.notional, ev.penalty) == (closed, penalty)
    (ret,) = named(logs, "BadDebtRetired")
    assert (ret.amount, ret.by_withdrawal) == (to_fund, False)
    assert v.bad_debt() == 1_000 * WAD - to_fund
    assert v.insurance_fund() == 0
    assert v.cash(liq.address) == liq_cash + share
    assert v.cash(c.address) == 1_900 * WAD - penalty
    accounting(p, users)
    # a later withdrawal is haircut on what is left
    bd, tpc = v.bad_debt(), v.total_positive_cash()
    received, _ = withdraw(p, b, 100 * USDC)
    assert received == 100 * USDC - ceil_div(100 * USDC * bd, tpc)
    accounting(p, users)


def test_penalty_larger_than_bad_debt_splits(bad_debt):
    """A penalty's fund share above the outstanding bad debt: the rest reaches the fund."""
    p, users = bad_debt
    a, b, liq = users
    v = p.vault
    p.fund_insurance(990)  # bad debt 1000 -> 10
    assert (v.bad_debt(), v.insurance_fund()) == (10 * WAD, 0)
    c = p.new_user()
    users.append(c)
    p.deposit_usd(c, 10_000)
    p.trade(c, b, BTC_PERP, 3 * WAD, 30_000 * WAD)
    p.set_price("BTC", 27_300)
    _, _, penalty = close_step(
        1_900 * WAD, 4_095 * WAD, 4_095 * WAD, 81_900 * WAD, 3 * WAD, 27_300 * WAD, penalty_rate=PENALTY
    )
    to_fund = penalty - penalty * SHARE // WAD
    _, logs = liquidate(p, liq, c)
    (ret,) = named(logs, "BadDebtRetired")
    assert (ret.amount, ret.by_withdrawal) == (10 * WAD, False)
    assert (v.bad_debt(), v.insurance_fund()) == (0, to_fund - 10 * WAD)
    accounting(p, users)


def test_withdrawal_all_withheld_when_bad_debt_exceeds_positive_cash(protocol):
    """Bad debt larger than all positive cash: a withdrawal pays nothing and retires amount * 1e12."""
    p = protocol
    v = p.vault
    a, b, liq = p.new_user(), p.new_user(), p.new_user()
    users = [a, b, liq]
    p.deposit_usd(a, 2_000)
    p.deposit_usd(b, 2_100)
    p.deposit_usd(liq, 2_000)
    p.trade(a, b, ETH_PERP, 10 * WAD, 2000 * WAD)
    p.set_price("ETH", 1000)  # a: equity 2000 - 10000 = -8000
    liquidate(p, liq, a)
    assert v.bad_debt() == 8_000 * WAD
    assert v.total_positive_cash() == 4_100 * WAD  # b 2100 + liq 2000 (unrealized not counted)
    accounting(p, users)
    before = p.usdc.balanceOf(b.address)
    received, logs = withdraw(p, b, 100 * USDC)  # b: equity 12100 >= IM 1000
    assert received == 0 and p.usdc.balanceOf(b.address) == before
    (ev,) = named(logs, "BadDebtRetired")
    assert (ev.amount, ev.by_withdrawal) == (100 * WAD, True)
    assert v.bad_debt() == 7_900 * WAD and v.cash(b.address) == 2_000 * WAD
    accounting(p, users)
