"""The default listing's parameters (config/local.yaml, as the contract tests deploy it) and the
hand reference of the engine's liquidation step, shared by the tests of caps, the penalty ramp
and bad debt. Every expected value is a Python int mirroring the contracts' rounding: margin
charges and penalties round up, PnL rounds down.

ETH IM 10% / MM 5%, penalty 2% ramping to 2.5% over 3600 s, liquidator share 50%, target health
1.25; the deployment starts with an empty insurance fund and no bad debt.
"""

from __future__ import annotations

from tests.boa_protocol import WAD, ceil_div

ETH_PERP, ETH_FUT, BTC_PERP, BTC_FUT = 0, 1, 2, 3
ETH, BTC = 0, 1  # price ids and underlyings
MM = 5 * 10**16
PENALTY, MAX_PENALTY, RAMP = 2 * 10**16, 25 * 10**15, 3600
SHARE, TARGET = 5 * 10**17, 125 * 10**16
USDC = 10**6  # one dollar in token units
SCALE = 10**12  # one USDC token unit in WAD


def size(p, user, market) -> int:
    return p.engine.positions(user.address, market).size


def long_sum(p, users, market) -> int:
    return sum(max(size(p, u, market), 0) for u in users)


def close_step(equity, mm_total, mm_u, gross_u, size_, price, *, penalty_rate):
    """The engine's close of one underlying holding one position, by hand:
    f = ceil((ceil(t*MM) - equity) / (t*M_u - rate*G_u)) capped at 1 (1 when the denominator is not
    positive), amount = ceil(f*|size|), closed = ceil(amount*price), penalty = ceil(closed*rate)
    capped at the equity before the close."""
    denominator = mm_u * TARGET // WAD - gross_u * penalty_rate // WAD
    deficit = ceil_div(mm_total * TARGET, WAD) - equity
    fraction = WAD if denominator <= 0 else min(WAD, ceil_div(deficit * WAD, denominator))
    amount = min(ceil_div(abs(size_) * fraction, WAD), abs(size_))
    closed = ceil_div(amount * price, WAD)
    penalty = min(ceil_div(closed * penalty_rate, WAD), max(equity, 0))
    return amount, closed, penalty


def refresh_feeds(p, eth, btc=30000) -> None:
    p.set_price("ETH", eth)
    p.set_price("BTC", btc)
