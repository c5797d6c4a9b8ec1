# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Re-entrant ERC20 for adversarial tests
@notice A mintable ERC20 (configurable decimals) that, once armed, calls back into
        configurable targets with configurable calldata from inside `transfer` /
        `transferFrom`, after the balances have moved (an ERC777 `tokensReceived`-style hook).
        Each call is a `raw_call` that does not revert on failure: whether it succeeded and what
        it returned (or its revert data) are recorded in storage for the test to inspect. The
        hook is one-shot: it disarms itself before calling out, so an inner call that moves this
        token again does not recurse.
@dev Not for production. `execute` lets anyone make the token call any contract (to approve a
     vault, or to make the same call outside a transfer as a control). `margin_summary`
     answers zero requirements so the token can stand in as a vault's engine, which lets a test re-enter the
     vault's engine-only functions from the hook.
"""

MAX_CALLS: constant(uint256) = 8
MAX_DATA: constant(uint256) = 1024

name: public(String[32])
symbol: public(String[16])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])

armed: public(bool)
_targets: DynArray[address, MAX_CALLS]
_payloads: DynArray[Bytes[MAX_DATA], MAX_CALLS]
# @dev How many times the hook has fired, and the outcome of call i of the last firing.
hook_count: public(uint256)
call_count: public(uint256)
success: public(HashMap[uint256, bool])
response: public(HashMap[uint256, Bytes[MAX_DATA]])


event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256


event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256


event HookCall:
    index: indexed(uint256)
    target: indexed(address)
    ok: bool


@deploy
def __init__(name_: String[32], symbol_: String[16], decimals_: uint8):
    assert decimals_ <= 18, "mock: decimals above 18"
    self.name = name_
    self.symbol = symbol_
    self.decimals = decimals_


@external
def arm(targets: DynArray[address, MAX_CALLS], payloads: DynArray[Bytes[MAX_DATA], MAX_CALLS]):
    """
    @notice Make the next transfer or transferFrom call `targets[i]` with `payloads[i]`, in order.
    @dev Clears the outcomes of the previous firing.
    """
    assert len(targets) == len(payloads), "mock: length mismatch"
    self._targets = targets
    self._payloads = payloads
    for i: uint256 in range(MAX_CALLS):
        self.success[i] = False
        self.response[i] = b""
    self.call_count = 0
    self.armed = True


@external
def disarm():
    self.armed = False


@internal
def _fire():
    self.armed = False
    self.hook_count += 1
    n: uint256 = len(self._targets)
    for i: uint256 in range(n, bound=MAX_CALLS):
        ok: bool = False
        out: Bytes[MAX_DATA] = b""
        ok, out = raw_call(self._targets[i], self._payloads[i], max_outsize=MAX_DATA, revert_on_failure=False)
        self.success[i] = ok
        self.response[i] = out
        log HookCall(index=i, target=self._targets[i], ok=ok)
    self.call_count = n


@external
def execute(target: address, data: Bytes[MAX_DATA]) -> Bytes[MAX_DATA]:
    """
    @notice Call `target` with `data` as this token (reverts if the call reverts).
    """
    return raw_call(target, data, max_outsize=MAX_DATA)


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert self.balanceOf[sender] >= amount, "mock: balance too low"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)
    if self.armed:
        self._fire()


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


@external
@view
def margin_summary(account: address) -> (int256, uint256, uint256, uint256):
    """
    @notice Stand-in for `MarginEngine.margin_summary` (equity, IM, MM, health) when this token
            is wired as a vault's engine in a test: every account meets its initial margin.
    """
    return 0, 0, 0, max_value(uint256)


@external
@view
def health_attestor() -> address:
    """
    @notice Stand-in for `MarginEngine.health_attestor` when this token is wired as a vault's
            engine: none, so withdrawals are not counted for attestations.
    """
    return empty(address)
