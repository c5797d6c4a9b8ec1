# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Mock Chainlink AggregatorV3 for local chains and tests
@notice `set_answer` publishes a new round stamped with the current block time, as a live feed
        does; `set_round` writes any round verbatim (stale, future, zero or negative answers) so
        that the oracle's rejections can be tested.
@dev Anyone can write: local chains only.
"""

decimals: public(uint8)
description: public(String[32])
version: public(uint256)

_round_id: uint80
_answer: int256
_started_at: uint256
_updated_at: uint256
# @dev Past rounds, for getRoundData.
_answers: HashMap[uint80, int256]
_times: HashMap[uint80, uint256]


event AnswerUpdated:
    current: indexed(int256)
    round_id: indexed(uint256)
    updated_at: uint256


@deploy
def __init__(decimals_: uint8, description_: String[32], answer_: int256):
    self.decimals = decimals_
    self.description = description_
    self.version = 4
    self._store(1, answer_, block.timestamp)


@internal
def _store(round_id_: uint80, answer_: int256, updated_at_: uint256):
    self._round_id = round_id_
    self._answer = answer_
    self._started_at = updated_at_
    self._updated_at = updated_at_
    self._answers[round_id_] = answer_
    self._times[round_id_] = updated_at_


@external
def set_answer(answer_: int256):
    """
    @notice Publish a new round with `answer_`, timestamped now.
    """
    self._store(self._round_id + 1, answer_, block.timestamp)
    log AnswerUpdated(current=answer_, round_id=convert(self._round_id, uint256), updated_at=block.timestamp)


@external
def set_round(round_id_: uint80, answer_: int256, updated_at_: uint256):
    """
    @notice Overwrite the latest round verbatim (tests of stale/zero/future answers).
    """
    self._store(round_id_, answer_, updated_at_)
    log AnswerUpdated(current=answer_, round_id=convert(round_id_, uint256), updated_at=updated_at_)


@external
@view
def latestRoundData() -> (uint80, int256, uint256, uint256, uint80):
    """
    @notice Chainlink AggregatorV3 layout: (roundId, answer, startedAt, updatedAt, answeredInRound).
    """
    return self._round_id, self._answer, self._started_at, self._updated_at, self._round_id


@external
@view
def getRoundData(round_id_: uint80) -> (uint80, int256, uint256, uint256, uint80):
    """
    @notice A past round, as Chainlink's getRoundData; reverts for a round never published.
    """
    assert self._times[round_id_] != 0 or self._answers[round_id_] != 0, "No data present"
    return round_id_, self._answers[round_id_], self._times[round_id_], self._times[round_id_], round_id_
