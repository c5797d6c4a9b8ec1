"""Open-interest caps coherent with the insurance fund: the one place for that rule
(docs/threat-model.md, "Open-interest caps and the insurance fund").

A price gap larger than the maintenance margin rate takes an account from solvent to negative
equity before any liquidation can run; what is left after its margin is the protocol's loss,
paid by the insurance fund. Open interest (the sum of longs, equal to the sum of shorts) bounds
the size that can be on the losing side of a gap in either direction, so for every market m on
underlying u:

    max_open_interest_m x reference_price_u x max(0, max_gap_u - mm_rate_u) <= coverage x insurance_fund

`max_gap_u` is the largest plausible adverse move between two chances to liquidate (stated per
underlying in the config; 0.30 for ETH and BTC: the worst one-hour move in the data of
../shared/data is ETH -29.2%, 2021-05-19 12:00-13:00 UTC in 10-minute prices; the worst hourly
close-to-close move is ETH -20.9% on 2020-03-12). `reference_price_u` is the price the cap is
judged at (the config's `reference_price`, else its mock feed's `initial_price`; on chain, the
current index price). `coverage` (k, default 1) is the share of the fund one market's gap may
consume. A market without an OI cap (0) always breaks the rule.

Breaking the rule is a warning, not an error: `scripts/deploy.py` (through
`keeper.chain.deploy.deploy_protocol`) and `keeper params rehearse` print one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from numbers import Real
from typing import Iterable

from keeper.units import WAD

DEFAULT_COVERAGE = 1.0


@dataclass(frozen=True)
class Exposure:
    """One market's inputs to the rule, in plain units (whole underlying, USD, fractions).
    Numbers may be Fractions (the config's WAD values, exact) or floats (on-chain reads)."""

    market: str
    underlying: str
    max_open_interest: Real  # whole units of the underlying; 0 = no cap
    reference_price: Real  # USD per unit
    max_gap: Real  # fraction, e.g. 0.30
    mm_rate: Real  # fraction

    @property
    def excess(self) -> Real:
        """The part of the gap the maintenance margin does not cover."""
        return max(0, self.max_gap - self.mm_rate)

    @property
    def gap_loss_usd(self) -> Real:
        """Loss beyond maintenance margin if the whole capped open interest is on the wrong
        side of a `max_gap` move (inf without a cap)."""
        if not self.max_open_interest:
            return float("inf") if self.excess > 0 else 0
        return self.max_open_interest * self.reference_price * self.excess

    def max_open_interest_allowed(self, insurance_fund_usd: Real, coverage: Real = DEFAULT_COVERAGE) -> Real:
        """The largest cap (whole units) that satisfies the rule (inf if the gap is within MM)."""
        return float("inf") if not self.excess else coverage * insurance_fund_usd / (self.reference_price * self.excess)


def _num(x) -> str:
    """5000000 -> "5,000,000", 133.3333 -> "133.333333"."""
    return f"{float(x):,.6f}".rstrip("0").rstrip(".")


def problems(exposures: Iterable[Exposure], insurance_fund_usd: float, coverage: float = DEFAULT_COVERAGE) -> list[str]:
    """One text per market that breaks the rule (empty: all coherent)."""
    out = []
    budget = coverage * insurance_fund_usd
    for e in exposures:
        loss = e.gap_loss_usd
        if loss <= budget:
            continue
        if not e.max_open_interest:
            out.append(
                f"market {e.market}: no open-interest cap, so a {float(e.max_gap):.0%} gap's loss beyond margin is "
                f"unbounded against a ${float(insurance_fund_usd):,.0f} insurance fund"
            )
            continue
        allowed = float(e.max_open_interest_allowed(insurance_fund_usd, coverage))
        out.append(
            f"market {e.market}: cap {_num(e.max_open_interest)} {e.underlying} x ${_num(e.reference_price)} x "
            f"({float(e.max_gap):g} gap - {float(e.mm_rate):g} mm) = ${float(loss):,.0f} of loss beyond margin, above "
            f"{float(coverage):g} x the ${float(insurance_fund_usd):,.0f} insurance fund (cap at most {_num(allowed)} {e.underlying})"
        )
    return out


def config_exposures(config) -> tuple[list[Exposure], list[str]]:
    """The rule's inputs from a `keeper.config.ProtocolConfig`, and what the config does not state."""
    missing = []
    exposures = []
    for m in config.markets:
        u = config.underlyings[m.underlying]
        price = u.reference_price or config.price_ids[u.price_id].initial_price
        if not u.max_gap:
            missing.append(f"underlyings {u.symbol}: max_gap")
            continue
        if not price:
            missing.append(f"underlyings {u.symbol}: reference_price")
            continue
        exposures.append(
            Exposure(
                m.name,
                u.symbol,
                Fraction(m.max_open_interest, WAD),
                Fraction(price),
                Fraction(u.max_gap, WAD),
                Fraction(u.mm_rate, WAD),
            )
        )
    return exposures, sorted(set(missing))


def check_config(config) -> list[str]:
    """Problems of a whole config (the rule, or inputs it does not state)."""
    exposures, missing = config_exposures(config)
    if not config.insurance_fund_usd:
        missing.append("backstop: insurance_fund_usd")
    if missing:
        return [
            f"cannot check open-interest caps against the insurance fund: the config does not state {', '.join(missing)}"
        ]
    return problems(exposures, Fraction(config.insurance_fund_usd), Fraction(config.backstop_coverage, WAD))


def warning_line(lines: list[str]) -> str:
    """The one warning line for `lines` (see `problems`)."""
    return "backstop: " + "; ".join(lines) + " (docs/threat-model.md)"


def onchain_exposures(w3, deployment, block="latest") -> tuple[list[Exposure], Fraction, Fraction] | None:
    """The rule's inputs as they are on chain at `block`: caps, mm rates, index prices and the
    vault's insurance fund; max_gap and coverage from the config recorded in the manifest
    (`parameters`). None when the manifest records no max_gap (deployed before the rule)."""
    from keeper.chain.types import MarketInfo, UnderlyingRates
    from keeper.params.current import contracts

    params = getattr(deployment, "parameters", None) or {}
    und = params.get("underlyings") or []
    gaps = {u.get("symbol"): int(u.get("max_gap") or 0) for u in und}
    if not any(gaps.values()):
        return None
    c = contracts(w3, deployment)
    engine, oracle, vault = c["engine"].functions, c["oracle"].functions, c["vault"].functions
    names = {i: n for n, i in deployment.underlyings.items()}
    out = []
    for name, m in deployment.markets.items():
        u = MarketInfo.decode(engine.markets(m).call(block_identifier=block)).underlying
        rates = UnderlyingRates.decode(engine.underlyings(u).call(block_identifier=block))
        price_id, mm = rates.price_id, rates.mm_rate
        price = Fraction(oracle.index_price(price_id).call(block_identifier=block), WAD)
        cap = Fraction(engine.max_open_interest(m).call(block_identifier=block), WAD)
        symbol = names.get(u, str(u))
        out.append(Exposure(name, symbol, cap, price, Fraction(gaps.get(symbol, 0), WAD), Fraction(mm, WAD)))
    fund = Fraction(vault.insurance_fund().call(block_identifier=block), WAD)  # the vault keeps it in WAD
    coverage = Fraction(int(params.get("backstop_coverage") or WAD), WAD)
    return out, fund, coverage
