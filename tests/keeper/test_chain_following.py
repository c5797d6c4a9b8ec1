"""Head following (reorgs by hash, stale heads) and the event index (checkpoint, resume, rewind),
against an in-memory chain."""

from __future__ import annotations

import json

import pytest

from keeper.chain.client import ProtocolLog
from keeper.chain.deployment import Deployment
from keeper.chain.event_index import CHECKPOINT_FILE, CheckpointError, EventIndex
from keeper.chain.follower import BlockRef, ChainFollower


class BlockNotFound(Exception):
    pass


class FakeChain:
    """Blocks as dicts with number/hash/parentHash/timestamp; `fork` rewrites history."""

    def __init__(self):
        self.blocks: list[dict] = []
        self.logs: dict[int, list[tuple[str, str]]] = {}  # block -> [(event, account)]
        self.get_logs_ranges: list[tuple[int, int]] = []
        self.eth = self
        self.add("genesis")

    def add(self, tag: str = "", timestamp: int | None = None) -> dict:
        n = len(self.blocks)
        parent = self.blocks[-1]["hash"] if self.blocks else "0x" + "00" * 32
        block = {
            "number": n,
            "hash": "0x" + f"{n:04x}{tag}".encode().hex().ljust(64, "0")[:64],
            "parentHash": parent,
            "timestamp": timestamp if timestamp is not None else 1000 + 12 * n,
        }
        self.blocks.append(block)
        return block

    def fork(self, keep: int, tag: str, length: int) -> None:
        """Replace every block above `keep` by `length` new ones."""
        del self.blocks[keep + 1 :]
        for n in list(self.logs):
            if n > keep:
                del self.logs[n]
        for _ in range(length):
            self.add(tag)

    def get_block(self, ident):
        if ident == "latest":
            return self.blocks[-1]
        if ident >= len(self.blocks):
            raise BlockNotFound(ident)
        return self.blocks[ident]

    def ref(self, n: int) -> BlockRef:
        return BlockRef.from_block(self.blocks[n])


class FakeClient:
    def __init__(self, chain: FakeChain):
        self.w3 = chain
        self.chain = chain
        self.deployment = Deployment(
            chain_id=31337, oracle="0xO", vault="0xV", engine="0xE", settlement_token="0xT", settlement_decimals=6
        )

    def protocol_logs(self, a: int, b: int) -> list[ProtocolLog]:
        self.chain.get_logs_ranges.append((a, b))
        return [
            ProtocolLog(event, account, n, self.chain.blocks[n]["hash"], "0x", {})
            for n in range(a, b + 1)
            for event, account in self.chain.logs.get(n, [])
        ]


# ---------------------------------------------------------------- follower


def test_new_blocks_extend_the_chain_without_a_reorg():
    chain = FakeChain()
    f = ChainFollower(chain, depth=8, clock=lambda: 1000.0)
    assert f.update().is_new
    assert not f.update().is_new  # same head
    chain.add()
    chain.add()  # one block skipped
    u = f.update()
    assert u.is_new and u.reorg_ancestor is None and u.head.number == 2


def test_reorg_at_the_same_height_finds_the_common_ancestor():
    chain = FakeChain()
    for _ in range(5):
        chain.add()
    f = ChainFollower(chain, depth=8)
    for n in range(6):
        f.recent.append(chain.ref(n))
    chain.fork(keep=3, tag="b", length=2)  # blocks 4, 5 replaced
    u = f.update()
    assert u.reorg_ancestor == 3 and u.head.number == 5
    assert [r.number for r in f.recent] == [0, 1, 2, 3, 5]


def test_reorg_to_a_shorter_chain():
    chain = FakeChain()
    for _ in range(5):
        chain.add()
    f = ChainFollower(chain, depth=8)
    for n in range(6):
        f.recent.append(chain.ref(n))
    chain.fork(keep=2, tag="c", length=1)  # head 3 < previous head 5
    assert f.update().reorg_ancestor == 2


def test_reorg_deeper_than_the_buffer_rewinds_below_it():
    chain = FakeChain()
    for _ in range(9):
        chain.add()
    f = ChainFollower(chain, depth=3)
    for n in range(10):
        f.update() if n == 0 else None
    for n in range(7, 10):
        f.recent.append(chain.ref(n))
    chain.fork(keep=1, tag="d", length=8)
    assert f.update().reorg_ancestor == 6  # oldest remembered (7) - 1


