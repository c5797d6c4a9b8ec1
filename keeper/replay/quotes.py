"""The replay's market makers quote the keepers: signed orders that a keeper that took
positions itself closes them against (`liquidation.unwind_quotes`, keeper.unwind).

Each step every market maker quotes every market a keeper holds more than dust in (as a
request-for-quote venue answers; the driver, `Replay._post_quotes`, decides), `SPREAD_BPS` off the step's
index (bids below, asks above), in a ladder of sizes LOT_USD x 2^k at the index (k < LEVELS).
On the side that reduces its position the ladder adds up to at most that position; on the side
that grows it, to at most what the market's position cap leaves (`MarginEngine.max_position`).
A maker never flips its book: one that bought more than its short would go long, and
auto-deleveraging, which draws only on positions in profit, would find fewer shorts to close a
bankrupt long against. The quotes stay valid for `LIFETIME_STEPS` steps; the file is rewritten
atomically every step.
"""

from __future__ import annotations

from collections.abc import Callable

from keeper.chain.orders import Order, Quote
from keeper.units import WAD

SPREAD_BPS = 10
LOT_USD = 20  # twice config/local.yaml's minimum position: what is left is dust (keeper.risk.unwind.DUST_USD)
LEVELS = 16  # the largest lot: $655k
LIFETIME_STEPS = 3


def ladder(
    maker: str,
    held: dict[int, int],
    caps: dict[int, int],
    markets: dict[str, int],
    index: dict[str, int],
    deadline: int,
    next_nonce: Callable[[], int],
    sign: Callable[[Order], bytes],
) -> list[Quote]:
    """`maker`'s quotes: for each market name -> id of `markets`, bids and asks at the
    underlying's WAD index (`index`, by symbol) -+ SPREAD_BPS (bids rounded down, asks up),
    sizes LOT_USD x 2^k USD at the index, k < LEVELS, as many as add up to at most its
    position (`held`: market id -> signed WAD size) on the side that reduces it and at most
    the market's position cap (`caps`: market id -> WAD units, 0 none) less its size on the
    side that grows it; each with a fresh nonce and its signature."""
    out = []
    for name, market in markets.items():
        position, cap = held.get(market, 0), caps.get(market, 0)
        price = index[name.split("-")[0]]
        lot = LOT_USD * WAD * WAD // price
        grow = cap - abs(position) if cap else lot << LEVELS
        for side, limit in (
            (1, price * (10_000 - SPREAD_BPS) // 10_000),
            (-1, -(-price * (10_000 + SPREAD_BPS) // 10_000)),
        ):
            room = abs(position) if position * side < 0 else grow
            for k in range(LEVELS):
                size = lot << k
                if size > room:
                    break
                room -= size
                order = Order(maker, market, side * size, limit, next_nonce(), deadline)
                out.append(Quote(*order.as_tuple(), signature=sign(order)))
    return out
