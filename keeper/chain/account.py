"""One account read at one block, with its numbers worked out: what `keeper account` prints.

The keeper's valuation (keeper.risk.margin: collateral by asset, P&L by position with accrued
funding, the standard margin) next to the contract's own `margin_summary`, so the command only
formats. All amounts WAD USD (ints) unless stated."""

from __future__ import annotations

from dataclasses import dataclass

from keeper.chain.client import ProtocolClient, Snapshot
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
