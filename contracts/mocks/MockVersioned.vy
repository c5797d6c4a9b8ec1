# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Mock position-version source for tests
@notice Stands in for the margin engine's `position_version(account)`, which changes on every
        trade, withdrawal and liquidation of the account; `set_position_version` sets it.
@dev Anyone can write: local chains and tests only.
"""

position_version: public(HashMap[address, uint256])
# @dev The attestor this stand-in engine uses (as `MarginEngine.health_attestor`).
health_attestor: public(address)


event PositionVersionSet:
    account: indexed(address)
    position_version: uint256


@external
def set_position_version(account: address, version: uint256):
    """
    @notice Set the position version of `account`.
    @param account The account.
    @param version Its new position version.
    """
    self.position_version[account] = version
    log PositionVersionSet(account=account, position_version=version)


@external
def set_health_attestor(attestor: address):
    """
    @notice Set the attestor this stand-in engine uses.
    """
    self.health_attestor = attestor
