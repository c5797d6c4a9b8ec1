"""CollateralVault depeg rule: the settlement asset (USDC) valued at its own USD price.

Rule (`CollateralVault._cash_value`, docs/threat-model.md "Settlement-asset depeg"; Derive v2
StandardManager depeg parameters), p = the USDC / USD index price, WAD:
    cash >= 0: floor(cash * max(0, min(p, 1) - factor * max(threshold - p, 0)))
    cash < 0:  -ceil(-cash * max(p, 1))
    p unavailable (or no settlement price id): cash at par.
config/local.yaml deploys it with threshold 0.98 and factor 1 on a mock USDC / USD feed at 1.00.
"""

from __future__ import annotations

import csv
import dataclasses
from decimal import ROUND_FLOOR, Decimal, localcontext
from pathlib import Path

import boa
import pytest

from keeper.config import load_config
from tests.boa_protocol import WAD, BoaProtocol, events

USDC = 10**6
THRESHOLD = 98 * 10**16
FACTOR = WAD
ROOT = Path(__file__).resolve().parents[2]
MARCH_2023 = ROOT / ".." / "shared" / "data" / "usdc_usd_chainlink_rounds_2022-11_2023-03.csv"


def usdc_price(p, price: float | str) -> None:
    """Publish a USDC / USD answer (8 decimals) on the mock feed, stamped now."""
    p.feeds["USDC"].set_answer(int(Decimal(str(price)) * 10**8))


def cash_user(p, dollars: int):
    user = p.new_user()
    p.deposit_usd(user, dollars)
    return user


def usdc_pid(p) -> int:
    return p.deployment.price_ids["USDC"]


# ------------------------------------------------------------------ wiring and setters


def test_deployed_with_the_config_rule(protocol):
    v = protocol.vault
    assert v.settlement_priced()
    assert v.settlement_price_id() == usdc_pid(protocol) == 2
    assert (v.depeg_threshold(), v.depeg_factor()) == (THRESHOLD, FACTOR)


def test_depeg_params_bounds_roles_and_event(protocol):
    p = protocol
    v = p.vault
    v.set_depeg_params(99 * 10**16, 2 * WAD)  # Derive mainnet values
    (ev,) = events(v, "DepegParamsSet")
    assert (ev.threshold, ev.factor) == (99 * 10**16, 2 * WAD)
    v.set_depeg_params(9 * 10**17, 0)
    v.set_depeg_params(WAD, 3 * WAD)
    with boa.reverts("vault: depeg threshold out of bounds"):
        v.set_depeg_params(9 * 10**17 - 1, WAD)
    with boa.reverts("vault: depeg threshold out of bounds"):
        v.set_depeg_params(WAD + 1, WAD)
    with boa.reverts("vault: depeg factor out of bounds"):
        v.set_depeg_params(THRESHOLD, 3 * WAD + 1)
    with boa.env.prank(p.new_user().address), boa.reverts():
        v.set_depeg_params(THRESHOLD, FACTOR)


def test_settlement_price_id_setter(protocol):
    p = protocol
    v = p.vault
    with boa.reverts("vault: settlement price out of bounds"):
        v.set_settlement_price_id(p.deployment.price_ids["ETH"])  # $2,000 is no USD stablecoin
    with boa.reverts():
        v.set_settlement_price_id(7)  # unknown price id: the oracle reverts
    with boa.env.prank(p.new_user().address), boa.reverts():
        v.set_settlement_price_id(usdc_pid(p))
    v.set_settlement_price_id(usdc_pid(p))
    (ev,) = events(v, "SettlementPriceIdSet")
    assert (ev.price_id, ev.price) == (usdc_pid(p), WAD)


