"""The keeper's event index: which accounts exist (from Deposit and PositionChanged logs), which
liquidations happened (Liquidation logs) and which accounts' raw state each block changed (every
vault and engine log naming them: `ScanResult.touched`, what `keeper.chain.state_cache` re-reads),
scanned in chunked eth_getLogs ranges.

A checkpoint (last scanned block, its hash, the hashes of recently scanned heads and every
account with the block it was first seen in) is written atomically to `state_dir` after each
scan, so a restarted keeper resumes where it stopped instead of rescanning from the deploy
block. On a reorg the index rewinds to the common ancestor: accounts first seen above it are
forgotten and the blocks above it are scanned again. At start, the checkpoint's recent hashes
are compared with the node's: a reorg that happened while the keeper was down rewinds too.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from keeper.chain.client import ProtocolClient, ProtocolLog
from keeper.chain.follower import BlockRef, hash_hex
from keeper.errors import KeeperError

log = logging.getLogger("keeper.index")

CHECKPOINT_FILE = "event-index.json"
# the events that make an address an account the keeper follows
DISCOVERY_EVENTS = frozenset({"Deposit", "PositionChanged"})
VERSION = 1


class CheckpointError(KeeperError, RuntimeError):
    """The checkpoint in state_dir is unreadable or belongs to another deployment."""


@dataclass(frozen=True)
class ScanResult:
    """What one `catch_up` read: the block range and the logs in it (oldest first)."""

    from_block: int
    to_block: int
    logs: tuple[ProtocolLog, ...]
    new_accounts: tuple[str, ...]

    @property
    def liquidations(self) -> list[ProtocolLog]:
        return [entry for entry in self.logs if entry.event == "Liquidation"]

    @property
    def touched(self) -> frozenset[str]:
        """Addresses whose raw state the scanned blocks may have changed (`ProtocolLog.touches`;
        contains `TOUCHES_ALL` when a log could not be decoded)."""
        return frozenset(a for entry in self.logs for a in entry.touches)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` as JSON to `path` so that a crash leaves either the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class EventIndex:
    """Accounts of a deployment, kept up to date block by block.

    Parameters
    ----------
    client : the deployment's ProtocolClient.
    start_block : first block to scan when there is no checkpoint (the deploy block).
    state_dir : where the checkpoint lives; None keeps everything in memory.
    chunk_blocks : the widest eth_getLogs range (providers cap ranges or result sizes).
    keep_recent : how many scanned heads' hashes the checkpoint keeps for reorg checks.
    """

    def __init__(
        self,
        client: ProtocolClient,
        start_block: int,
        state_dir: Path | None = None,
        chunk_blocks: int = 2000,
        keep_recent: int = 64,
    ):
        self.client = client
        self.start_block = start_block
        self.path = Path(state_dir) / CHECKPOINT_FILE if state_dir is not None else None
        self.chunk_blocks = chunk_blocks
        self.accounts: dict[str, int] = {}  # account -> block first seen
        self.scanned_to = start_block - 1
        self.recent: deque[tuple[int, str]] = deque(maxlen=keep_recent)
        self.resumed_from: int | None = None  # the checkpoint block a restart resumed from

    # ------------------------------------------------------------------ persistence

    def _identity(self) -> dict:
        dep = self.client.deployment
        return {"chain_id": dep.chain_id, "engine": dep.engine, "vault": dep.vault}

    def load(self) -> bool:
        """Resume from the checkpoint, if there is one; returns whether it did. Raises
        CheckpointError if the file is corrupt or belongs to another deployment."""
        if self.path is None or not self.path.exists():
            return False
        try:
            data = json.loads(self.path.read_text())
            identity = {k: data[k] for k in ("chain_id", "engine", "vault")}
            scanned_to = int(data["scanned_to"])
            recent = [(int(n), str(h)) for n, h in data["recent"]]
            accounts = {str(a): int(b) for a, b in data["accounts"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(
                f"{self.path}: unreadable checkpoint ({e.__class__.__name__}); move it away to rescan"
            ) from None
        if identity != self._identity():
            raise CheckpointError(
                f"{self.path}: checkpoint is for {identity}, not this deployment; use another state dir"
            )
        self.scanned_to, self.accounts = scanned_to, accounts
        self.recent.clear()
        self.recent.extend(recent)
        self.resumed_from = scanned_to
        log.info("event index: resumed from checkpoint at block %d (%d accounts)", scanned_to, len(accounts))
        return True

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.path,
            {
                "version": VERSION,
                **self._identity(),
                "scanned_to": self.scanned_to,
                "block_hash": self.recent[-1][1] if self.recent else None,
                "recent": list(self.recent),
                "accounts": self.accounts,
            },
        )

    # ------------------------------------------------------------------ scanning

    def verify(self) -> int | None:
        """Compare the checkpoint's recent hashes with the node's (after a restart); rewind to
        the newest one still canonical. Returns the block rewound to, or None if all is well."""
        if not self.recent:
            return None
        w3 = self.client.w3
        for number, block_hash in reversed(self.recent):
            try:
                block = w3.eth.get_block(number)
            except Exception as e:
                if e.__class__.__name__ != "BlockNotFound":
                    raise
                continue
            if hash_hex(block["hash"]) == block_hash:
                if number == self.scanned_to:
                    return None
                self.rewind(number)
                return number
        ancestor = self.recent[0][0] - 1
        self.rewind(ancestor)
        return ancestor

    def rewind(self, ancestor: int) -> None:
        """Forget what was read above block `ancestor` (a reorg replaced those blocks)."""
        if ancestor >= self.scanned_to:
            return
        dropped = [a for a, b in self.accounts.items() if b > ancestor]
        for a in dropped:
            del self.accounts[a]
        while self.recent and self.recent[-1][0] > ancestor:
            self.recent.pop()
        log.warning(
            "event index: rewound from block %d to %d (%d accounts forgotten until seen again)",
            self.scanned_to,
            ancestor,
            len(dropped),
        )
        self.scanned_to = max(ancestor, self.start_block - 1)
        self.save()

    def catch_up(self, head: BlockRef) -> ScanResult:
        """Scan (scanned_to, head.number] in chunks of `chunk_blocks`; record head's hash; save."""
        first = self.scanned_to + 1
        logs: list[ProtocolLog] = []
        new: list[str] = []
        start = first
        while start <= head.number:
            end = min(start + self.chunk_blocks - 1, head.number)
            for entry in self.client.protocol_logs(start, end):
                logs.append(entry)
                if entry.event in DISCOVERY_EVENTS and entry.account not in self.accounts:
                    self.accounts[entry.account] = entry.block
                    new.append(entry.account)
            start = end + 1
        changed = head.number >= first
        if changed:
            if head.number > first:
                log.info("event index: scanned blocks %d..%d (%d new accounts)", first, head.number, len(new))
            self.scanned_to = head.number
        if not self.recent or self.recent[-1] != (head.number, head.hash):
            self.recent.append((head.number, head.hash))
            changed = True
        if changed:
            self.save()
        return ScanResult(first, head.number, tuple(logs), tuple(new))
