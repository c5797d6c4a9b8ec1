"""The on-chain bounds of every risk setter, mirrored so that a change file is refused before
anything is sent. Each check returns the problems as text that ends with the revert string the
contract would give, so the two can be compared. A test reads the constants below back from
the Vyper sources.

Sources: `contracts/lib/engine_core.vy` (`_check_underlying_params`, `set_liquidation_params`,
`set_penalty_ramp`, `set_position_caps`, `set_trade_params`), `contracts/CollateralVault.vy`
(`set_asset_params`, `set_depeg_params`), `contracts/OracleRouter.vy` (`set_feeds`, `set_circuit_breaker`) and,
when options are deployed, `contracts/HealthAttestor.vy` (`set_margin_floor`,
`set_price_band`, `set_max_validity`), `contracts/lib/options_core.vy` (`set_risk_params`,
`set_series_caps`) and `contracts/VolFeed.vy` (`set_vol_bounds`, `set_heartbeat`) and, when a
backstop vault is deployed, `contracts/BackstopVault.vy` (`set_params`; `set_max_exposure` takes
any size).
"""

from __future__ import annotations

from keeper.units import WAD

# lib/constants.vy: a stricter margin rate or haircut phases in over this many seconds
REQUIREMENT_RAMP = 7 * 86400

# lib/engine_core.vy (MarginEngine)
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
MAX_MIN_POSITION_NOTIONAL = 1000 * WAD
# CollateralVault.vy
MAX_HAIRCUT = 10**18
MIN_DEPEG_THRESHOLD = 9 * 10**17
MAX_DEPEG_THRESHOLD = 10**18
MAX_DEPEG_FACTOR = 3 * 10**18
# OracleRouter.vy
MIN_HEARTBEAT = 60
MAX_HEARTBEAT = 2 * 86400
MAX_FEEDS = 3
# HealthAttestor.vy
MIN_MARGIN_FLOOR = 2 * 10**17
MAX_MARGIN_FLOOR = 10**18
MAX_PRICE_BAND = 10**17
MIN_VALIDITY = 60
MAX_VALIDITY = 86400
# lib/options_core.vy (OptionMarket)
MIN_SHORT_MM_RATE = 10**16
MAX_SHORT_IM_RATE = 10**18
MAX_LONG_HAIRCUT = 9 * 10**17
MIN_ABS_BAND = 10**14
MAX_ABS_BAND = 5 * 10**16
MIN_REL_BAND = 10**15
MAX_REL_BAND = 5 * 10**17
# VolFeed.vy
HARD_MIN_ATM_VOL = 10**16
HARD_MAX_ATM_VOL = 5 * 10**18
HARD_MAX_ABS_SKEW = 5 * 10**18
MIN_VOL_HEARTBEAT = 60
MAX_VOL_HEARTBEAT = 86400
# BackstopVault.vy
MAX_CALLER_FEE_SHARE = 5 * 10**17
MIN_MARGIN_USAGE = 5 * 10**16
MAX_MARGIN_USAGE = 9 * 10**17
MAX_AUCTION_DISCOUNT = 10**17
MIN_AUCTION_TIME = 60
MAX_AUCTION_TIME = 7 * 86400
MIN_REQUEST_DELAY = 3600
MAX_REQUEST_DELAY = 30 * 86400