def test_unset_counts_cash_at_par():
    """A deployment without `depeg:` behaves as before: cash 1:1 whatever a USDC feed says; the
    rule starts when the admin sets the price id."""
    config = dataclasses.replace(load_config(), depeg=None)
    eoa = boa.env.eoa
    with boa.env.anchor():
        p = BoaProtocol.deploy(config)  # sets boa.env.eoa to its own admin: restored below
        assert not p.vault.settlement_priced()
        a = cash_user(p, 100_000)
        usdc_price(p, "0.88")
        assert p.vault.cash_value(a.address) == 100_000 * WAD
        assert p.equity(a.address) == 100_000 * WAD
        # a price id set without the rule's parameters (0 until set): cash at min(p, 1) only
        assert (p.vault.depeg_threshold(), p.vault.depeg_factor()) == (0, 0)
        p.vault.set_settlement_price_id(p.deployment.price_ids["USDC"])
        assert p.vault.cash_value(a.address) == 88_000 * WAD
        p.vault.set_depeg_params(THRESHOLD, FACTOR)
        assert p.vault.cash_value(a.address) == 78_000 * WAD
    boa.env.eoa = eoa


# ------------------------------------------------------------------ hand-calculated values


def test_positive_cash_hand_calculated(protocol):
    p = protocol
    v = p.vault
    a = cash_user(p, 100_000)
    # at par and anywhere in [threshold, 1]: min(p, 1) only
    assert v.cash_value(a.address) == 100_000 * WAD
    usdc_price(p, "0.99")
    assert v.cash_value(a.address) == 99_000 * WAD
    usdc_price(p, "0.98")  # at the threshold: no extra haircut (continuous)
    assert v.cash_value(a.address) == 98_000 * WAD
    # 0.95 with threshold 0.98, factor 1: 0.95 - 1 x 0.03 = 0.92 -> exactly $92,000
    usdc_price(p, "0.95")
    assert v.cash_value(a.address) == 92_000 * WAD
    assert p.equity(a.address) == 92_000 * WAD  # what the engine uses
    # factor 2 (Derive mainnet): 0.95 - 2 x 0.03 = 0.89
    v.set_depeg_params(THRESHOLD, 2 * WAD)
    assert v.cash_value(a.address) == 89_000 * WAD
    # above par: positive cash never counts above 1:1
    usdc_price(p, "1.02")
    assert v.cash_value(a.address) == 100_000 * WAD
    # deep depeg: the haircut reaches the whole value and stops at 0 (never negative)
    v.set_depeg_params(THRESHOLD, 3 * WAD)
    usdc_price(p, "0.70")  # 0.70 - 3 x 0.28 < 0
    assert v.cash_value(a.address) == 0


def test_positive_cash_rounds_down(protocol):
    p = protocol
    v = p.vault
    a = p.new_user()
    p.deposit(a, "USDC", 123_456_789)  # $123.456789
    usdc_price(p, "0.95123457")
    factor = 1_234_567_890_123_456_789  # deliberately odd
    p.vault.set_depeg_params(THRESHOLD, factor)
    cash = 123_456_789 * 10**12
    px = 95_123_457 * 10**10
    unit = px * WAD - factor * (THRESHOLD - px)
    expected = cash * unit // WAD**2
    assert cash * unit % WAD**2 != 0  # the floor is real
    assert v.cash_value(a.address) == expected
    assert v.margin_inputs(a.address, p.oracle.index_prices())[0] == expected


def test_margin_inputs_values_cash_at_the_given_prices(protocol):
    p = protocol
    v = p.vault
    a = cash_user(p, 1_000)
    eth, btc = 2000 * WAD, 30000 * WAD
    assert v.margin_inputs(a.address, [eth, btc, 95 * 10**16]) == (920 * WAD, 0)
    assert v.margin_inputs(a.address, [eth, btc, WAD]) == (1_000 * WAD, 0)
    # no valid settlement price (0) or none given: par
    assert v.margin_inputs(a.address, [eth, btc, 0]) == (1_000 * WAD, 0)
    assert v.margin_inputs(a.address, [eth, btc]) == (1_000 * WAD, 0)


