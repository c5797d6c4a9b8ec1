from keeper.replay.report import duplicate_sends, latency_episodes


def test_latency_is_blocks_from_first_liquidatable_to_liquidation():
    # a liquidatable from block 10, liquidated in 11; b from 10, liquidated in 12
    observed = [(10, {"a", "b"}), (11, {"b"}), (12, set()), (13, set())]
    liqs = [{"account": "a", "block": 11}, {"account": "b", "block": 12}]
    latencies, missed = latency_episodes(observed, liqs)
    assert sorted(latencies) == [1, 2]
    assert missed == set()


def test_partially_liquidated_account_still_liquidatable_opens_a_new_episode():
    observed = [(1, {"a"}), (2, {"a"}), (3, {"a"}), (4, set())]
    liqs = [{"account": "a", "block": 2}, {"account": "a", "block": 4}]
    latencies, missed = latency_episodes(observed, liqs)
    # first episode 1 -> 2; after the partial liquidation a is liquidatable again at 2 -> 4
    assert latencies == [1, 2]
    assert missed == set()


def test_account_liquidatable_at_the_end_is_missed_and_recovery_is_not():
    observed = [(1, {"a", "b"}), (2, {"a"}), (3, {"a"})]
    latencies, missed = latency_episodes(observed, [])
    assert latencies == []
    assert missed == {"a"}


def send(block, index, account, liquidated=True, sender="k0"):
    return {"block": block, "index": index, "sender": sender, "account": account, "status": 1, "liquidated": liquidated}


def test_duplicate_sends_count_a_second_send_for_the_same_liquidation():
    sends = [
        send(5, 0, "a"),  # liquidates a
        send(5, 1, "a", liquidated=False, sender="k1"),  # another shard, same block: duplicate
        send(5, 2, "b"),
        send(6, 0, "b", liquidated=False),  # decided before b's liquidation was seen: duplicate
        send(7, 0, "a"),  # a still liquidatable after a partial liquidation: a new episode
        send(7, 1, "a", sender="k2"),  # two sends in one block: duplicate even if it did something
        send(9, 0, "c", liquidated=False),  # reverted for another reason: not a duplicate
    ]
    assert duplicate_sends(sends) == 3
    assert duplicate_sends([]) == 0


def test_route_counts_split_liquidations_by_liquidator():
    from keeper.replay.report import route_counts

    vault = "0x68B1D87F95878fE05B998F19b66F4baba5De1aed"
    events = [
        {"account": "0xa", "liquidator": vault},
        {"account": "0xb", "liquidator": vault.lower()},  # addresses compare without case
        {"account": "0xc", "liquidator": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"},  # the keeper, direct
        {"account": "0xd", "amount": 5},  # an option liquidation names no liquidator: direct
    ]
    assert route_counts(events, vault) == (2, 2)
    assert route_counts(events, None) == (0, 4)  # no vault: all direct
    assert route_counts([], vault) == (0, 0)
