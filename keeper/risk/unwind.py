"""Unwinding a liquidator's inventory: which signed maker quotes a keeper that took positions
itself (`liquidation.route: direct`, or a backstop vault that could not take them) closes them
against, and how long it has held what is left.

All sizes are signed WAD units of the underlying (long > 0), prices WAD USD.

- a quote is a maker's signed order (`keeper.chain.orders.Order`): `Matching.match_orders`
  fills it whole, at its limit price, against the keeper's opposite order. A long inventory
  closes against quotes that buy (size > 0), a short one against quotes that sell.
- the slippage bound: a quote is taken only at a price within `slippage_bps` of the index,
  P >= I x (1 - s) when selling, P <= I x (1 + s) when buying (rounded so that the bound is
  never looser than s);
  best price first, larger first at a price, and only whole quotes that neither overshoot the
  inventory nor leave a position below the engine's `min_position_notional` (the engine refuses
  a trade that leaves dust).
- age: the inventory is kept as first-in-first-out lots, each with the block it was taken in;
  a reduction closes the oldest lot first, so the age of the oldest lot left (the blocks it
  has been held at the end of) is how long the keeper has held risk it did not unwind. The oldest lots adding up to at most DUST_USD at the
  index have no age: whole quotes leave such a remainder, and it is no risk to speak of.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

WAD = 10**18
BPS = 10_000
DUST_USD = 100  # a position worth at most this (USD at the index) counts as flat for its age


class Quote(Protocol):
    """What the planner reads of a maker's signed order."""

    market: int
    size: int
    limit_price: int
    deadline: int


def price_bound(size: int, index_price: int, slippage_bps: int) -> int:
    """The worst price (WAD USD) at which an inventory of `size` may be closed: ceil(I x
    (1 - s)) when selling a long, floor(I x (1 + s)) when buying back a short, s =
    `slippage_bps` / 10,000."""
    if size > 0:
        return -(-index_price * (BPS - slippage_bps) // BPS)
    return index_price * (BPS + slippage_bps) // BPS


def plan(
    size: int,
    market: int,
    index_price: int,
    quotes: Sequence[Quote],
    slippage_bps: int,
    min_notional: int,
    now: int,
) -> list[Quote]:
    """The quotes that close an inventory of `size` in `market` (best price first, then the
    larger), each within the slippage bound, live at block time `now` (deadline >= now), on the
    opposite side of the inventory, filled whole without overshooting it and without leaving
    a position below `min_notional` (WAD USD at `index_price`; 0: no minimum). Empty when the
    inventory is flat or nothing qualifies."""
    if size == 0:
        return []
    bound = price_bound(size, index_price, slippage_bps)
    side = [
        q
        for q in quotes
        if q.market == market
        and q.deadline >= now
        and q.size != 0
        and (q.size > 0) == (size > 0)
        and (q.limit_price >= bound if size > 0 else q.limit_price <= bound)
    ]
    # best for the keeper first: the highest bid when selling, the lowest ask when buying
    side.sort(key=lambda q: (-q.limit_price if size > 0 else q.limit_price, -abs(q.size)))
    left, out = abs(size), []
    for q in side:
        amount = abs(q.size)
        if amount > left:
            continue
        rest = left - amount
        if rest and rest * index_price // WAD < min_notional:
            continue
        out.append(q)
        left = rest
        if left == 0:
            break
    return out


class Lot(NamedTuple):
    block: int  # when it was taken
    size: int  # signed


def update_lots(lots: list[Lot], size: int, block: int) -> list[Lot]:
    """The lots after the position became `size` at `block`: a growth on the same side is a new
    lot, a reduction closes the oldest lots first, a change of side starts over."""
    held = sum(lot.size for lot in lots)
    if size == held:
        return list(lots)
    if size == 0 or held == 0 or (size > 0) != (held > 0):
        return [] if size == 0 else [Lot(block, size)]
    if abs(size) > abs(held):
        return [*lots, Lot(block, size - held)]
    cut, out = abs(held) - abs(size), []
    for lot in lots:
        if cut >= abs(lot.size):
            cut -= abs(lot.size)
            continue
        sign = 1 if lot.size > 0 else -1
        out.append(Lot(lot.block, lot.size - sign * cut))
        cut = 0
    return out


def age(lots: Sequence[Lot], block: int, index_price: int) -> int:
    """How many blocks, up to and including `block`, the oldest lot has been held at the end
    of (1: taken in `block`), the oldest lots that add up to at most DUST_USD at
    `index_price` (WAD) left out (a remainder whole quotes could not close); 0 when all of
    them add up to no more."""
    held = 0
    for lot in lots:
        held += abs(lot.size)
        if held * index_price // WAD > DUST_USD * WAD:
            return block - lot.block + 1
    return 0