# Python name -> (Vyper source, constant name) of every mirrored bound, for the test that
# reads them back.
SOURCES: dict[str, tuple[str, str]] = {
    **{n: ("lib/engine_core.vy", n) for n in (
        "MIN_IM_RATE", "MAX_IM_RATE", "MIN_MM_RATE", "MIN_PENALTY", "MAX_PENALTY", "MIN_TARGET", "MAX_TARGET",
        "MIN_PRICE_DEVIATION", "MAX_PRICE_DEVIATION", "MAX_FUNDING_RATE_BOUND", "MIN_PENALTY_RAMP", "MAX_PENALTY_RAMP",
        "MAX_MIN_POSITION_NOTIONAL")},
    **{n: ("CollateralVault.vy", n) for n in (
        "MAX_HAIRCUT", "MIN_DEPEG_THRESHOLD", "MAX_DEPEG_THRESHOLD", "MAX_DEPEG_FACTOR")},
    **{n: ("OracleRouter.vy", n) for n in ("MIN_HEARTBEAT", "MAX_HEARTBEAT", "MAX_FEEDS")},
    **{n: ("HealthAttestor.vy", n) for n in (
        "MIN_MARGIN_FLOOR", "MAX_MARGIN_FLOOR", "MAX_PRICE_BAND", "MIN_VALIDITY", "MAX_VALIDITY")},
    **{n: ("lib/options_core.vy", n) for n in (
        "MIN_SHORT_MM_RATE", "MAX_SHORT_IM_RATE", "MAX_LONG_HAIRCUT", "MIN_ABS_BAND", "MAX_ABS_BAND",
        "MIN_REL_BAND", "MAX_REL_BAND")},
    **{n: ("VolFeed.vy", n) for n in ("HARD_MIN_ATM_VOL", "HARD_MAX_ATM_VOL", "HARD_MAX_ABS_SKEW")},
    "MIN_VOL_HEARTBEAT": ("VolFeed.vy", "MIN_VOL_HEARTBEAT"),
    "MAX_VOL_HEARTBEAT": ("VolFeed.vy", "MAX_VOL_HEARTBEAT"),
    **{n: ("BackstopVault.vy", n) for n in (
        "MAX_CALLER_FEE_SHARE", "MIN_MARGIN_USAGE", "MAX_MARGIN_USAGE", "MAX_AUCTION_DISCOUNT", "MIN_AUCTION_TIME",
        "MAX_AUCTION_TIME", "MIN_REQUEST_DELAY", "MAX_REQUEST_DELAY")},
}  # fmt: skip


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
    """Every underlying's mm_rate in force must be at least twice the largest penalty rate."""
    return [
        f"{what} needs every mm_rate in force >= {wad_text(2 * penalty)}, underlying {name} has {wad_text(mm)} "
        "(engine: mm_rate below 2x penalty); raise its mm_rate first (on a live deployment the raise phases in "
        f"over {REQUIREMENT_RAMP // 86400} days before a penalty can rely on it)"
        for name, mm in mm_rates.items()
        if mm < 2 * penalty
    ]


def check_underlying(new: dict[str, int], penalty: int, max_penalty: int) -> list[str]:
    """`set_underlying_params`: IM in [1%, 100%], MM in [0.5%, IM] and >= 2 x max(penalty,
    max_penalty), spread IM <= IM, spread MM <= spread IM and <= MM."""
    im, mm, sim, smm = new["im_rate"], new["mm_rate"], new["spread_im_rate"], new["spread_mm_rate"]
    out = _within("im_rate", im, MIN_IM_RATE, MAX_IM_RATE, "engine: im_rate out of bounds")
    if not MIN_MM_RATE <= mm <= im:
        out.append(
            f"mm_rate {wad_text(mm)} is outside [{wad_text(MIN_MM_RATE)}, im_rate {wad_text(im)}] "
            "(engine: mm_rate out of bounds)"
        )
    elif mm < 2 * max(penalty, max_penalty):
        out.append(
            f"mm_rate {wad_text(mm)} is below 2 x the liquidation penalty {wad_text(max(penalty, max_penalty))} "
            "(engine: mm_rate below 2x penalty); lower the penalty in an earlier entry"
        )
    if sim > im:
        out.append(
            f"spread_im_rate {wad_text(sim)} is above im_rate {wad_text(im)} (engine: spread_im_rate out of bounds)"
        )
    if smm > sim or smm > mm:
        out.append(
            f"spread_mm_rate {wad_text(smm)} is above spread_im_rate {wad_text(sim)} or mm_rate {wad_text(mm)} "
            "(engine: spread_mm_rate out of bounds)"
        )
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
        out.append(
            f"max_penalty {wad_text(new['max_penalty'])} is outside [penalty {wad_text(penalty)}, "
            f"{wad_text(MAX_PENALTY)}] (engine: max penalty out of bounds)"
        )
    ramp = new["penalty_ramp_seconds"]
    if not MIN_PENALTY_RAMP <= ramp <= MAX_PENALTY_RAMP:
        out.append(
            f"penalty_ramp_seconds {ramp} is outside [{MIN_PENALTY_RAMP}, {MAX_PENALTY_RAMP}] "
            "(engine: ramp time out of bounds)"
        )
    return out + _mm_vs_penalty(mm_rates, new["max_penalty"], "max_penalty")


def check_position_caps(new: dict[str, int]) -> list[str]:
    """`set_position_caps`: 0 = no cap; a position cap above a set OI cap is refused."""
    oi, pos = new["max_open_interest"], new["max_position"]
    if oi and pos > oi:
        return [
            f"max_position {wad_text(pos)} is above max_open_interest {wad_text(oi)} (engine: position cap above OI cap)"
        ]
    return []


