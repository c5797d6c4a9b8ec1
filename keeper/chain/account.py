"""One account read at one block, with its numbers worked out: what `keeper account` prints;
and every account's margin at one block: what `keeper accounts` prints.

The keeper's valuation (keeper.risk.margin: collateral by asset, P&L by position with accrued
funding, the standard margin) next to the contract's own `margin_summary`, so the command only
formats. All amounts WAD USD (ints) unless stated."""

from __future__ import annotations

from dataclasses import dataclass

from keeper.chain.client import ProtocolClient, Snapshot
from keeper.chain.event_index import EventIndex
from keeper.chain.follower import BlockRef
from keeper.chain.types import MarginSummary, OptionMargin, OptionState
from keeper.risk.margin import MarginResult, RiskParams, Valuation, margin, valuation


@dataclass(frozen=True)
class AccountView:
    """`snap` holds the one account (row 0). `keeper` is the keeper's mirror of the engine's
    cross margin (futures and collateral), `values` its parts; `options` the account's option
    positions and `option_margin` what the option market adds; `onchain` the contract's answer
    (options and any attestation included); `attested` whether an attestation holds."""

    address: str
    snap: Snapshot
    params: RiskParams
    keeper: MarginResult
    values: Valuation
    options: tuple[OptionState, ...]
    option_margin: OptionMargin
    onchain: MarginSummary
    attested: bool

    @property
    def block(self) -> int:
        return self.snap.block

    @property
    def cash_value(self) -> int:
        return int(self.values.cash_value[0])

    @property
    def collateral_value(self) -> int:
        """Haircut value of the non-cash collateral, all assets."""
        return int(self.values.collateral_value[0].sum())

    @property
    def unrealized_pnl(self) -> int:
        """P&L of the futures and perpetuals, accrued funding included, plus the options' value:
        the engine's equity minus cash and collateral value."""
        return int(self.values.unrealized_pnl[0].sum()) + self.option_margin.value

    @property
    def standard_im(self) -> int:
        """The engine's cross margin plus the option market's standard margin (no attestation)."""
        return int(self.keeper.initial_margin[0]) + self.option_margin.initial_margin

    @property
    def standard_mm(self) -> int:
        return int(self.keeper.maintenance_margin[0]) + self.option_margin.maintenance_margin

    @property
    def equity(self) -> int:
        """The keeper's equity: cash + collateral + unrealized P&L (= `keeper.equity` + options)."""
        return int(self.keeper.equity[0]) + self.option_margin.value

    @property
    def agrees(self) -> bool:
        """The keeper's equity and requirements equal the contract's; an attestation can only
        lower the requirement, so with one the contract's may be below the standard."""
        c = self.onchain
        if self.attested:
            requirement_ok = c.initial_margin <= self.standard_im and c.maintenance_margin <= self.standard_mm
        else:
            requirement_ok = (c.initial_margin, c.maintenance_margin) == (self.standard_im, self.standard_mm)
        return self.equity == c.equity and requirement_ok


def read_account(client: ProtocolClient, address: str, block: int) -> AccountView:
    """`address` (checksummed) at `block`: everything from reads pinned to that block."""
    snap = client.snapshot([address], block)
    params = client.risk_params(block)
    options = client.option_states([address], block)[0]
    option_margin = client.option_margin(address, [int(p) for p in snap.prices], block)
    attested = client.attestor is not None and bool(
        client.attestor.functions.attestation_holds(address).call(block_identifier=block)
    )
    return AccountView(
        address=address,
        snap=snap,
        params=params,
        keeper=margin(snap.book, snap.markets, params, snap.prices),
        values=valuation(snap.book, snap.markets, params, snap.prices),
        options=tuple(options),
        option_margin=option_margin,
        onchain=client.margin_summaries([address], block)[0],
        attested=attested,
    )


# ---------------------------------------------------------------- every account at once

SORTS = ("health", "equity", "mm", "address")


@dataclass(frozen=True)
class AccountHealth:
    """One account's margin as the contract states it (`MarginLens.margin_summaries`) at `block`."""

    address: str
    block: int
    margin: MarginSummary

    @property
    def liquidatable(self) -> bool:
        """equity < maintenance margin, as `keeper account` and the liquidator decide it."""
        return self.margin.equity < self.margin.maintenance_margin


def read_health(client: ProtocolClient, from_block: int, block: int) -> list[AccountHealth]:
    """Every account of the deployment and its margin at `block`: accounts found as the keeper
    finds them (Deposit and PositionChanged logs in [from_block, block], keeper.chain.event_index,
    nothing persisted), their margin read in batches through the lens, pinned to `block`."""
    index = EventIndex(client, from_block)
    index.catch_up(BlockRef.from_block(client.w3.eth.get_block(block)))
    accounts = sorted(index.accounts, key=str.lower)
    return [AccountHealth(a, block, m) for a, m in zip(accounts, client.margin_summaries(accounts, block), strict=True)]


def select_health(
    rows: list[AccountHealth], sort: str = "health", limit: int | None = None, liquidatable_only: bool = False
) -> list[AccountHealth]:
    """`rows` filtered and ordered for display: health ascending (riskiest first; accounts with
    nothing to maintain last), equity or maintenance margin largest first, or address; ties by
    address. At most `limit` rows (None: all)."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    keys = {
        "health": lambda r: (r.margin.health_factor, r.address.lower()),
        "equity": lambda r: (-r.margin.equity, r.address.lower()),
        "mm": lambda r: (-r.margin.maintenance_margin, r.address.lower()),
        "address": lambda r: r.address.lower(),
    }
    chosen = sorted((r for r in rows if r.liquidatable or not liquidatable_only), key=keys[sort])
    return chosen if limit is None else chosen[:limit]
