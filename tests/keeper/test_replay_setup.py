"""Set-up transactions of `keeper replay` are confirmed batch by batch: a stall is one line naming
what stalled, never web3's TimeExhausted (no chain: a fake node)."""

from __future__ import annotations

import pytest
from web3.exceptions import TransactionNotFound

from keeper.replay import driver
from keeper.replay.driver import ReplayError, confirm


class Node:
    """Mines `per_block` of the sent transactions (in order) each time `mine` is called."""

    def __init__(self, hashes: list[bytes], per_block: int, status: dict[bytes, int] | None = None):
        self.hashes, self.per_block, self.mined, self.status = hashes, per_block, 0, status or {}
        self.eth = self

    def mine(self) -> None:
        self.mined = min(len(self.hashes), self.mined + self.per_block)

    def get_transaction_receipt(self, h):
        if h not in self.hashes[: self.mined]:
            raise TransactionNotFound(f"{h!r}")
        return {"status": self.status.get(h, 1), "blockNumber": 1 + self.hashes.index(h) // max(self.per_block, 1)}


HASHES = [bytes([i]) * 32 for i in range(40)]


def test_a_batch_is_mined_block_by_block_until_every_transaction_is_in():
    node = Node(HASHES, per_block=15)
    confirm(node, HASHES, "trade", mine=node.mine)
    assert node.mined == 40


def test_a_stalled_batch_is_one_line_naming_what_stalled():
    node = Node(HASHES, per_block=0)  # the node includes nothing
    with pytest.raises(ReplayError) as e:
        confirm(node, HASHES, "deposit", mine=node.mine)
    message = str(e.value)
    assert message.startswith("set-up stalled: 40 of 40 deposit transaction(s) not mined")
    assert f"{driver.STALL_BLOCKS} blocks without one of them" in message
    assert "0x" + HASHES[0].hex() in message and "\n" not in message


def test_without_mining_the_wait_scales_with_the_batch_and_ends_in_one_line(monkeypatch):
    assert driver.stall_timeout(1000) > driver.stall_timeout(10) >= driver.STALL_BASE_SECONDS
    monkeypatch.setattr(driver, "STALL_BASE_SECONDS", 0.2)
    monkeypatch.setattr(driver, "STALL_SECONDS_PER_TX", 0.0)
    node = Node(HASHES, per_block=10)
    node.mine()  # 10 of 40 are in, the rest never come
    with pytest.raises(ReplayError, match=r"^set-up stalled: 30 of 40 trade transaction\(s\) not mined after 0 s"):
        confirm(node, HASHES, "trade")


def test_a_reverted_set_up_transaction_names_its_stage(monkeypatch):
    monkeypatch.setattr(driver, "revert_reason", lambda w3, h, block: "engine: below initial margin")
    node = Node(HASHES[:3], per_block=3, status={HASHES[1]: 0})
    with pytest.raises(ReplayError, match="trade reverted during setup: engine: below initial margin"):
        confirm(node, HASHES[:3], "trade", mine=node.mine)
