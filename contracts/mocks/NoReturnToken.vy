# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Token whose transfer functions return no data (USDT style), for tests
@notice Anyone can mint. `transfer`, `transferFrom` and `approve` revert on failure and return
        nothing, as USDT does on Ethereum mainnet.
"""

decimals: public(uint8)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])


@deploy
def __init__(decimals_: uint8):
    self.decimals = decimals_


@external
def transfer(receiver: address, amount: uint256):
    self.balanceOf[msg.sender] -= amount
    self.balanceOf[receiver] += amount


@external
def transferFrom(sender: address, receiver: address, amount: uint256):
    self.allowance[sender][msg.sender] -= amount
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount


@external
def approve(spender: address, amount: uint256):
    self.allowance[msg.sender][spender] = amount


@external
def mint(receiver: address, amount: uint256):
    self.balanceOf[receiver] += amount
