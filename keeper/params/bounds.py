"""The on-chain bounds of every risk setter, mirrored so that a change file is refused before
anything is sent. Each check returns the problems as text that ends with the revert string the
contract would give, so the two can be compared. A test reads the constants below back from
the Vyper sources.

Sources: `contracts/MarginEngine.vy` (`_check_underlying_params`, `set_liquidation_params`,
`set_penalty_ramp`, `set_position_caps`, `set_trade_params`), `contracts/CollateralVault.vy`
(`set_asset_params`) and `contracts/OracleRouter.vy` (`set_feeds`, `set_circuit_breaker`).
"""

from __future__ import annotations

WAD = 10**18

# MarginEngine.vy
MIN_IM_RATE = 10**16
MAX_IM_RATE = 10**18
MIN_MM_RATE = 5 * 10**15
MIN_PENALTY = 10**15
MAX_PENALTY = 10**17
MIN_TARGET = 105 * 10**16
MAX_TARGET = 2 * 10**18
MIN_PRICE_DEVIATION = 10**15
MAX_PRICE_DEVIATION = 2 * 10**17
MAX_FUNDING_RATE_BOUND = 10**16
MIN_PENALTY_RAMP = 60
MAX_PENALTY_RAMP = 86400
# CollateralVault.vy
MAX_HAIRCUT = 10**18
# OracleRouter.vy
MIN_HEARTBEAT = 60
MAX_HEARTBEAT = 2 * 86400
MAX_FEEDS = 3


def wad_text(value: int) -> str:
    """A WAD integer as an exact decimal: 120000000000000000 -> "0.12"."""
    whole, frac = divmod(abs(value), WAD)
    text = f"{whole}" + (f".{frac:018d}".rstrip("0") if frac else "")
    return "-" + text if value < 0 else text


def _within(name: str, value: int, lo: int, hi: int, revert: str) -> list[str]:
    if lo <= value <= hi:
        return []
    return [f"{name} {wad_text(value)} is outside [{wad_text(lo)}, {wad_text(hi)}] ({revert})"]


def _mm_vs_penalty(mm_rates: dict[str, int], penalty: int, what: str) -> list[str]:
    """Every underlying's mm_rate must be at least twice the largest penalty rate."""
    return [
        f"{what} needs every mm_rate >= {wad_text(2 * penalty)}, underlying {name} has {wad_text(mm)} "
        "(engine: mm_rate below 2x penalty); raise its mm_rate in an earlier entry"
        for name, mm in mm_rates.items()
        if mm < 2 * penalty
    ]


def check_underlying(new: dict[str, int], penalty: int, max_penalty: int) -> list[str]:
    """`set_underlying_params`: IM in [1%, 100%], MM in [0.5%, IM] and >= 2 x max(penalty,
    max_penalty), spread IM <= IM, spread MM <= spread IM and <= MM."""
    im, mm, sim, smm = new["im_rate"], new["mm_rate"], new["spread_im_rate"], new["spread_mm_rate"]
    out = _within("im_rate", im, MIN_IM_RATE, MAX_IM_RATE, "engine: im_rate out of bounds")
    if not MIN_MM_RATE <= mm <= im:
        out.append(f"mm_rate {wad_text(mm)} is outside [{wad_text(MIN_MM_RATE)}, im_rate {wad_text(im)}] "
                   "(engine: mm_rate out of bounds)")
    elif mm < 2 * max(penalty, max_penalty):
        out.append(f"mm_rate {wad_text(mm)} is below 2 x the liquidation penalty {wad_text(max(penalty, max_penalty))} "
                   "(engine: mm_rate below 2x penalty); lower the penalty in an earlier entry")
    if sim > im:
        out.append(f"spread_im_rate {wad_text(sim)} is above im_rate {wad_text(im)} (engine: spread_im_rate out of bounds)")
    if smm > sim or smm > mm:
        out.append(f"spread_mm_rate {wad_text(smm)} is above spread_im_rate {wad_text(sim)} or mm_rate {wad_text(mm)} "
                   "(engine: spread_mm_rate out of bounds)")
    return out


