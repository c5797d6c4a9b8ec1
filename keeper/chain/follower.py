"""Head following: new blocks, reorgs (by block hash) and a stale node (by block timestamp).

The follower keeps the (number, hash) of the last `depth` heads it saw. A new head whose parent
hash is the previous head's hash extends the chain. Anything else (a different hash at a known
height, a lower head, a parent that does not match) is checked against the node: the newest
remembered block whose hash the node still returns is the common ancestor, and everything the
keeper derived from blocks above it must be re-read. A reorg deeper than `depth` reports the
oldest remembered block minus one as the ancestor (a conservative rewind).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from web3 import Web3

log = logging.getLogger("keeper.follower")


@dataclass(frozen=True)
class BlockRef:
    number: int
    hash: str  # 0x hex
    parent_hash: str
    timestamp: int  # seconds
    base_fee: int = 0  # wei per gas (EIP-1559 baseFeePerGas; 0 before London)

    @classmethod
    def from_block(cls, block) -> BlockRef:
        return cls(
            int(block["number"]),
            hash_hex(block["hash"]),
            hash_hex(block["parentHash"]),
            int(block["timestamp"]),
            int(block.get("baseFeePerGas") or 0),
        )


def hash_hex(value) -> str:
    """A block or transaction hash (bytes, HexBytes or str) as lower-case 0x hex."""
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


@dataclass(frozen=True)
class HeadUpdate:
    """What changed since the previous `update()`.

    head : the node's latest block.
    is_new : head differs from the previous head.
    reorg_ancestor : number of the newest block common to the old and new chain when the
        chain was reorganised, else None. State derived from blocks above it is stale.
    lag_seconds : wall clock minus the head's timestamp (negative when the chain runs ahead).
    is_stale : lag_seconds > stale_after_seconds: the node has stopped following the chain.
    """

    head: BlockRef
    is_new: bool
    reorg_ancestor: int | None
    lag_seconds: float
    is_stale: bool


class ChainFollower:
    """Follow the node's head; see the module docstring."""

    def __init__(
        self, w3: Web3, depth: int = 64, stale_after_seconds: float = 120.0, clock: Callable[[], float] = time.time
    ):
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.w3 = w3
        self.depth = depth
        self.stale_after_seconds = stale_after_seconds
        self.clock = clock
        self.recent: deque[BlockRef] = deque(maxlen=depth)

    def _block(self, ident) -> BlockRef | None:
        block = self.w3.eth.get_block(ident)
        return None if block is None else BlockRef.from_block(block)

    def _canonical_hash(self, number: int) -> str | None:
        try:
            block = self.w3.eth.get_block(number)
        except Exception as e:  # BlockNotFound above the node's head
            if e.__class__.__name__ == "BlockNotFound":
                return None
            raise
        return hash_hex(block["hash"])

    def _common_ancestor(self, head: BlockRef) -> int:
        for ref in reversed(self.recent):
            if ref.number > head.number:
                continue
            if ref.number == head.number:
                if ref.hash == head.hash:
                    return ref.number
                continue
            if ref.number == head.number - 1 and ref.hash == head.parent_hash:
                return ref.number
            if self._canonical_hash(ref.number) == ref.hash:
                return ref.number
        return self.recent[0].number - 1

    def update(self) -> HeadUpdate:
        """Read the node's head once and compare it with what was seen before."""
        head = self._block("latest")
        ancestor: int | None = None
        is_new = True
        if self.recent:
            last = self.recent[-1]
            if head.hash == last.hash:
                is_new = False
            elif head.number == last.number + 1 and head.parent_hash == last.hash:
                pass  # extends the chain
            elif head.number > last.number + 1 and self._canonical_hash(last.number) == last.hash:
                pass  # extends it, with blocks we did not see
            else:
                found = self._common_ancestor(head)
                ancestor = found if found < last.number else None
            if ancestor is not None:
                log.warning(
                    "reorg: head %d %s; common ancestor %d (was head %d %s)",
                    head.number,
                    head.hash[:10],
                    ancestor,
                    last.number,
                    last.hash[:10],
                )
                while self.recent and self.recent[-1].number > ancestor:
                    self.recent.pop()
        if is_new:
            self.recent.append(head)
        lag = self.clock() - head.timestamp
        return HeadUpdate(head, is_new, ancestor, lag, lag > self.stale_after_seconds)
