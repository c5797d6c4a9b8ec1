"""The replay's market makers quote the keepers: signed orders on both sides of every market,
which a keeper that took positions itself closes them against (`liquidation.unwind_quotes`,
keeper.unwind).

Each step one market maker, in turn, quotes every live market at the step's index minus (bid)
and plus (ask) `SPREAD_BPS`, in a ladder of sizes LOT_USD x 2^k (k < LEVELS) at the index, so
that any inventory is closed to within one lot by whole quotes; the quotes stay valid for
`LIFETIME_STEPS` steps. The file is rewritten atomically every step.
"""

from __future__ import annotations

from collections.abc import Callable

from keeper.chain.orders import Order, Quote
from keeper.units import WAD

SPREAD_BPS = 10
LOT_USD = 20  # twice config/local.yaml's minimum position: what is left is dust (keeper.risk.unwind.DUST_USD)
LEVELS = 18  # the largest lot: $2.6M
LIFETIME_STEPS = 3


def ladder(
    maker: str,
    markets: dict[str, int],
    index: dict[str, int],
    deadline: int,
    next_nonce: Callable[[], int],
    sign: Callable[[Order], bytes],
) -> list[Quote]:
    """`maker`'s quotes: for each market name -> id of `markets`, bids and asks at the
    underlying's WAD index (`index`, by symbol) -+ SPREAD_BPS (bids rounded down, asks up),
    sizes LOT_USD x 2^k USD at the index, each with a fresh nonce and its signature."""
    out = []
    for name, market in markets.items():
        price = index[name.split("-")[0]]
        bid = price * (10_000 - SPREAD_BPS) // 10_000
        ask = -(-price * (10_000 + SPREAD_BPS) // 10_000)
        lot = LOT_USD * WAD * WAD // price
        for k in range(LEVELS):
            size = lot << k
            for signed, limit in ((size, bid), (-size, ask)):
                order = Order(maker, market, signed, limit, next_nonce(), deadline)
                out.append(Quote(*order.as_tuple(), signature=sign(order)))
    return out