def check_trading(new: dict[str, int]) -> list[str]:
    """`set_trade_params`: deviation in [0.1%, 20%], funding cap <= 1% per 8 h, smoothing in (0, 1],
    minimum position notional <= $1,000."""
    out = _within(
        "max_price_deviation",
        new["max_price_deviation"],
        MIN_PRICE_DEVIATION,
        MAX_PRICE_DEVIATION,
        "engine: max_price_deviation out of bounds",
    )
    out += _within(
        "max_funding_rate", new["max_funding_rate"], 0, MAX_FUNDING_RATE_BOUND, "engine: max_funding_rate out of bounds"
    )
    if not 0 < new["funding_smoothing"] <= WAD:
        out.append(
            f"funding_smoothing {wad_text(new['funding_smoothing'])} is outside (0, 1] "
            "(engine: funding_smoothing out of bounds)"
        )
    out += _within(
        "min_position_notional",
        new.get("min_position_notional", 0),
        0,
        MAX_MIN_POSITION_NOTIONAL,
        "engine: min_position_notional out of bounds",
    )
    return out


def check_asset(new: dict[str, int]) -> list[str]:
    """`set_asset_params`: haircut <= 100%; any deposit cap (lowering it only stops deposits)."""
    return _within("haircut", new["haircut"], 0, MAX_HAIRCUT, "vault: haircut out of bounds")


def check_depeg(new: dict[str, int]) -> list[str]:
    """`set_depeg_params`: threshold in [0.9, 1], factor in [0, 3] (Derive v2 StandardManager:
    threshold <= 1, factor <= 3)."""
    out = _within(
        "threshold", new["threshold"], MIN_DEPEG_THRESHOLD, MAX_DEPEG_THRESHOLD, "vault: depeg threshold out of bounds"
    )
    return out + _within("factor", new["factor"], 0, MAX_DEPEG_FACTOR, "vault: depeg factor out of bounds")


def check_feeds(new: dict) -> list[str]:
    """`set_feeds` with the current aggregators: one heartbeat per feed, each in [60 s, 2 days].
    (The contract also requires every feed to answer validly at that moment: the rehearsal
    checks that.)"""
    beats, feeds = new["heartbeats"], new["aggregators"]
    if len(beats) != len(feeds):
        return [
            f"heartbeats has {len(beats)} values for {len(feeds)} feeds (oracle: length mismatch); "
            "the feeds are kept, give one heartbeat per feed"
        ]
    return [
        f"heartbeats[{i}] {h} is outside [{MIN_HEARTBEAT}, {MAX_HEARTBEAT}] seconds (oracle: heartbeat out of bounds)"
        for i, h in enumerate(beats)
        if not MIN_HEARTBEAT <= h <= MAX_HEARTBEAT
    ]


def check_circuit_breaker(new: dict[str, int]) -> list[str]:
    """`set_circuit_breaker`: max_price 0 (no ceiling) or above min_price; max_jump <= 100%."""
    out = []
    if new["max_price"] and new["max_price"] <= new["min_price"]:
        out.append(
            f"max_price {wad_text(new['max_price'])} is not above min_price {wad_text(new['min_price'])} "
            "(oracle: empty price band)"
        )
    return out + _within("max_jump", new["max_jump"], 0, WAD, "oracle: max_jump out of bounds")


def check_margin_floor(new: dict[str, int]) -> list[str]:
    """`HealthAttestor.set_margin_floor`: floor in [0.2, 1] (an attestation lowers margin by at most 80%)."""
    return _within(
        "margin_floor", new["margin_floor"], MIN_MARGIN_FLOOR, MAX_MARGIN_FLOOR, "attestor: floor out of bounds"
    )


def check_price_band(new: dict[str, int]) -> list[str]:
    """`HealthAttestor.set_price_band`: band in (0, 0.1]."""
    band = new["price_band"]
    if 0 < band <= MAX_PRICE_BAND:
        return []
    return [f"price_band {wad_text(band)} is outside (0, {wad_text(MAX_PRICE_BAND)}] (attestor: band out of bounds)"]


def check_max_validity(new: dict[str, int]) -> list[str]:
    """`HealthAttestor.set_max_validity`: [60 s, 1 day]."""
    v = new["max_validity"]
    if MIN_VALIDITY <= v <= MAX_VALIDITY:
        return []
    return [f"max_validity {v} is outside [{MIN_VALIDITY}, {MAX_VALIDITY}] seconds (attestor: validity out of bounds)"]


