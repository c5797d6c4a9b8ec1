# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Share token: an ERC-20 ledger of vault shares
@notice Balances, allowances and supply of a vault's shares, with the ERC-20 interface
        (`transfer`, `transferFrom`, `approve`) and internal `_mint`, `_burn`, `_transfer` for the
        vault that initializes it. No permit, no hooks: the vault decides when shares are made
        or destroyed. Source: EIP-20; the structure follows snekmate `tokens/erc20.vy`.
@dev Reverts "shares: insufficient balance", "shares: insufficient allowance", "shares: zero
     address". An allowance of max(uint256) is never decreased (infinite approval).
@license MIT
"""

name: public(String[32])
symbol: public(String[16])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])


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
    self.name = name_
    self.symbol = symbol_
    self.decimals = decimals_


@external
def transfer(receiver: address, amount: uint256) -> bool:
    """
    @notice Move `amount` shares from the caller to `receiver`.
    """
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(owner: address, receiver: address, amount: uint256) -> bool:
    """
    @notice Move `amount` shares from `owner` to `receiver` within the caller's allowance.
    """
    self._spend_allowance(owner, msg.sender, amount)
    self._transfer(owner, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    """
    @notice Let `spender` move up to `amount` of the caller's shares.
    """
    assert spender != empty(address), "shares: zero address"
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@internal
def _spend_allowance(owner: address, spender: address, amount: uint256):
    allowed: uint256 = self.allowance[owner][spender]
    if allowed == max_value(uint256):
        return
    assert allowed >= amount, "shares: insufficient allowance"
    self.allowance[owner][spender] = allowed - amount


@internal
def _transfer(owner: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "shares: zero address"
    balance: uint256 = self.balanceOf[owner]
    assert balance >= amount, "shares: insufficient balance"
    self.balanceOf[owner] = balance - amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=owner, receiver=receiver, value=amount)


@internal
def _mint(receiver: address, amount: uint256):
    assert receiver != empty(address), "shares: zero address"
    self.totalSupply += amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)


@internal
def _burn(owner: address, amount: uint256):
    balance: uint256 = self.balanceOf[owner]
    assert balance >= amount, "shares: insufficient balance"
    self.balanceOf[owner] = balance - amount
    self.totalSupply -= amount
    log Transfer(sender=owner, receiver=empty(address), value=amount)
