from keeper.replay.report import latency_episodes


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
