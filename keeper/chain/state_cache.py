"""An event-driven cache of every account's raw state (`MarginLens.account_states`: cash,
collateral balances, positions), so that a block's snapshot re-reads only the accounts the block
changed instead of all of them.

On chain, an account's raw state changes only in a transaction that logs an event naming it:
`Deposit` and `Withdraw` (cash or a collateral balance), `CashSettled` (every other change of
cash: realized P&L, funding, penalties, collateral sales, deficits, option premiums and
settlements), `CollateralTransferred` (collateral moved by a liquidation) and `PositionChanged`
(every position write, including settlement and liquidation). The event index
(`keeper.chain.event_index`) already reads every log of the vault and the engine for each block;
the cache takes the addresses those logs name (`ScanResult.touched`) and, at the next snapshot,
re-reads exactly those accounts plus the accounts it has never read. Everything every account
shares (index prices, the market table with its funding indices and block time, the vault's
asset count) is read in full every block: four calls.

It falls back to a full read of every account:

- on the first snapshot, after `reset()` (a reorg, a pass that failed half-way: the caller
  decides), and every `resync_every_blocks` blocks;
- when the logs it was given do not cover every block since its last snapshot, or a log could
  not be decoded (a contract changed under the keeper);
- when the number of assets or markets changes (the book's columns).

The snapshot it returns equals `ProtocolClient.snapshot(accounts, block)` to the wei
(tests/integration/test_state_cache.py checks it block by block through trades, deposits,
withdrawals, liquidations and a reorg on Anvil). Option positions and attestations are not in
`account_states`: the keeper reads accounts holding them through `margin_summaries` every block.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from keeper.chain.client import TOUCHES_ALL, BlockInputs, Snapshot
from keeper.chain.types import AccountState
from keeper.risk.margin import AccountBook

log = logging.getLogger("keeper.state")

__all__ = ["AccountStateCache", "CacheRead", "StateSource"]


class StateSource(Protocol):
    """What the cache reads from (a `keeper.chain.client.ProtocolClient`)."""

    def block_inputs(self, block: int) -> BlockInputs: ...

    def account_states(self, accounts: Sequence[str], block: int | str = "latest") -> list[AccountState]: ...


@dataclass(frozen=True)
class CacheRead:
    """What one snapshot read: `full` (every account) and why (`reason`, "" when incremental),
    `read` accounts read from the chain, and `changed_rows` int64 (K,), the rows of the snapshot's
    book whose raw state differs from the previous snapshot's (None after a full read or when the
    account list changed: unknown, compare the books)."""

    block: int
    full: bool
    reason: str
    read: int
    changed_rows: np.ndarray | None


class AccountStateCache:
    """Raw account states kept in memory between blocks.

    Use: after each event-index scan, `note(scan.from_block, scan.to_block, scan.touched)`; then
    `snapshot(client, accounts, block)`. `reset()` after a reorg. `resync_every_blocks`: a full
    read of every account at least this often (>= 1; 1 = every block, no cache).
    """

    def __init__(self, resync_every_blocks: int = 200):
        if resync_every_blocks < 1:
            raise ValueError("resync_every_blocks must be at least 1")
        self.resync_every_blocks = resync_every_blocks
        self.states: dict[str, AccountState] = {}
        self.block: int | None = None  # the block the cached states were read at
        self.synced_at: int | None = None  # the last full read
        self.last: CacheRead | None = None
        self._covered_to: int | None = None  # logs noted up to this block (since self.block)
        self._touched: set[str] = set()
        self._gap: str = ""  # why the noted logs cannot be trusted ("" = they can)
        # the book of the last snapshot, rows in `_accounts` order (writable copies)
        self._accounts: tuple[str, ...] = ()
        self._rows: dict[str, int] = {}
        self._arrays: tuple[np.ndarray, ...] | None = None  # cash, collateral, size, entry, funding

    def reset(self, reason: str = "reset") -> None:
        """Forget every state: the next snapshot reads every account."""
        self.states.clear()
        self.block = self.synced_at = self._covered_to = None
        self._touched.clear()
        self._gap = reason
        self._accounts, self._rows, self._arrays = (), {}, None

    def note(self, from_block: int, to_block: int, touched: Iterable[str]) -> None:
        """The logs of blocks [from_block, to_block] named `touched` (an empty range is a no-op).
        Ranges must follow each other from the last snapshot's block; a gap or an overlap makes
        the next snapshot a full read."""
        if to_block < from_block or self.block is None:
            return
        expected = (self._covered_to if self._covered_to is not None else self.block) + 1
        if from_block != expected:
            self._gap = f"logs of blocks {from_block}..{to_block} do not follow block {expected - 1}"
        self._covered_to = to_block
        for account in touched:
            if account == TOUCHES_ALL:
                self._gap = f"a log in blocks {from_block}..{to_block} could not be decoded"
            else:
                self._touched.add(account)

    def _full_reason(self, block: int, inputs: BlockInputs) -> str:
        if self.block is None or self._arrays is None:
            return self._gap or "first read"
        if self._gap:
            return self._gap
        if block < self.block:
            return f"block {block} is below the cached block {self.block}"
        covered = self._covered_to if self._covered_to is not None else self.block
        if covered != block:
            return f"logs noted up to block {covered}, not {block}"
        if self.synced_at is None or block - self.synced_at >= self.resync_every_blocks:
            return f"resync (every {self.resync_every_blocks} blocks)"
        cash, collateral, size, _, _ = self._arrays
        if collateral.shape[1] != inputs.n_assets or size.shape[1] != inputs.markets.n_markets:
            return "the number of assets or markets changed"
        return ""

    def snapshot(self, client: StateSource, accounts: Sequence[str], block: int) -> Snapshot:
        """The snapshot of `accounts` at `block`, as `ProtocolClient.snapshot` reads it, re-reading
        only the accounts whose state may have changed since the last one (see the module). On an
        exception nothing is updated: the next call reads the same accounts again."""
        accounts = tuple(accounts)
        inputs = client.block_inputs(block)
        reason = self._full_reason(block, inputs)
        if reason:
            to_read = list(accounts)
        else:
            to_read = [a for a in self._touched if a in self._rows or a in self.states]
            to_read += [a for a in accounts if a not in self.states]
            to_read = list(dict.fromkeys(to_read))
        fresh = client.account_states(to_read, block) if to_read else []
        if reason:
            self.states = dict(zip(to_read, fresh))
        else:
            self.states.update(zip(to_read, fresh))
        changed = self._update_book(accounts, dict(zip(to_read, fresh)), inputs, rebuild=bool(reason))
        self.block, self._covered_to, self._gap = block, None, ""
        self._touched.clear()
        if reason:
            self.synced_at = block
            log.debug("state cache: full read of %d accounts at block %d (%s)", len(accounts), block, reason)
        self.last = CacheRead(block, bool(reason), reason, len(to_read), changed)
        assert self._arrays is not None  # set by _update_book
        cash, collateral, size, entry, funding = self._arrays
        return Snapshot(
            block=block,
            accounts=accounts,
            prices=inputs.prices,
            markets=inputs.markets,
            book=AccountBook(cash, collateral, size, entry, funding),
        )

    def _update_book(
        self, accounts: tuple[str, ...], fresh: dict[str, AccountState], inputs: BlockInputs, rebuild: bool
    ) -> np.ndarray | None:
        """Bring the book's arrays to `accounts` and the fresh states; returns the rows whose state
        changed (None when the arrays were rebuilt)."""
        if rebuild or accounts != self._accounts or self._arrays is None:
            book = AccountBook.from_states(
                [self.states[a] for a in accounts], inputs.n_assets, inputs.markets.n_markets
            )
            self._arrays = tuple(
                np.array(getattr(book, n), dtype=object)
                for n in ("cash", "collateral", "size", "entry_price", "funding_index")
            )
            self._accounts, self._rows = accounts, {a: i for i, a in enumerate(accounts)}
            return None
        cash, collateral, size, entry, funding = (a.copy() for a in self._arrays)  # the last book stays as it was
        n_markets = size.shape[1]
        changed: list[int] = []
        for account, state in fresh.items():
            row = self._rows.get(account)
            if row is None:
                continue
            if len(state.collateral) != collateral.shape[1]:
                raise ValueError(
                    f"{account}: {len(state.collateral)} collateral balances, expected {collateral.shape[1]}"
                )
            new_size = [0] * n_markets
            new_entry = [0] * n_markets
            new_funding = [0] * n_markets
            for p in state.positions:
                if not 0 <= p.market < n_markets:
                    raise ValueError(f"{account}: market id {p.market} outside [0, {n_markets})")
                new_size[p.market], new_entry[p.market], new_funding[p.market] = p.size, p.entry_price, p.funding_index
            before = (cash[row], list(collateral[row]), list(size[row]), list(entry[row]), list(funding[row]))
            after = (state.cash, list(state.collateral), new_size, new_entry, new_funding)
            if before == after:
                continue
            changed.append(row)
            cash[row] = state.cash
            collateral[row, :] = state.collateral
            size[row, :], entry[row, :], funding[row, :] = new_size, new_entry, new_funding
        self._arrays = (cash, collateral, size, entry, funding)
        return np.array(sorted(changed), dtype=np.int64)