def test_debt_counts_at_par_or_worse(protocol):
    p = protocol
    v = p.vault
    a = p.new_user()
    with boa.env.prank(p.engine.address):
        v.settle_cash(a.address, -50_000 * WAD)
    usdc_price(p, "0.88")  # a cheaper USDC does not shrink a debt
    assert v.cash_value(a.address) == -50_000 * WAD
    usdc_price(p, "1.02")  # a dearer one grows it
    assert v.cash_value(a.address) == -51_000 * WAD
    # rounding against the debtor: 1 wei of debt at 1.5 counts as 2 wei
    b = p.new_user()
    with boa.env.prank(p.engine.address):
        v.settle_cash(b.address, -1)
    usdc_price(p, "1.5")
    assert v.cash_value(b.address) == -2


# ------------------------------------------------------------------ missing price


def open_long(p, user, maker, size_eth: int, price: int = 2000):
    p.trade(user, maker, "ETH-PERP", size_eth * WAD, price * WAD)


def test_missing_price_counts_par_and_keeps_collateral_in_risky_accounts(protocol):
    p = protocol
    v = p.vault
    maker = cash_user(p, 10_000_000)
    risky = cash_user(p, 100_000)
    p.deposit(risky, "WETH", 10 * WAD)
    open_long(p, risky, maker, 10)
    idle = cash_user(p, 1_000)
    p.deposit(idle, "WETH", 10 * WAD)
    usdc_price(p, 0)  # a non-positive answer: no valid USDC price
    assert p.oracle.index_prices()[usdc_pid(p)] == 0
    # valuation does not freeze or collapse: cash at par
    assert v.cash_value(risky.address) == 100_000 * WAD
    assert p.equity(risky.address) == 100_000 * WAD + 10 * 2000 * 85 * WAD // 100
    # an account with risk cannot take collateral out against possibly depegged cash ...
    with boa.env.prank(risky.address), boa.reverts("vault: no settlement price"):
        v.withdraw(p.tokens["WETH"].address, WAD)
    # ... but may take the cash itself out (within IM) ...
    with boa.env.prank(risky.address):
        v.withdraw(p.usdc.address, 1_000 * USDC)
    # ... and a risk-free account withdraws freely
    with boa.env.prank(idle.address):
        v.withdraw(p.tokens["WETH"].address, 10 * WAD)
        v.withdraw(p.usdc.address, 1_000 * USDC)
    # once the price is back, the risky account's collateral is free again (within IM)
    usdc_price(p, "1.0")
    with boa.env.prank(risky.address):
        v.withdraw(p.tokens["WETH"].address, WAD)


def test_missing_price_does_not_block_liquidation(protocol):
    p = protocol
    maker = cash_user(p, 10_000_000)
    liq = cash_user(p, 1_000_000)
    a = cash_user(p, 10_000)
    open_long(p, a, maker, 50)  # $100k notional, IM $10k
    usdc_price(p, 0)
    p.set_price("ETH", 1850)  # -$7,500: equity $2,500 < MM $4,625
    assert p.engine.is_liquidatable(a.address)
    with boa.env.prank(liq.address):
        assert p.engine.liquidate(a.address) > 0


# ------------------------------------------------------------------ March 2023, replayed


def read_rounds() -> list[dict]:
    if not MARCH_2023.exists():
        pytest.skip(f"real USDC / USD rounds not found at {MARCH_2023} (see ../shared/data/SOURCES.md)")
    with open(MARCH_2023, newline="") as f:
        return list(csv.DictReader(f))


def rule_in_decimals(cash_usd: int, price: Decimal, threshold: Decimal, factor: Decimal) -> int:
    """The rule computed independently from the CSV's decimal price, in exact decimal arithmetic:
    WAD USD of `cash_usd` dollars of positive cash."""
    with localcontext() as ctx:
        ctx.prec = 80
        unit = min(price, Decimal(1)) - factor * max(threshold - price, Decimal(0))
        value = Decimal(cash_usd) * max(unit, Decimal(0)) * WAD
        return int(value.to_integral_value(rounding=ROUND_FLOOR))


