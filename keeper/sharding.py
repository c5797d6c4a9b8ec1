"""Splitting the accounts between keeper processes, and taking over those of a shard that stops.

`keeper run --shard I/N` makes this process shard I of N: it liquidates the accounts whose owner
(`owner`, a hash of the address modulo N) is I, and those of another shard J only once they have
been liquidatable for `takeover_delay` blocks without a liquidation by anyone: the shards after
J in ring order (J + 1, J + 2, ... modulo N) wait `takeover_blocks`, `2 x takeover_blocks`, ...
So while every shard runs, each account is sent by one keeper; if shard J stops, its accounts
are picked up by shard J + 1 after `takeover_blocks` blocks (by J + 2 after twice that if J + 1
is down too, and so on), with no coordination: each keeper sees the same liquidatable accounts
and the same `Liquidation` events on chain, which end an account's episode for all of them.

Each shard signs with its own key (nonces never collide), and needs the collateral a
liquidator must hold (initial margin after taking the positions) like a single keeper.
"""

from __future__ import annotations

from typing import NamedTuple

from eth_utils import keccak, to_bytes

from keeper.errors import KeeperError


class ShardError(KeeperError, ValueError):
    """A shard written other than I/N with 0 <= I < N."""


class Shard(NamedTuple):
    """This process's shard: `index` in [0, `count`)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`"I/N"` (e.g. `"0/3"`); raises ShardError with one line."""
        parts = str(text).strip().split("/")
        try:
            index, count = (int(p) for p in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            index = count = None
        if index is None or count is None or not 1 <= count <= 1024 or not 0 <= index < count:
            raise ShardError(f"a shard is I/N with 0 <= I < N <= 1024 (e.g. 0/3), got {text!r}")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def owner(account: str, count: int) -> int:
    """The shard that liquidates `account` first: keccak256 of its 20 address bytes, modulo
    `count` (the same in every process and on every machine; spread evenly over the shards)."""
    return int.from_bytes(keccak(to_bytes(hexstr=account)), "big") % count


def takeover_delay(account: str, shard: Shard, takeover_blocks: int) -> int:
    """Blocks `account` must stay liquidatable before `shard` sends its liquidation: 0 for its
    owner, then `takeover_blocks` times the distance from the owner in ring order."""
    return (shard.index - owner(account, shard.count)) % shard.count * takeover_blocks


def mine(account: str, shard: Shard | None, liquidatable_since: int | None, block: int, takeover_blocks: int) -> bool:
    """Whether `shard` (None: the only keeper) tries `account` at `block`, the account having been
    liquidatable since block `liquidatable_since` (None: first seen now)."""
    if shard is None:
        return True
    since = block if liquidatable_since is None else liquidatable_since
    return block - since >= takeover_delay(account, shard, takeover_blocks)
