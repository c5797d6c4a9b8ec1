"""The keeper's mirror of the backstop vault's arithmetic (`contracts/BackstopVault.vy`) and of
the deficit waterfall (`CollateralVault.cover_deficit`), to the wei.

All functions take and return Python ints. Units: `assets` are settlement-token units, `shares`
the vault's share units (token decimals + 6), everything else WAD (1e18) USD or WAD fractions.

- shares and assets (OpenZeppelin ERC4626 virtual shares, `_decimalsOffset` = 6), rounded down:
      to_shares(a) = floor(a * (supply + 1e6) / (total + 1)),  to_assets(s) = floor(s * (total + 1) / (supply + 1e6))
  with total = `total_assets(equity, markup)` = floor(max(equity + markup, 0) / scale), scale =
  10**(18 - token decimals), where `markup` (`CollateralVault.sale_markup`) lifts the collateral the
  vault bought in liquidations from its haircut value to its liquidation sale price
- caller fee of a routed liquidation whose gain is `gain` (the vault's equity change plus any
  deficit of the account the waterfall took from the vault in the call):
      fee = floor(floor(gain * caller_fee_share / 1e18) / scale) token units; the rest, gain - fee * scale, is kept
- unwind (a Dutch auction): rate = floor(min(auction_discount, max_price_deviation) * min(elapsed, T) / T);
  the `size` units sold of an inventory of `inventory` carry floor(budget * size / inventory) of the
  market's budget (the budget first scaled to floor(budget * inventory / recorded) when the position
  shrank to `inventory` from `recorded` other than by an unwind); per unit
      d = min(floor(index * rate / 1e18), floor(carried * 1e18 / size))
  the price is index - d for the vault's long, index + d for its short, and the discount charged
  is ceil(d * size / 1e18)
- liquidation sale price of a whole token: s = floor(index * (1e18 - min(penalty, floor((1e18 - haircut) / 2))) / 1e18)
- collateral auction: price = index - floor((index - s) * min(elapsed, T) / T) per whole token; a
  buyer of `amount` token units pays ceil(amount * price / (10**decimals * scale)) token units
- deficit waterfall: the insurance fund first, then the backstop's cash up to its equity above its
  initial margin, the rest bad debt
"""

from __future__ import annotations

from typing import NamedTuple

WAD = 10**18
VIRTUAL_SHARES = 10**6


def total_assets(equity: int, markup: int, scale: int) -> int:
    """`BackstopVault.totalAssets` from the vault's equity and its collateral's sale markup (WAD USD)."""
    return max(equity + markup, 0) // scale


def sale_price(index: int, haircut: int, penalty: int) -> int:
    """`CollateralVault.sale_price`: what a liquidation sale pays per whole token (WAD USD, settlement at par)."""
    return index * (WAD - min(penalty, (WAD - haircut) // 2)) // WAD


def collateral_price(index: int, sale: int, elapsed: int, auction_time: int) -> int:
    """`BackstopVault.collateral_price`: the collateral auction's price per whole token (WAD)."""
    return index - (index - sale) * min(elapsed, auction_time) // auction_time


def collateral_payment(amount: int, price: int, decimals: int, scale: int) -> int:
    """Token units `BackstopVault.buy_collateral` charges for `amount` token units at `price`."""
    unit = int(10**decimals)
    return -(-amount * price // (unit * scale))


def to_shares(assets: int, total: int, supply: int) -> int:
    """Shares `assets` token units buy at totalAssets `total` and totalSupply `supply`."""
    return assets * (supply + VIRTUAL_SHARES) // (total + 1)


def to_assets(shares: int, total: int, supply: int) -> int:
    """Token units `shares` are worth at totalAssets `total` and totalSupply `supply`."""
    return shares * (total + 1) // (supply + VIRTUAL_SHARES)


def caller_fee(gain: int, caller_fee_share: int, scale: int) -> tuple[int, int]:
    """(fee in token units, WAD USD kept) of a routed liquidation whose gain is `gain` (WAD USD, >= 0)."""
    fee = gain * caller_fee_share // WAD // scale if gain > 0 else 0
    return fee, max(gain, 0) - fee * scale


def discount_rate(auction_discount: int, max_price_deviation: int, elapsed: int, auction_time: int) -> int:
    """The unwind discount rate (WAD) `elapsed` seconds after the vault's position last grew."""
    return min(auction_discount, max_price_deviation) * min(elapsed, auction_time) // auction_time


class UnwindTerms(NamedTuple):
    price: int  # WAD USD per unit
    discount: int  # WAD USD in total, rounded up
    carried: int  # WAD USD of budget the units leave with


def unwind_terms(index: int, rate: int, budget: int, recorded: int, position: int, size: int) -> UnwindTerms:
    """What `BackstopVault.unwind` charges for `size` (> 0) of the vault's signed `position`, given
    the market's budget and its recorded position (signed WAD units)."""
    inventory = abs(position)
    if inventory < abs(recorded):
        budget = budget * inventory // abs(recorded)
    carried = budget * size // inventory
    per_unit = min(index * rate // WAD, carried * WAD // size)
    discount = -(-per_unit * size // WAD)
    return UnwindTerms(index - per_unit if position > 0 else index + per_unit, discount, carried)


class DeficitCover(NamedTuple):
    from_insurance: int
    from_backstop: int
    bad_debt: int


def cover_deficit(
    deficit: int, insurance_fund: int, backstop_cash: int, backstop_equity: int, backstop_im: int
) -> DeficitCover:
    """How a deficit (WAD USD) is covered: the insurance fund, then the backstop vault (at most
    min(its cash, equity - initial margin)), then bad debt."""
    from_insurance = min(deficit, insurance_fund)
    capacity = max(0, min(backstop_cash, backstop_equity - backstop_im))
    from_backstop = min(deficit - from_insurance, capacity)
    return DeficitCover(from_insurance, from_backstop, deficit - from_insurance - from_backstop)