def test_stale_head_by_timestamp():
    chain = FakeChain()
    chain.add(timestamp=5000)
    assert ChainFollower(chain, stale_after_seconds=60, clock=lambda: 5061.0).update().is_stale
    fresh = ChainFollower(chain, stale_after_seconds=60, clock=lambda: 5059.0).update()
    assert not fresh.is_stale and fresh.lag_seconds == 59.0


# ---------------------------------------------------------------- event index


def make_history(chain: FakeChain, blocks: int = 10) -> None:
    for _ in range(blocks):
        chain.add()
    chain.logs[2] = [("Deposit", "0xA")]
    chain.logs[5] = [("PositionChanged", "0xB"), ("Deposit", "0xA")]
    chain.logs[8] = [("Liquidation", "0xB"), ("Deposit", "0xC")]


def test_scans_in_chunks_and_finds_accounts_and_liquidations(tmp_path):
    chain = FakeChain()
    make_history(chain)
    index = EventIndex(FakeClient(chain), start_block=1, state_dir=tmp_path, chunk_blocks=4)
    scan = index.catch_up(chain.ref(10))
    assert chain.get_logs_ranges == [(1, 4), (5, 8), (9, 10)]
    assert index.accounts == {"0xA": 2, "0xB": 5, "0xC": 8}
    assert [(e.account, e.block) for e in scan.liquidations] == [("0xB", 8)]
    saved = json.loads((tmp_path / CHECKPOINT_FILE).read_text())
    assert saved["scanned_to"] == 10 and saved["block_hash"] == chain.blocks[10]["hash"]


def test_restart_resumes_from_the_checkpoint(tmp_path):
    chain = FakeChain()
    make_history(chain)
    EventIndex(FakeClient(chain), 1, tmp_path).catch_up(chain.ref(10))
    chain.add()
    chain.logs[11] = [("Deposit", "0xD")]
    chain.get_logs_ranges.clear()
    again = EventIndex(FakeClient(chain), 1, tmp_path)
    assert again.load() and again.resumed_from == 10
    assert again.verify() is None
    again.catch_up(chain.ref(11))
    assert chain.get_logs_ranges == [(11, 11)]  # no rescan from the start block
    assert set(again.accounts) == {"0xA", "0xB", "0xC", "0xD"}


def test_reorg_rewinds_and_forgets_accounts_first_seen_above_the_ancestor(tmp_path):
    chain = FakeChain()
    make_history(chain)
    index = EventIndex(FakeClient(chain), 1, tmp_path)
    index.catch_up(chain.ref(10))
    chain.fork(keep=6, tag="r", length=4)  # 0xC's deposit (block 8) is gone
    index.rewind(6)
    assert index.scanned_to == 6 and set(index.accounts) == {"0xA", "0xB"}
    chain.get_logs_ranges.clear()
    index.catch_up(chain.ref(10))
    assert chain.get_logs_ranges == [(7, 10)] and set(index.accounts) == {"0xA", "0xB"}


def test_reorg_while_down_is_found_at_restart(tmp_path):
    chain = FakeChain()
    make_history(chain)
    index = EventIndex(FakeClient(chain), 1, tmp_path)
    for n in range(1, 11):
        index.catch_up(chain.ref(n))
    chain.fork(keep=7, tag="x", length=3)
    again = EventIndex(FakeClient(chain), 1, tmp_path)
    again.load()
    assert again.verify() == 7
    assert again.scanned_to == 7 and "0xC" not in again.accounts


def test_checkpoint_of_another_deployment_or_corrupt_is_refused(tmp_path):
    chain = FakeChain()
    make_history(chain)
    EventIndex(FakeClient(chain), 1, tmp_path).catch_up(chain.ref(10))
    other = FakeClient(chain)
    other.deployment = Deployment(
        chain_id=1, oracle="0xO", vault="0xV", engine="0xE2", settlement_token="0xT", settlement_decimals=6
    )
    with pytest.raises(CheckpointError, match="not this deployment"):
        EventIndex(other, 1, tmp_path).load()
    (tmp_path / CHECKPOINT_FILE).write_text("{broken")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        EventIndex(FakeClient(chain), 1, tmp_path).load()
