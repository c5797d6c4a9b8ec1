"""keeper.sharding: owners, takeover delays, and two shards of the bot splitting a book and
taking over each other's accounts when one stops."""

from __future__ import annotations

from collections import Counter

import pytest
from eth_utils import keccak

from keeper import sharding
from keeper.bot import liquidation_key
from keeper.chain.follower import BlockRef, HeadUpdate
from keeper.settings import SettingsError, load_settings
from keeper.sharding import Shard, ShardError
from tests.keeper.test_bot_decisions import GWEI, WAD, CountingCall, book_bot


def test_shard_parse():
    assert Shard.parse("0/1") == Shard(0, 1) and Shard.parse(" 2/3 ") == Shard(2, 3) and str(Shard(2, 3)) == "2/3"
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0", "1/2/3", "0/1025"):
        with pytest.raises(ShardError, match="I/N"):
            Shard.parse(bad)


def test_shard_setting_is_one_line_on_bad_input():
    assert load_settings(env={"KEEPER_SHARD": "1/4", "KEEPER_TAKEOVER_BLOCKS": "5"}).shard == Shard(1, 4)
    with pytest.raises(SettingsError, match="KEEPER_SHARD: shard: a shard is I/N"):
        load_settings(env={"KEEPER_SHARD": "4/4"})
    with pytest.raises(SettingsError, match="takeover_blocks"):
        load_settings(takeover_blocks=0)


def test_owner_is_keccak_of_the_address_modulo_the_count():
    account = "0x" + "ab" * 20
    assert sharding.owner(account, 7) == int.from_bytes(keccak(bytes.fromhex("ab" * 20)), "big") % 7
    # case does not matter (checksummed or not, the same 20 bytes)
    assert sharding.owner(account.upper().replace("0X", "0x"), 7) == sharding.owner(account, 7)


def test_owners_spread_evenly():
    counts = Counter(sharding.owner(f"0x{i:040x}", 4) for i in range(8000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(abs(n - 2000) < 200 for n in counts.values())  # ~4.5 sigma of a binomial(8000, 1/4)


def test_takeover_delays_follow_the_ring():
    account = "0x" + "11" * 20
    owner = sharding.owner(account, 5)
    delays = {i: sharding.takeover_delay(account, Shard(i, 5), 3) for i in range(5)}
    assert delays[owner] == 0
    assert sorted(delays.values()) == [0, 3, 6, 9, 12]
    assert delays[(owner + 1) % 5] == 3 and delays[(owner - 1) % 5] == 12
    # only keeper: everything is its own
    assert sharding.mine(account, None, None, 10, 3)
    nxt = Shard((owner + 1) % 5, 5)
    assert not sharding.mine(account, nxt, 10, 12, 3) and sharding.mine(account, nxt, 10, 13, 3)
    assert not sharding.mine(account, nxt, None, 10, 3)  # first seen now: not yet


ROWS = [(2900 * WAD, 0, 10 * WAD, 2200 * WAD)] * 8  # 8 real accounts, each below MM at ETH 2,000


def shard_bot(shard: Shard | None, takeover_blocks: int = 2):
    return book_bot(
        ROWS,
        lambda i, a, c: CountingCall(c, a, 20_000 * WAD, 400_000),
        shard=shard,
        takeover_blocks=takeover_blocks,
    )


def process_at(bot, block: int) -> None:
    bot.process_block(HeadUpdate(BlockRef(block, "0x01", "0x00", 1000, base_fee=GWEI), True, None, 0.0, False))


def test_two_shards_split_the_book_without_overlap():
    sent = {}
    for i in range(2):
        bot, tx, accounts, calls = shard_bot(Shard(i, 2))
        process_at(bot, 10)
        sent[i] = set(tx.sent)
        # another shard's accounts are not even simulated
        assert set(calls) == {a for a in accounts if sharding.owner(a, 2) == i}
    everyone = {liquidation_key(a) for a in accounts}
    assert sent[0] | sent[1] == everyone and not sent[0] & sent[1]
    assert sent[0] and sent[1]


def test_a_stopped_shards_accounts_are_taken_over_after_the_delay():
    """Shard 1 of 2 is down: shard 0 tries its accounts once they have been liquidatable for
    `takeover_blocks` blocks, and counts each attempt as a takeover."""
    bot, tx, accounts, _ = shard_bot(Shard(0, 2), takeover_blocks=3)
    theirs = [liquidation_key(a) for a in accounts if sharding.owner(a, 2) == 1]
    for block in (10, 11, 12):
        process_at(bot, block)
        assert not set(theirs) & set(tx.sent)
    process_at(bot, 13)
    assert set(theirs) <= set(tx.sent)
    assert bot.metrics.value("keeper_takeovers_total") == len(theirs)
    assert bot.metrics.value("keeper_shard_count") == 2