def check_option_risk(new: dict[str, int]) -> list[str]:
    """`OptionMarket.set_risk_params`: 1% <= short_mm_rate <= short_im_floor <= short_im_rate
    <= 100%, long_im_haircut <= long_mm_haircut <= 90% (IM never below MM), abs_price_band in
    [0.01%, 5%], rel_price_band in [0.1%, 50%]."""
    margin = "options: margin params out of bounds"
    out = []
    if new["short_mm_rate"] < MIN_SHORT_MM_RATE:
        out.append(f"short_mm_rate {wad_text(new['short_mm_rate'])} is below {wad_text(MIN_SHORT_MM_RATE)} ({margin})")
    for lo, hi in (("short_mm_rate", "short_im_floor"), ("short_im_floor", "short_im_rate"),
                   ("long_im_haircut", "long_mm_haircut")):  # fmt: skip
        if new[lo] > new[hi]:
            out.append(f"{lo} {wad_text(new[lo])} is above {hi} {wad_text(new[hi])} ({margin})")
    for name, cap in (("short_im_rate", MAX_SHORT_IM_RATE), ("long_mm_haircut", MAX_LONG_HAIRCUT)):
        if new[name] > cap:
            out.append(f"{name} {wad_text(new[name])} is above {wad_text(cap)} ({margin})")
    band = "options: price band out of bounds"
    out += _within("abs_price_band", new["abs_price_band"], MIN_ABS_BAND, MAX_ABS_BAND, band)
    return out + _within("rel_price_band", new["rel_price_band"], MIN_REL_BAND, MAX_REL_BAND, band)


def check_series_caps(new: dict[str, int]) -> list[str]:
    """`OptionMarket.set_series_caps`: 0 = no cap; a position cap above a set OI cap is refused."""
    oi, pos = new["max_open_interest"], new["max_position"]
    if oi and pos > oi:
        return [
            f"max_position {wad_text(pos)} is above max_open_interest {wad_text(oi)} (options: position cap above OI cap)"
        ]
    return []


def check_vol_bounds(new: dict[str, int]) -> list[str]:
    """`VolFeed.set_vol_bounds`: min ATM vol >= 1%, max ATM vol <= 500%, min < max, max |skew| <= 5."""
    lo, hi, skew = new["min_atm_vol"], new["max_atm_vol"], new["max_abs_skew"]
    out = []
    if lo < HARD_MIN_ATM_VOL:
        out.append(f"min_atm_vol {wad_text(lo)} is below {wad_text(HARD_MIN_ATM_VOL)} (vol: min vol below hard bound)")
    if hi > HARD_MAX_ATM_VOL:
        out.append(f"max_atm_vol {wad_text(hi)} is above {wad_text(HARD_MAX_ATM_VOL)} (vol: max vol above hard bound)")
    if lo >= hi:
        out.append(f"min_atm_vol {wad_text(lo)} is not below max_atm_vol {wad_text(hi)} (vol: empty vol range)")
    if skew > HARD_MAX_ABS_SKEW:
        out.append(
            f"max_abs_skew {wad_text(skew)} is above {wad_text(HARD_MAX_ABS_SKEW)} (vol: max skew above hard bound)"
        )
    return out


def check_vol_heartbeat(new: dict[str, int]) -> list[str]:
    """`VolFeed.set_heartbeat`: [60 s, 1 day]."""
    h = new["heartbeat"]
    if MIN_VOL_HEARTBEAT <= h <= MAX_VOL_HEARTBEAT:
        return []
    return [
        f"heartbeat {h} is outside [{MIN_VOL_HEARTBEAT}, {MAX_VOL_HEARTBEAT}] seconds (vol: heartbeat out of bounds)"
    ]


def check_backstop_params(new: dict[str, int]) -> list[str]:
    """`BackstopVault.set_params`: caller fee share <= 0.5, margin usage in [0.05, 0.9], auction
    discount <= 0.1 (the discount applied is also never above the engine's max_price_deviation,
    which is not a revert), auction time in [60 s, 7 days], request delay in [1 hour, 30 days]."""
    out = _within(
        "caller_fee_share", new["caller_fee_share"], 0, MAX_CALLER_FEE_SHARE, "backstop: caller fee share out of range"
    )
    out += _within(
        "max_margin_usage",
        new["max_margin_usage"],
        MIN_MARGIN_USAGE,
        MAX_MARGIN_USAGE,
        "backstop: margin usage out of range",
    )
    out += _within(
        "auction_discount", new["auction_discount"], 0, MAX_AUCTION_DISCOUNT, "backstop: auction discount out of range"
    )
    for name, lo, hi, revert in (
        ("auction_seconds", MIN_AUCTION_TIME, MAX_AUCTION_TIME, "backstop: auction time out of range"),
        ("request_delay_seconds", MIN_REQUEST_DELAY, MAX_REQUEST_DELAY, "backstop: request delay out of range"),
    ):
        if not lo <= new[name] <= hi:
            out.append(f"{name} {new[name]} is outside [{lo}, {hi}] seconds ({revert})")
    return out


