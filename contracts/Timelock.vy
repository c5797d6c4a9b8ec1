# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Timelock: every governance call waits a public delay before it runs
@notice `governance` queues a call (target, calldata, eta); nobody can run it before `eta`,
        which is at least `delay` after queuing, and it can no longer run once
        `GRACE_PERIOD` has passed after `eta`. Governance may cancel a queued call at any time.
        Meant to hold the `admin` and `risk_admin` roles of the oracle router, vault and
        margin engine, so that every risk parameter change is announced by a `Queued` event
        at least `delay` before it takes effect, and stays within each setter's on-chain
        bounds (the target enforces them when the call runs).
        Changing the delay or governance is itself a delayed call to this contract.
@dev References: Compound's Timelock (compound-finance/compound-protocol,
     contracts/Timelock.sol: queue / execute / cancel keyed by the hash of the call and its
     eta, GRACE_PERIOD = 14 days, MAXIMUM_DELAY = 30 days, `setDelay` and the pending admin
     only through the timelock itself) and OpenZeppelin's TimelockController
     (contracts/governance/TimelockController.sol: `updateDelay` callable only by the
     timelock, an operation is marked done before its call and never runs twice).
     Operation id = keccak256(abi_encode(target, data, eta)). Calls carry no ether: the
     protocol's setters are not payable.
     Delay bounds: MIN_DELAY = 1 hour is a hard floor (hundreds of blocks on any chain, enough
     for a monitor to see `Queued` and for governance to cancel a mistake), low so that
     testnets can run the whole flow in an hour; production should set days (Compound's
     minimum is 2 days, Aave's short executor 1 day). MAX_DELAY = 30 days (Compound): longer
     and an urgent risk fix (lower a cap, raise a margin rate) could not land in time.
@custom:security Governance holds no power over the protocol except through queued calls,
                 with one exception: `accept_admin_of`, which only makes this timelock the
                 admin of a contract that already proposed it; it gives the timelock power
                 and takes none from anyone else, so it needs no delay.
@license MIT
"""

interface IRoles:
    def accept_admin(): nonpayable


# @dev Bounds on `delay`, seconds (see the module docstring for the choice).
MIN_DELAY: public(constant(uint256)) = 3600
MAX_DELAY: public(constant(uint256)) = 30 * 86400
# @dev A queued call not executed within this after its eta is stale (Compound: 14 days).
GRACE_PERIOD: public(constant(uint256)) = 14 * 86400
# @dev Largest calldata of a queued call; a protocol setter needs at most 356 bytes.
MAX_CALLDATA: constant(uint256) = 2048

governance: public(address)
pending_governance: public(address)
# @dev Seconds between queuing and the earliest execution of a call.
delay: public(uint256)
# @dev Operation id -> queued and neither executed nor cancelled.
queued: public(HashMap[bytes32, bool])
# @dev Operation id -> executed (an id runs at most once).
executed: public(HashMap[bytes32, bool])


event Queued:
    id: indexed(bytes32)
    target: indexed(address)
    data: Bytes[MAX_CALLDATA]
    eta: uint256


event Executed:
    id: indexed(bytes32)
    target: indexed(address)
    data: Bytes[MAX_CALLDATA]
    eta: uint256


event Cancelled:
    id: indexed(bytes32)
    target: indexed(address)
    data: Bytes[MAX_CALLDATA]
    eta: uint256


event DelaySet:
    previous: uint256
    delay: uint256


event GovernanceProposed:
    governance: indexed(address)
    proposed: indexed(address)


event GovernanceAccepted:
    previous: indexed(address)
    governance: indexed(address)


@deploy
def __init__(governance_: address, delay_: uint256):
    """
    @param governance_ The account (a multisig or governor) that queues, executes and cancels.
    @param delay_ Seconds, in [MIN_DELAY, MAX_DELAY].
    """
    assert governance_ != empty(address), "timelock: zero governance"
    assert delay_ >= MIN_DELAY and delay_ <= MAX_DELAY, "timelock: delay out of bounds"
    self.governance = governance_
    self.delay = delay_
    log GovernanceAccepted(previous=empty(address), governance=governance_)
    log DelaySet(previous=0, delay=delay_)


@internal
@view
def _check_governance():
    assert msg.sender == self.governance, "timelock: not governance"


@internal
@view
def _check_self():
    assert msg.sender == self, "timelock: only through a delayed call"


@external
@pure
def operation_id(target: address, data: Bytes[MAX_CALLDATA], eta: uint256) -> bytes32:
    """
    @notice The id of a call: keccak256(abi_encode(target, data, eta)).
    @param target The contract called.
    @param data The calldata (selector and ABI-encoded arguments).
    @param eta Earliest execution time, unix seconds.
    @return The 32-byte operation id.
    """
    return keccak256(abi_encode(target, data, eta))


@external
def queue(target: address, data: Bytes[MAX_CALLDATA], eta: uint256) -> bytes32:
    """
    @notice Announce a call that may run from `eta` until `eta + GRACE_PERIOD` (governance).
    @dev Reverts "timelock: eta before delay" if eta < now + delay, "timelock: already queued"
         for a queued id, "timelock: already executed" for an executed one.
    @param target The contract to call.
    @param data Its calldata, at most 2048 bytes.
    @param eta Earliest execution time, unix seconds, >= now + delay.
    @return The operation id.
    """
    self._check_governance()
    assert eta >= block.timestamp + self.delay, "timelock: eta before delay"
    id: bytes32 = keccak256(abi_encode(target, data, eta))
    assert not self.queued[id], "timelock: already queued"
    assert not self.executed[id], "timelock: already executed"
    self.queued[id] = True
    log Queued(id=id, target=target, data=data, eta=eta)
    return id


@external
def cancel(target: address, data: Bytes[MAX_CALLDATA], eta: uint256):
    """
    @notice Drop a queued call (governance); it can never run unless queued again.
    @dev Reverts "timelock: not queued" if the id is not queued (never, executed or cancelled).
    """
    self._check_governance()
    id: bytes32 = keccak256(abi_encode(target, data, eta))
    assert self.queued[id], "timelock: not queued"
    self.queued[id] = False
    log Cancelled(id=id, target=target, data=data, eta=eta)


@external
@nonreentrant
def execute(target: address, data: Bytes[MAX_CALLDATA], eta: uint256):
    """
    @notice Run a queued call whose eta has come and whose grace period has not passed
            (governance). The target's revert reason is passed through unchanged, so its
            own bounds ("engine: im_rate out of bounds", ...) still apply.
    @dev Checks, effects, interaction: the id is marked executed before the call, so it cannot
         run twice even if the target calls back. Reverts "timelock: not queued",
         "timelock: not ready" (now < eta), "timelock: stale" (now > eta + GRACE_PERIOD),
         "timelock: target not a contract".
    """
    self._check_governance()
    id: bytes32 = keccak256(abi_encode(target, data, eta))
    assert self.queued[id], "timelock: not queued"
    assert block.timestamp >= eta, "timelock: not ready"
    assert block.timestamp <= eta + GRACE_PERIOD, "timelock: stale"
    # a call to an account without code would "succeed" and change nothing
    assert target.is_contract, "timelock: target not a contract"
    self.queued[id] = False
    self.executed[id] = True
    log Executed(id=id, target=target, data=data, eta=eta)
    # revert_on_failure bubbles the target's revert data unchanged
    raw_call(target, data, revert_on_failure=True)


@external
def set_delay(new_delay: uint256):
    """
    @notice Change the delay; callable only by this timelock, i.e. through a delayed call.
            Calls already queued keep their eta.
    @param new_delay Seconds, in [MIN_DELAY, MAX_DELAY].
    """
    self._check_self()
    assert new_delay >= MIN_DELAY and new_delay <= MAX_DELAY, "timelock: delay out of bounds"
    previous: uint256 = self.delay
    self.delay = new_delay
    log DelaySet(previous=previous, delay=new_delay)


@external
def propose_governance(new_governance: address):
    """
    @notice Start a governance transfer; callable only by this timelock (a delayed call).
            `new_governance` must then call `accept_governance`.
    @param new_governance The proposed governance (zero cancels a pending proposal).
    """
    self._check_self()
    self.pending_governance = new_governance
    log GovernanceProposed(governance=self.governance, proposed=new_governance)


@external
def accept_governance():
    """
    @notice Complete a governance transfer; callable only by the pending governance.
    """
    assert msg.sender == self.pending_governance, "timelock: not pending governance"
    previous: address = self.governance
    self.governance = msg.sender
    self.pending_governance = empty(address)
    log GovernanceAccepted(previous=previous, governance=msg.sender)


@external
def accept_admin_of(target: address):
    """
    @notice Accept the `admin` role of a protocol contract that proposed this timelock
            (governance, no delay).
    @dev No delay: accepting only gives this timelock a role the current admin chose to hand
         over; every use of that role is then a delayed call. The target logs AdminAccepted.
    @param target An OracleRouter, CollateralVault or MarginEngine (anything with the roles
           module's `accept_admin`).
    """
    self._check_governance()
    extcall IRoles(target).accept_admin()