def check_liquidation(new: dict[str, int], max_penalty: int, mm_rates: dict[str, int]) -> list[str]:
    """`set_liquidation_params`: penalty in [0.1%, 10%], share <= 100%, target in [1.05, 2],
    every mm_rate >= 2 x max(penalty, max_penalty)."""
    out = _within("penalty", new["penalty"], MIN_PENALTY, MAX_PENALTY, "engine: penalty out of bounds")
    out += _within("liquidator_share", new["liquidator_share"], 0, WAD, "engine: liquidator_share out of bounds")
    out += _within("target", new["target"], MIN_TARGET, MAX_TARGET, "engine: target out of bounds")
    return out + _mm_vs_penalty(mm_rates, max(new["penalty"], max_penalty), "penalty")


def check_penalty_ramp(new: dict[str, int], penalty: int, mm_rates: dict[str, int]) -> list[str]:
    """`set_penalty_ramp`: max penalty in [penalty, 10%], ramp in [60 s, 1 day], every
    mm_rate >= 2 x max penalty."""
    out = []
    if not penalty <= new["max_penalty"] <= MAX_PENALTY:
        out.append(f"max_penalty {wad_text(new['max_penalty'])} is outside [penalty {wad_text(penalty)}, "
                   f"{wad_text(MAX_PENALTY)}] (engine: max penalty out of bounds)")
    ramp = new["penalty_ramp_seconds"]
    if not MIN_PENALTY_RAMP <= ramp <= MAX_PENALTY_RAMP:
        out.append(f"penalty_ramp_seconds {ramp} is outside [{MIN_PENALTY_RAMP}, {MAX_PENALTY_RAMP}] "
                   "(engine: ramp time out of bounds)")
    return out + _mm_vs_penalty(mm_rates, new["max_penalty"], "max_penalty")


def check_position_caps(new: dict[str, int]) -> list[str]:
    """`set_position_caps`: 0 = no cap; a position cap above a set OI cap is refused."""
    oi, pos = new["max_open_interest"], new["max_position"]
    if oi and pos > oi:
        return [f"max_position {wad_text(pos)} is above max_open_interest {wad_text(oi)} (engine: position cap above OI cap)"]
    return []


def check_trading(new: dict[str, int]) -> list[str]:
    """`set_trade_params`: deviation in [0.1%, 20%], funding cap <= 1% per 8 h, smoothing in (0, 1]."""
    out = _within("max_price_deviation", new["max_price_deviation"], MIN_PRICE_DEVIATION, MAX_PRICE_DEVIATION,
                  "engine: max_price_deviation out of bounds")
    out += _within("max_funding_rate", new["max_funding_rate"], 0, MAX_FUNDING_RATE_BOUND,
                   "engine: max_funding_rate out of bounds")
    if not 0 < new["funding_smoothing"] <= WAD:
        out.append(f"funding_smoothing {wad_text(new['funding_smoothing'])} is outside (0, 1] "
                   "(engine: funding_smoothing out of bounds)")
    return out


def check_asset(new: dict[str, int]) -> list[str]:
    """`set_asset_params`: haircut <= 100%; any deposit cap (lowering it only stops deposits)."""
    return _within("haircut", new["haircut"], 0, MAX_HAIRCUT, "vault: haircut out of bounds")


def check_feeds(new: dict) -> list[str]:
    """`set_feeds` with the current aggregators: one heartbeat per feed, each in [60 s, 2 days].
    (The contract also requires every feed to answer validly at that moment: the rehearsal
    checks that.)"""
    beats, feeds = new["heartbeats"], new["aggregators"]
    if len(beats) != len(feeds):
        return [f"heartbeats has {len(beats)} values for {len(feeds)} feeds (oracle: length mismatch); "
                "the feeds are kept, give one heartbeat per feed"]
    return [
        f"heartbeats[{i}] {h} is outside [{MIN_HEARTBEAT}, {MAX_HEARTBEAT}] seconds (oracle: heartbeat out of bounds)"
        for i, h in enumerate(beats)
        if not MIN_HEARTBEAT <= h <= MAX_HEARTBEAT
    ]


def check_circuit_breaker(new: dict[str, int]) -> list[str]:
    """`set_circuit_breaker`: max_price 0 (no ceiling) or above min_price; max_jump <= 100%."""
    out = []
    if new["max_price"] and new["max_price"] <= new["min_price"]:
        out.append(f"max_price {wad_text(new['max_price'])} is not above min_price {wad_text(new['min_price'])} "
                   "(oracle: empty price band)")
    return out + _within("max_jump", new["max_jump"], 0, WAD, "oracle: max_jump out of bounds")