def check_config(config) -> list[str]:
    """Every on-chain bound a whole `keeper.config.ProtocolConfig` must respect, checked with the
    same functions as a change file, in the order the deployment sends the setters (so a config
    is refused before its first transaction instead of reverting half-way). Each problem names
    where it is: `underlyings[0] ETH: mm_rate 0.2 is outside [0.005, im_rate 0.1] (...)`."""
    out: list[str] = []

    def add(where: str, problems: list[str]) -> None:
        out.extend(f"{where}: {p}" for p in problems)

    for i, a in enumerate(config.assets):
        add(f"assets[{i}] {a.symbol}", check_asset({"haircut": a.haircut, "deposit_cap": a.deposit_cap}))
    for i, p in enumerate(config.price_ids):
        beats = [f.heartbeat for f in p.feeds] or [p.heartbeat]
        add(f"price_ids[{i}] {p.symbol}", check_feeds({"heartbeats": beats, "aggregators": beats}))
    # set_liquidation_params runs before any underlying exists and before the penalty ramp
    add(
        "liquidation",
        check_liquidation(
            {
                "penalty": config.liquidation_penalty,
                "liquidator_share": config.liquidator_share,
                "target": config.liquidation_target,
            },
            0,
            {},
        ),
    )
    add(
        "trading",
        check_trading(
            {
                "max_price_deviation": config.max_price_deviation,
                "max_funding_rate": config.max_funding_rate,
                "funding_smoothing": config.funding_smoothing,
                "min_position_notional": config.min_position_notional,
            }
        ),
    )
    for i, u in enumerate(config.underlyings):
        add(
            f"underlyings[{i}] {u.symbol}",
            check_underlying(
                {
                    "im_rate": u.im_rate,
                    "mm_rate": u.mm_rate,
                    "spread_im_rate": u.spread_im_rate,
                    "spread_mm_rate": u.spread_mm_rate,
                },
                config.liquidation_penalty,
                0,
            ),
        )
    if config.max_liquidation_penalty:
        mm_rates = {u.symbol: u.mm_rate for u in config.underlyings}
        add(
            "liquidation",
            check_penalty_ramp(
                {"max_penalty": config.max_liquidation_penalty, "penalty_ramp_seconds": config.penalty_ramp_time},
                config.liquidation_penalty,
                mm_rates,
            ),
        )
    for m in config.markets:
        add(
            f"market {m.name}",
            check_position_caps({"max_open_interest": m.max_open_interest, "max_position": m.max_position}),
        )
    opts = getattr(config, "options", None)
    if opts is not None:
        vf, at = opts.vol_feed, opts.attestation
        add(
            "options: vol_feed",
            check_vol_bounds(
                {"min_atm_vol": vf.min_atm_vol, "max_atm_vol": vf.max_atm_vol, "max_abs_skew": vf.max_abs_skew}
            ),
        )
        add("options: vol_feed", check_vol_heartbeat({"heartbeat": vf.heartbeat}))
        r = opts.risk
        add(
            "options: risk",
            check_option_risk(
                {
                    "short_im_rate": r.short_im_rate,
                    "short_im_floor": r.short_im_floor,
                    "short_mm_rate": r.short_mm_rate,
                    "long_im_haircut": r.long_im_haircut,
                    "long_mm_haircut": r.long_mm_haircut,
                    "abs_price_band": r.abs_price_band,
                    "rel_price_band": r.rel_price_band,
                }
            ),
        )
        add("options: attestation", check_margin_floor({"margin_floor": at.margin_floor}))
        add("options: attestation", check_price_band({"price_band": at.price_band}))
        add("options: attestation", check_max_validity({"max_validity": at.max_validity}))
    b = getattr(config, "backstop_vault", None)
    if b is not None:
        fields = (
            "caller_fee_share",
            "max_margin_usage",
            "auction_discount",
            "auction_seconds",
            "request_delay_seconds",
        )
        add("backstop_vault", check_backstop_params(dict(zip(fields, b.params()))))
    return out
