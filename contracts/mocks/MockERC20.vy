# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Mock ERC20 for local chains and tests
@notice Anyone can mint. Configurable decimals (0 to 18) and an optional fee on transfer, so
        the vault's handling of such tokens can be tested (`NoReturnToken.vy` covers tokens
        that return no data).
@dev Not for production: unrestricted `mint`.
"""

name: public(String[32])
symbol: public(String[16])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
fee_bps: public(uint256)


event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256


event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256


@deploy
def __init__(name_: String[32], symbol_: String[16], decimals_: uint8):
    assert decimals_ <= 18, "mock: decimals above 18"
    self.name = name_
    self.symbol = symbol_
    self.decimals = decimals_


@external
def set_fee(fee_bps_: uint256):
    """
    @notice Make this a fee-on-transfer token.
    @param fee_bps_ Fee burnt on every transfer, in basis points (at most 10000).
    """
    assert fee_bps_ <= 10000, "mock: fee above 100%"
    self.fee_bps = fee_bps_


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert self.balanceOf[sender] >= amount, "mock: balance too low"
    fee: uint256 = amount * self.fee_bps // 10000
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount - fee
    self.totalSupply -= fee
    log Transfer(sender=sender, receiver=receiver, value=amount - fee)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[sender][msg.sender]
    assert allowed >= amount, "mock: allowance too low"
    if allowed != max_value(uint256):
        self.allowance[sender][msg.sender] = allowed - amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def mint(receiver: address, amount: uint256):
    """
    @notice Create `amount` tokens for `receiver` (mock only).
    """
    self.balanceOf[receiver] += amount
    self.totalSupply += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)