def test_march_2023_rounds_value_100k_usdc_by_the_rule(protocol):
    """Every Chainlink USDC / USD round of 2022-11-20 .. 2023-03-12 pushed through the mock
    feed: the vault values 100,000 USDC exactly as the rule computed from the CSV; an account
    healthy at par (long 450 ETH from $2,000, ETH at $1,900) becomes liquidatable exactly in the
    rounds where the rule says so, and can then be liquidated."""
    rows = read_rounds()
    p = protocol
    v = p.vault
    maker = cash_user(p, 10_000_000)
    holder = cash_user(p, 100_000)
    trader = cash_user(p, 100_000)
    open_long(p, trader, maker, 450)  # IM 10% of $900k = $90k <= $100k
    p.set_price("ETH", 1900)  # P&L -$45,000; MM 5% of $855k = $42,750
    pnl, mm = -45_000 * WAD, 42_750 * WAD
    assert p.maintenance_margin(trader.address) == mm
    threshold, factor = Decimal("0.98"), Decimal(1)
    low, flips = None, []
    for row in rows:
        p.feeds["USDC"].set_answer(int(row["answer_raw"]))
        price = Decimal(row["price"])
        expected = rule_in_decimals(100_000, price, threshold, factor)
        assert v.cash_value(holder.address) == expected, row["timestamp"]
        assert p.equity(holder.address) == expected
        equity = rule_in_decimals(100_000, price, threshold, factor) + pnl
        assert p.equity(trader.address) == equity
        assert p.engine.is_liquidatable(trader.address) == (equity < mm), row["timestamp"]
        if equity < mm:
            flips.append(row["timestamp"])
        if low is None or price < low[0]:
            low = (price, row["timestamp"], expected)
    # the March 2023 low: 0.88 -> 100,000 USDC counts 0.88 - (0.98 - 0.88) = 0.78 -> $78,000ish
    assert low[0] < Decimal("0.89")
    assert low[2] < 79_000 * WAD
    assert flips and all(t.startswith("2023-03") for t in flips)
    # at the par rows the account was healthy, and at the low it is liquidated
    lowest = min(rows, key=lambda r: Decimal(r["price"]))
    p.feeds["USDC"].set_answer(int(lowest["answer_raw"]))
    liq = cash_user(p, 1_000_000)
    with boa.env.prank(liq.address):
        assert p.engine.liquidate(trader.address) > 0
    print(
        f"\nMarch 2023 low {low[0]} at {low[1]}: 100,000 USDC counts {low[2] / WAD:,.2f} USD; "
        f"liquidatable in {len(flips)} of {len(rows)} rounds ({flips[0]} .. {flips[-1]})"
    )


# ------------------------------------------------------------------ collateral sale in a depeg


@pytest.mark.parametrize(
    "usdc,divisor",
    [(90 * 10**16, 90 * 10**16), (WAD, WAD), (102 * 10**16, WAD), (0, WAD)],
    ids=["0.90", "par", "above par", "no price"],
)
def test_collateral_sale_is_priced_in_settlement_units(protocol, usdc, divisor):
    """`liquidate_collateral` sells WETH at index x (1 - discount) / min(p, 1) settlement units per
    token: with USDC at 0.90 the liquidator pays 1/0.9 more cash, so it gets the discount (2%)
    and not the depeg as well; at or above par, or with no USDC price, 1:1."""
    p = protocol
    v = p.vault
    a, liq = p.new_user(), cash_user(p, 1_000_000)
    p.deposit(a, "WETH", 10 * WAD)
    with boa.env.prank(p.engine.address):
        v.settle_cash(a.address, -5_000 * WAD)
        v.liquidate_collateral(a.address, liq.address, [2000 * WAD, 30_000 * WAD, usdc], 2 * 10**16)
    (sale,) = events(v, "CollateralLiquidated")
    price = 2000 * WAD * (WAD - 2 * 10**16) // WAD * WAD // divisor  # discount min(2%, (1 - 0.85) / 2)
    amount = (5_000 * WAD * WAD + price - 1) // price
    assert (sale.amount, sale.payment) == (amount, amount * price // WAD)
    assert v.cash(a.address) == -5_000 * WAD + sale.payment >= 0
    assert v.cash(liq.address) == 1_000_000 * WAD - sale.payment
    assert v.collateral_balances(a.address)[0] == 10 * WAD - amount
