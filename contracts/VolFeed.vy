# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Volatility feed: signed at-the-money implied vol and skew per underlying and expiry
@notice For each (underlying, expiry) the feed holds an at-the-money implied volatility
        `atm_vol` (WAD, annualised: 0.8e18 = 80%) and a linear skew `skew` (signed WAD: the
        change in implied vol per unit of log-moneyness ln(K/F)), so a consumer reads the
        implied vol at strike K and forward F as
            vol(K) = atm_vol + skew * ln(K / F)
        (a first-order smile; a negative skew makes puts dearer, as in equity and crypto
        markets). Values arrive as EIP-712 `VolUpdate` messages signed by at least m of the n
        authorised signers; anyone may submit them. An update is accepted only if its deadline
        has not passed, its timestamp is not in the future and is strictly later than the
        stored one for that (underlying, expiry), the expiry is after the timestamp and within
        two years of it, and its values are within governance bounds (risk admin), which
        themselves sit within hard constant bounds. A value is fresh while its timestamp is at
        most `heartbeat` seconds old and its expiry has not passed.
@dev EIP-712 domain: name "CrossMargin VolFeed", version "1", this chain id, this contract.
     Typed struct: VolUpdate(uint256 underlying,uint256 expiry,uint256 atm_vol,int256 skew,
     uint256 timestamp,uint256 deadline). `underlying` is the oracle price id of the
     underlying, `expiry`, `timestamp` and `deadline` are unix seconds.
     Sources: Derive (Lyra v2) `BaseLyraFeed` (EIP-712 FeedData with deadline and timestamp,
     m-of-n signers, heartbeat; vol heartbeat 20 min) and `LyraVolFeed` (vol per expiry);
     EIP-712 (https://eips.ethereum.org/EIPS/eip-712).
@custom:security Trusts m of n signers. Guarantees: a vol point is within the governed bounds,
     newer than the stored one, not from the future, and stale after the heartbeat.
@license MIT
"""

import lib.signer_set as signer_set
import lib.constants as constants
import lib.eip712 as eip712
import lib.ramp as ramp

initializes: signer_set
initializes: eip712

exports: (
    signer_set.roles.admin,
    signer_set.roles.pending_admin,
    signer_set.roles.risk_admin,
    signer_set.roles.propose_admin,
    signer_set.roles.accept_admin,
    signer_set.roles.set_risk_admin,
    signer_set.is_signer,
    signer_set.threshold,
    signer_set.signer_set_version,
    signer_set.signers,
    signer_set.signer_count,
    signer_set.verify_signatures,
    signer_set.add_signer,
    signer_set.remove_signer,
    signer_set.set_threshold,
    eip712.eip712Domain,
    eip712.domain_separator,
    constants.__version__,
)


struct VolUpdate:
    underlying: uint256
    expiry: uint256
    atm_vol: uint256
    skew: int256
    timestamp: uint256
    deadline: uint256


struct VolPoint:
    atm_vol: uint256
    skew: int256
    timestamp: uint256


VOL_UPDATE_TYPEHASH: constant(bytes32) = keccak256(
    "VolUpdate(uint256 underlying,uint256 expiry,uint256 atm_vol,int256 skew,uint256 timestamp,uint256 deadline)"
)

# @dev Hard bounds on the governance bounds (WAD; seconds for the heartbeat).
HARD_MIN_ATM_VOL: constant(uint256) = 10**16  # 1%
HARD_MAX_ATM_VOL: constant(uint256) = 5 * 10**18  # 500%
HARD_MAX_ABS_SKEW: constant(uint256) = 5 * 10**18
MIN_VOL_HEARTBEAT: constant(uint256) = 60
MAX_VOL_HEARTBEAT: constant(uint256) = 86400

# @dev Defaults: vol in [5%, 300%], |skew| <= 1, heartbeat 20 min (Derive's VOL heartbeat).
DEFAULT_MIN_ATM_VOL: constant(uint256) = 5 * 10**16
DEFAULT_MAX_ATM_VOL: constant(uint256) = 3 * 10**18
DEFAULT_MAX_ABS_SKEW: constant(uint256) = 10**18
DEFAULT_HEARTBEAT: constant(uint256) = 1200

min_atm_vol: public(uint256)
max_atm_vol: public(uint256)
max_abs_skew: public(uint256)
# @dev The target heartbeat; `heartbeat_now` gives the one in force: a shorter heartbeat (which
#      can make a fresh vol stale, and a stale vol marks shorts higher) phases in from
#      `heartbeat_before`, set when it last changed, once any vol was published (`lib/ramp.vy`).
heartbeat: public(uint256)
heartbeat_before: public(uint256)
heartbeat_changed_at: public(uint256)
published: public(bool)
_points: HashMap[uint256, HashMap[uint256, VolPoint]]


event VolUpdated:
    underlying: indexed(uint256)
    expiry: indexed(uint256)
    atm_vol: uint256
    skew: int256
    timestamp: uint256


event VolBoundsSet:
    min_atm_vol: uint256
    max_atm_vol: uint256
    max_abs_skew: uint256


event HeartbeatSet:
    previous: uint256
    heartbeat: uint256


@deploy
def __init__(admin_: address, signers_: DynArray[address, signer_set.MAX_SIGNERS], threshold_: uint256):
    """
    @param admin_ Admin and initial risk admin (see lib/roles.vy).
    @param signers_ The initial authorised signers (distinct, non-zero, at most 16).
    @param threshold_ m, in [1, len(signers_)].
    """
    signer_set.__init__(admin_, signers_, threshold_)
    eip712.__init__("CrossMargin VolFeed", "1")
    self._set_bounds(DEFAULT_MIN_ATM_VOL, DEFAULT_MAX_ATM_VOL, DEFAULT_MAX_ABS_SKEW)
    self._set_heartbeat(DEFAULT_HEARTBEAT)


@internal
def _set_bounds(min_atm_vol_: uint256, max_atm_vol_: uint256, max_abs_skew_: uint256):
    assert min_atm_vol_ >= HARD_MIN_ATM_VOL, "vol: min vol below hard bound"
    assert max_atm_vol_ <= HARD_MAX_ATM_VOL, "vol: max vol above hard bound"
    assert min_atm_vol_ < max_atm_vol_, "vol: empty vol range"
    assert max_abs_skew_ <= HARD_MAX_ABS_SKEW, "vol: max skew above hard bound"
    self.min_atm_vol = min_atm_vol_
    self.max_atm_vol = max_atm_vol_
    self.max_abs_skew = max_abs_skew_
    log VolBoundsSet(min_atm_vol=min_atm_vol_, max_atm_vol=max_atm_vol_, max_abs_skew=max_abs_skew_)


@internal
def _set_heartbeat(heartbeat_: uint256):
    assert heartbeat_ >= MIN_VOL_HEARTBEAT and heartbeat_ <= MAX_VOL_HEARTBEAT, "vol: heartbeat out of bounds"
    previous: uint256 = self.heartbeat
    self.heartbeat = heartbeat_
    log HeartbeatSet(previous=previous, heartbeat=heartbeat_)


@internal
@view
def _vol_update_digest(update: VolUpdate) -> bytes32:
    struct_hash: bytes32 = keccak256(
        abi_encode(
            VOL_UPDATE_TYPEHASH,
            update.underlying,
            update.expiry,
            update.atm_vol,
            update.skew,
            update.timestamp,
            update.deadline,
        )
    )
    return eip712._hash_typed_data(struct_hash)


@external
def submit_vol(update: VolUpdate, signatures: DynArray[Bytes[65], signer_set.MAX_SIGNERS]):
    """
    @notice Store a signed vol update for (update.underlying, update.expiry). Permissionless:
            the signatures carry the authority.
    @dev Reverts: "vol: deadline passed" (deadline < now), "vol: timestamp in the future",
         "vol: not newer" (timestamp <= the stored one: replays and reordering),
         "vol: expiry not after timestamp", "vol: expiry too far" (more than two years after
         the timestamp), "vol: atm vol out of bounds" ([min_atm_vol, max_atm_vol]),
         "vol: skew out of bounds" (|skew| > max_abs_skew), and the signer set's reasons
         (see lib/signer_set.vy `_verify`).
    @param update The signed values; atm_vol WAD annualised, skew signed WAD per unit ln(K/F),
           timestamp the time the values were observed, deadline the last second the message
           may be submitted (all unix seconds).
    @param signatures At least `threshold` 65-byte signatures of the EIP-712 digest
           (`vol_update_digest`), by strictly ascending signer address.
    """
    assert update.deadline >= block.timestamp, "vol: deadline passed"
    assert update.timestamp <= block.timestamp, "vol: timestamp in the future"
    assert update.timestamp > self._points[update.underlying][update.expiry].timestamp, "vol: not newer"
    assert update.expiry > update.timestamp, "vol: expiry not after timestamp"
    assert update.expiry - update.timestamp <= constants.MAX_EXPIRY_HORIZON, "vol: expiry too far"
    assert update.atm_vol >= self.min_atm_vol and update.atm_vol <= self.max_atm_vol, "vol: atm vol out of bounds"
    assert convert(abs(update.skew), uint256) <= self.max_abs_skew, "vol: skew out of bounds"
    signer_set._verify(self._vol_update_digest(update), signatures)
    if not self.published:
        self.published = True
    self._points[update.underlying][update.expiry] = VolPoint(
        atm_vol=update.atm_vol, skew=update.skew, timestamp=update.timestamp
    )
    log VolUpdated(
        underlying=update.underlying,
        expiry=update.expiry,
        atm_vol=update.atm_vol,
        skew=update.skew,
        timestamp=update.timestamp,
    )


@external
def set_vol_bounds(min_atm_vol_: uint256, max_atm_vol_: uint256, max_abs_skew_: uint256):
    """
    @notice Set the range of accepted values (risk admin). Applies to later updates; stored
            values stay until replaced.
    @dev Reverts: "roles: not risk admin", "vol: min vol below hard bound" (< 1%),
         "vol: max vol above hard bound" (> 500%), "vol: empty vol range" (min >= max),
         "vol: max skew above hard bound" (> 5).
    @param min_atm_vol_ Lowest accepted atm vol, WAD.
    @param max_atm_vol_ Highest accepted atm vol, WAD.
    @param max_abs_skew_ Largest accepted |skew|, WAD.
    """
    signer_set.roles._check_risk_admin()
    self._set_bounds(min_atm_vol_, max_atm_vol_, max_abs_skew_)


@external
def set_heartbeat(heartbeat_: uint256):
    """
    @notice Set how long a value stays fresh (risk admin). A longer heartbeat applies at once;
            a shorter one phases in linearly from the heartbeat in force over
            `constants.REQUIREMENT_RAMP` (7 days; `heartbeat_now`) once a vol has been
            published, so no vol fresh when the change lands turns stale in that block.
    @dev Reverts: "roles: not risk admin", "vol: heartbeat out of bounds" ([60 s, 1 day]).
    @param heartbeat_ Seconds.
    """
    signer_set.roles._check_risk_admin()
    if self.published:
        self.heartbeat_before = self._heartbeat_now()
        self.heartbeat_changed_at = block.timestamp
    self._set_heartbeat(heartbeat_)


@internal
@view
def _heartbeat_now() -> uint256:
    since: uint256 = self.heartbeat_changed_at
    if block.timestamp >= since + constants.REQUIREMENT_RAMP:
        return self.heartbeat
    return ramp._lowered(self.heartbeat_before, self.heartbeat, since)


@external
@view
def heartbeat_now() -> uint256:
    """
    @notice The heartbeat in force now, seconds; see `set_heartbeat`.
    """
    return self._heartbeat_now()


@external
@view
def vol_params(underlying: uint256, expiry: uint256) -> (uint256, int256, uint256):
    """
    @notice The stored values for (underlying, expiry), fresh or not; (0, 0, 0) if none.
    @dev Never reverts; check `is_fresh` before relying on them.
    @param underlying The underlying's oracle price id.
    @param expiry Unix seconds.
    @return (atm_vol WAD annualised, skew signed WAD per unit ln(K/F), timestamp unix seconds).
    """
    point: VolPoint = self._points[underlying][expiry]
    return point.atm_vol, point.skew, point.timestamp


@external
@view
def is_fresh(underlying: uint256, expiry: uint256) -> bool:
    """
    @notice Whether (underlying, expiry) has a value at most `heartbeat_now` seconds old and
            the expiry has not passed.
    @param underlying The underlying's oracle price id.
    @param expiry Unix seconds.
    @return True if fresh.
    """
    return self._fresh(self._points[underlying][expiry].timestamp, expiry)


@external
@view
def fresh_vol(underlying: uint256, expiry: uint256) -> (bool, uint256, int256):
    """
    @notice What a valuation reads, in one call: `is_fresh` and the values of `vol_params`.
    @param underlying The underlying's oracle price id.
    @param expiry Unix seconds.
    @return (fresh, atm_vol WAD annualised, skew signed WAD per unit ln(K/F)).
    """
    point: VolPoint = self._points[underlying][expiry]
    return self._fresh(point.timestamp, expiry), point.atm_vol, point.skew


@internal
@view
def _fresh(stamp: uint256, expiry: uint256) -> bool:
    return stamp != 0 and block.timestamp - stamp <= self._heartbeat_now() and block.timestamp < expiry


@external
@view
def vol_update_digest(update: VolUpdate) -> bytes32:
    """
    @notice The EIP-712 digest the signers sign for `update`.
    @param update The update (see `submit_vol`).
    @return keccak256(0x1901 || domain separator || hashStruct(update)).
    """
    return self._vol_update_digest(update)
