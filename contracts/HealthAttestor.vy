# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Health attestor: signed portfolio-margin results that can lower an account's margin
@notice Authorised risk signers (m of n) sign an EIP-712 `HealthAttestation` stating an
        account's portfolio initial and maintenance margin (IM, MM), computed off-chain over a
        scenario grid, for one version of its positions and one set of index prices, valid
        for a short time. Anyone may submit it; the latest one per account is stored.
        `effective_margin` is what the margin engine asks on every margin check:
          - while the stored attestation is valid now (not expired, the account's position
            version, the signer set and the scenario parameters hash unchanged, every current
            index price within `price_band` of the attested one), it returns
                IM = min(standard_IM, max(attested_IM, ceil(margin_floor * standard_IM)))
                MM = min(standard_MM, max(attested_MM, ceil(margin_floor * standard_MM)))
            so an attestation can only lower the requirement, and never below `margin_floor`
            of the standard margin: a compromised quorum can do bounded harm;
          - otherwise the standard margin, unchanged.
        Price band: an attested price p_a and the current price p agree when
            |p - p_a| * 1e18 <= price_band * p_a
        (a zero price on either side never agrees).
        Governed scenario parameters: the grid (spot range, vol shocks, contingencies, IM
        factor...) is committed as `scenario_params_hash`, set by the risk admin (the timelock
        after the handover). An attestation names the hash of the parameters it was computed
        with and is refused unless it equals the governed one, so a compromised or
        misconfigured signer cannot attest with a looser grid than governance chose; changing
        the hash voids every stored attestation.
@dev EIP-712 domain: name "CrossMargin HealthAttestor", version "1", this chain id, this
     contract. Typed struct:
         HealthAttestation(address account,uint256 position_version,uint256[] prices,
                           uint256 initial_margin,uint256 maintenance_margin,uint256 issued_at,
                           uint256 valid_until,bytes32 scenario_params)
     `scenario_params` is keccak256 of the canonical encoding of the portfolio-margin
     parameters (keeper.risk.scenarios `scenario_params_hash`).
     `prices` are the WAD index prices of every oracle price id, in id order, as the oracle's
     `index_prices()` returns them (a new price id therefore voids older attestations); it is
     hashed as keccak256 of the concatenated 32-byte words (EIP-712 arrays). IM and MM are WAD
     USD; times are unix seconds. The engine's `position_version(account)` changes on every
     trade, withdrawal and liquidation of the account.
     Sources: Derive (Lyra v2) trusted risk assessor (PMRM `_assessRisk`) and `BaseLyraFeed`
     (EIP-712 signed data, m-of-n signers, staleness); CME SPAN / Deribit portfolio margin for
     what the attested IM and MM mean; EIP-712 (https://eips.ethereum.org/EIPS/eip-712).
@custom:security Trusts m of n risk signers, the engine's `position_version` and the oracle.
     Guarantees: an attestation can only lower a requirement, never below the governed floor of
     the standard margin, and lapses on any portfolio change, price move out of band, signer-set
     change or scenario-parameter change.
@license MIT
"""

import lib.signer_set as signer_set
import lib.wad as wad
import lib.constants as constants
import lib.types as types
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


interface IEngine:
    def position_version(account: address) -> uint256: view
    def health_attestor() -> address: view


interface IOracle:
    def index_prices() -> DynArray[uint256, constants.MAX_PRICE_IDS]: view




struct HealthAttestation:
    account: address
    position_version: uint256
    prices: DynArray[uint256, constants.MAX_PRICE_IDS]
    initial_margin: uint256
    maintenance_margin: uint256
    issued_at: uint256
    valid_until: uint256
    scenario_params: bytes32


HEALTH_ATTESTATION_TYPEHASH: constant(bytes32) = keccak256(
    "HealthAttestation(address account,uint256 position_version,uint256[] prices,uint256 initial_margin,uint256 maintenance_margin,uint256 issued_at,uint256 valid_until,bytes32 scenario_params)"
)

# @dev Hard bounds on governance (WAD fractions; seconds).
MIN_MARGIN_FLOOR: constant(uint256) = 2 * 10**17  # an attestation lowers margin by at most 80%
MAX_MARGIN_FLOOR: constant(uint256) = 10**18
MAX_PRICE_BAND: constant(uint256) = 10**17  # 10%
MIN_VALIDITY: constant(uint256) = 60
MAX_VALIDITY: constant(uint256) = 86400
# @dev Attested prices above 1e18 USD are refused (keeps the band product far from overflow).
MAX_ATTESTED_PRICE: constant(uint256) = 10**36

DEFAULT_MARGIN_FLOOR: constant(uint256) = 5 * 10**17
DEFAULT_PRICE_BAND: constant(uint256) = 10**16
DEFAULT_MAX_VALIDITY: constant(uint256) = 900

# @dev Outcomes of the price comparison.
PRICES_OK: constant(uint256) = 0
PRICES_COUNT_MISMATCH: constant(uint256) = 1
PRICES_ZERO: constant(uint256) = 2
PRICES_OUT_OF_BAND: constant(uint256) = 3

engine: public(address)
oracle: public(address)
# @dev The target floor; `margin_floor_now` gives the one in force (a raise phases in from
#      `margin_floor_before`, set when it last changed, `lib/ramp.vy`).
margin_floor: public(uint256)
margin_floor_before: public(uint256)
margin_floor_changed_at: public(uint256)
price_band: public(uint256)
max_validity: public(uint256)
scenario_params_hash: public(bytes32)
_attestations: HashMap[address, types.StoredAttestation]
# @dev The scenario parameters hash each stored attestation was computed with; kept apart from
#      types.StoredAttestation so that `attestation()`'s shape (read by the lens) is unchanged.
_attested_params: HashMap[address, bytes32]


event AttestationSubmitted:
    account: indexed(address)
    position_version: uint256
    prices: DynArray[uint256, constants.MAX_PRICE_IDS]
    initial_margin: uint256
    maintenance_margin: uint256
    issued_at: uint256
    valid_until: uint256


event MarginFloorSet:
    previous: uint256
    margin_floor: uint256


event PriceBandSet:
    previous: uint256
    price_band: uint256


event MaxValiditySet:
    previous: uint256
    max_validity: uint256


event EngineSet:
    previous: indexed(address)
    engine: indexed(address)


event OracleSet:
    previous: indexed(address)
    oracle: indexed(address)


event ScenarioParamsHashSet:
    previous: bytes32
    current: bytes32


@deploy
def __init__(
    admin_: address,
    engine_: address,
    oracle_: address,
    signers_: DynArray[address, signer_set.MAX_SIGNERS],
    threshold_: uint256,
    scenario_params_hash_: bytes32,
):
    """
    @param admin_ Admin and initial risk admin (see lib/roles.vy).
    @param engine_ The contract answering `position_version(account)` (the margin engine).
    @param oracle_ The contract answering `index_prices()` (the oracle router).
    @param signers_ The initial risk signers (distinct, non-zero, at most 16).
    @param threshold_ m, in [1, len(signers_)].
    @param scenario_params_hash_ The governed scenario parameters hash (non-zero; see
           `set_scenario_params_hash`).
    """
    signer_set.__init__(admin_, signers_, threshold_)
    eip712.__init__("CrossMargin HealthAttestor", "1")
    self._set_engine(engine_)
    self._set_oracle(oracle_)
    self._set_margin_floor(DEFAULT_MARGIN_FLOOR)
    self._set_price_band(DEFAULT_PRICE_BAND)
    self._set_max_validity(DEFAULT_MAX_VALIDITY)
    self._set_scenario_params_hash(scenario_params_hash_)


# ---------------------------------------------------------------- governance


@internal
def _set_engine(engine_: address):
    assert engine_ != empty(address), "attestor: zero engine"
    previous: address = self.engine
    self.engine = engine_
    log EngineSet(previous=previous, engine=engine_)


@internal
def _set_oracle(oracle_: address):
    assert oracle_ != empty(address), "attestor: zero oracle"
    previous: address = self.oracle
    self.oracle = oracle_
    log OracleSet(previous=previous, oracle=oracle_)


@internal
def _set_margin_floor(margin_floor_: uint256):
    assert margin_floor_ >= MIN_MARGIN_FLOOR and margin_floor_ <= MAX_MARGIN_FLOOR, "attestor: floor out of bounds"
    previous: uint256 = self.margin_floor
    self.margin_floor = margin_floor_
    log MarginFloorSet(previous=previous, margin_floor=margin_floor_)


@internal
def _set_price_band(band: uint256):
    assert band > 0 and band <= MAX_PRICE_BAND, "attestor: band out of bounds"
    previous: uint256 = self.price_band
    self.price_band = band
    log PriceBandSet(previous=previous, price_band=band)


@internal
def _set_max_validity(validity: uint256):
    assert validity >= MIN_VALIDITY and validity <= MAX_VALIDITY, "attestor: validity out of bounds"
    previous: uint256 = self.max_validity
    self.max_validity = validity
    log MaxValiditySet(previous=previous, max_validity=validity)


@internal
def _set_scenario_params_hash(h: bytes32):
    assert h != empty(bytes32), "attestor: zero scenario params hash"
    previous: bytes32 = self.scenario_params_hash
    self.scenario_params_hash = h
    log ScenarioParamsHashSet(previous=previous, current=h)


@external
def set_engine(engine_: address):
    """
    @notice Point at the margin engine whose `position_version` attestations bind (admin).
    @dev Reverts: "roles: not admin", "attestor: zero engine".
    @param engine_ The new engine, not zero.
    """
    signer_set.roles._check_admin()
    self._set_engine(engine_)


@external
def set_oracle(oracle_: address):
    """
    @notice Point at the oracle whose `index_prices` attestations are compared with (admin).
    @dev Reverts: "roles: not admin", "attestor: zero oracle".
    @param oracle_ The new oracle, not zero.
    """
    signer_set.roles._check_admin()
    self._set_oracle(oracle_)


@external
def set_margin_floor(margin_floor_: uint256):
    """
    @notice Set the lowest fraction of the standard margin an attestation can bring an
            account to (risk admin), for stored attestations too. A lower floor applies at
            once; a higher one phases in linearly from the floor in force over
            `constants.REQUIREMENT_RAMP` (7 days; `margin_floor_now`), so no attested account
            healthy when the change lands becomes liquidatable in that block. Before the engine
            uses this attestor (deployment) any floor applies at once.
    @dev Reverts: "roles: not risk admin", "attestor: floor out of bounds" ([0.2, 1.0] WAD).
    @param margin_floor_ WAD fraction; 1e18 disables the benefit of attestations.
    """
    signer_set.roles._check_risk_admin()
    # before the engine uses this attestor no attestation applies: nothing to phase in
    if staticcall IEngine(self.engine).health_attestor() == self:
        self.margin_floor_before = self._margin_floor_now()
        self.margin_floor_changed_at = block.timestamp
    self._set_margin_floor(margin_floor_)


@internal
@view
def _margin_floor_now() -> uint256:
    return ramp._raised(self.margin_floor_before, self.margin_floor, self.margin_floor_changed_at)


@external
@view
def margin_floor_now() -> uint256:
    """
    @notice The margin floor in force now (WAD fraction of the standard margin); see
            `set_margin_floor`.
    """
    return self._margin_floor_now()


@external
def set_price_band(band: uint256):
    """
    @notice Set how far (relative to the attested price) a current index price may be from
            the attested one for the attestation to hold (risk admin).
    @dev Reverts: "roles: not risk admin", "attestor: band out of bounds" ((0, 0.1] WAD).
    @param band WAD fraction.
    """
    signer_set.roles._check_risk_admin()
    self._set_price_band(band)


@external
def set_max_validity(validity: uint256):
    """
    @notice Set the longest validity (valid_until - issued_at) an attestation may claim
            (risk admin). Checked on submission.
    @dev Reverts: "roles: not risk admin", "attestor: validity out of bounds" ([60 s, 1 day]).
    @param validity Seconds.
    """
    signer_set.roles._check_risk_admin()
    self._set_max_validity(validity)


@external
def set_scenario_params_hash(h: bytes32):
    """
    @notice Commit the portfolio-margin scenario parameters attestations must be computed
            with (risk admin: the timelock after the handover). Only attestations naming this
            hash are accepted, so a compromised or misconfigured signer cannot attest with a
            looser grid than governance chose. Voids every stored attestation computed with
            another hash (as a signer-set change does).
    @dev Reverts: "roles: not risk admin", "attestor: zero scenario params hash".
    @param h keccak256 of the canonical encoding of the parameters
           (keeper.risk.scenarios `scenario_params_hash`), not zero.
    """
    signer_set.roles._check_risk_admin()
    self._set_scenario_params_hash(h)


# ---------------------------------------------------------------- EIP-712


@internal
@view
def _attestation_digest(att: HealthAttestation) -> bytes32:
    # EIP-712 encodes uint256[] as keccak256 of its 32-byte words back to back: drop the
    # offset and length words that abi_encode puts in front
    n: uint256 = len(att.prices)
    prices_hash: bytes32 = keccak256(slice(abi_encode(att.prices), 64, 32 * n))
    struct_hash: bytes32 = keccak256(
        abi_encode(
            HEALTH_ATTESTATION_TYPEHASH,
            att.account,
            att.position_version,
            prices_hash,
            att.initial_margin,
            att.maintenance_margin,
            att.issued_at,
            att.valid_until,
            att.scenario_params,
        )
    )
    return eip712._hash_typed_data(struct_hash)


# ---------------------------------------------------------------- checks


@internal
@view
def _compare_prices(attested: DynArray[uint256, constants.MAX_PRICE_IDS], current: DynArray[uint256, constants.MAX_PRICE_IDS]) -> uint256:
    """
    @dev PRICES_OK if both list the same price ids and each current price p is within the band
         of its attested price p_a: |p - p_a| * 1e18 <= price_band * p_a; otherwise the reason.
    """
    n: uint256 = len(attested)
    if n == 0 or n != len(current):
        return PRICES_COUNT_MISMATCH
    band: uint256 = self.price_band
    for i: uint256 in range(n, bound=constants.MAX_PRICE_IDS):
        attested_price: uint256 = attested[i]
        price: uint256 = current[i]
        if attested_price == 0 or price == 0:
            return PRICES_ZERO
        if attested_price > MAX_ATTESTED_PRICE or price > MAX_ATTESTED_PRICE:
            return PRICES_OUT_OF_BAND
        if (max(price, attested_price) - min(price, attested_price)) * constants.WAD > band * attested_price:
            return PRICES_OUT_OF_BAND
    return PRICES_OK


@internal
@view
def _holds(account: address) -> bool:
    """
    @dev Whether the stored attestation of `account` is valid now. Cheapest checks first; no
         external call for an account without a live attestation.
    """
    valid_until: uint256 = self._attestations[account].valid_until
    if valid_until <= block.timestamp:
        return False  # none stored (0) or expired
    if self._attestations[account].signer_set_version != signer_set.signer_set_version:
        return False
    if self._attested_params[account] != self.scenario_params_hash:
        return False  # governance changed the scenario grid since
    if staticcall IEngine(self.engine).position_version(account) != self._attestations[account].position_version:
        return False
    current: DynArray[uint256, constants.MAX_PRICE_IDS] = staticcall IOracle(self.oracle).index_prices()
    return self._compare_prices(self._attestations[account].prices, current) == PRICES_OK


@internal
@pure
def _fraction_up(amount: uint256, fraction: uint256) -> uint256:
    """
    @dev ceil(amount * fraction / 1e18) for fraction <= 1e18, split as
         (amount // 1e18) * fraction + ceil((amount % 1e18) * fraction / 1e18) so that no
         amount can overflow: the margin check must not revert.
    """
    return amount // constants.WAD * fraction + wad._mul_div_up(amount % constants.WAD, fraction, constants.WAD)


# ---------------------------------------------------------------- submit and read


@external
def submit_attestation(att: HealthAttestation, signatures: DynArray[Bytes[65], signer_set.MAX_SIGNERS]):
    """
    @notice Store a signed health attestation as the account's latest. Permissionless: the
            signatures carry the authority.
    @dev Reverts: "attestor: issued in the future" (issued_at > now), "attestor: not newer"
         (issued_at <= the stored one: replays), "attestor: expired" (valid_until <= now),
         "attestor: validity too long" (valid_until - issued_at > max_validity),
         "attestor: IM below MM",
         "attestor: scenario parameters not governed" (scenario_params differs from
         `scenario_params_hash`), the signer set's reasons (see lib/signer_set.vy `_verify`),
         "attestor: not wired" (the engine does not use this attestor: versions do not move),
         "attestor: position changed" (position_version differs from the engine's),
         "attestor: price count mismatch" (not one price per oracle price id),
         "attestor: zero price" (an attested or current price is 0),
         "attestor: prices out of band".
    @param att The attestation; prices WAD by price id, margins WAD USD, times unix seconds,
           scenario_params the hash of the grid parameters it was computed with.
    @param signatures At least `threshold` 65-byte signatures of its EIP-712 digest
           (`attestation_digest`), by strictly ascending signer address.
    """
    assert att.issued_at <= block.timestamp, "attestor: issued in the future"
    assert att.issued_at > self._attestations[att.account].issued_at, "attestor: not newer"
    assert att.valid_until > block.timestamp, "attestor: expired"
    assert att.valid_until - att.issued_at <= self.max_validity, "attestor: validity too long"
    assert att.initial_margin >= att.maintenance_margin, "attestor: IM below MM"
    assert att.scenario_params == self.scenario_params_hash, "attestor: scenario parameters not governed"
    signer_set._verify(self._attestation_digest(att), signatures)
    # position versions move only while the engine uses an attestor: one stored before that would
    # bind to a version that does not change as the account trades
    assert staticcall IEngine(self.engine).health_attestor() == self, "attestor: not wired"
    version: uint256 = staticcall IEngine(self.engine).position_version(att.account)
    assert att.position_version == version, "attestor: position changed"
    current: DynArray[uint256, constants.MAX_PRICE_IDS] = staticcall IOracle(self.oracle).index_prices()
    outcome: uint256 = self._compare_prices(att.prices, current)
    assert outcome != PRICES_COUNT_MISMATCH, "attestor: price count mismatch"
    assert outcome != PRICES_ZERO, "attestor: zero price"
    assert outcome == PRICES_OK, "attestor: prices out of band"
    self._attestations[att.account] = types.StoredAttestation(
        position_version=att.position_version,
        prices=att.prices,
        initial_margin=att.initial_margin,
        maintenance_margin=att.maintenance_margin,
        issued_at=att.issued_at,
        valid_until=att.valid_until,
        signer_set_version=signer_set.signer_set_version,
    )
    self._attested_params[att.account] = att.scenario_params
    log AttestationSubmitted(
        account=att.account,
        position_version=att.position_version,
        prices=att.prices,
        initial_margin=att.initial_margin,
        maintenance_margin=att.maintenance_margin,
        issued_at=att.issued_at,
        valid_until=att.valid_until,
    )


@external
@view
def effective_margin(account: address, standard_im: uint256, standard_mm: uint256) -> (uint256, uint256, bool):
    """
    @notice The margin requirement of `account` given its standard (IM, MM).
    @dev With a stored attestation valid now: (min(standard_im, max(att_im, ceil(floor *
         standard_im))), the same for MM, True), floor = `margin_floor_now`; otherwise (standard_im, standard_mm, False).
         Rounding up favours the protocol. Never reverts for a missing, expired or invalid
         attestation (it calls the engine's `position_version` and the oracle's
         `index_prices`, which do not revert, only when an attestation is live).
    @param account The account.
    @param standard_im Its standard initial margin, WAD USD.
    @param standard_mm Its standard maintenance margin, WAD USD.
    @return (initial margin, maintenance margin, WAD USD; whether an attestation applied).
    """
    if not self._holds(account):
        return standard_im, standard_mm, False
    fraction: uint256 = self._margin_floor_now()
    im: uint256 = min(standard_im, max(self._attestations[account].initial_margin, self._fraction_up(standard_im, fraction)))
    mm: uint256 = min(standard_mm, max(self._attestations[account].maintenance_margin, self._fraction_up(standard_mm, fraction)))
    return im, mm, True


@external
@view
def attestation_holds(account: address) -> bool:
    """
    @notice Whether the stored attestation of `account` is valid now (not expired, position
            version, signer set and scenario parameters hash unchanged, prices within the band).
    @dev Never reverts for a missing or invalid attestation (see `effective_margin`).
    @param account The account.
    @return True if `effective_margin` would apply it now.
    """
    return self._holds(account)


@external
@view
def attestation(account: address) -> types.StoredAttestation:
    """
    @notice The latest stored attestation of `account` (all zero if none), valid or not.
    @param account The account.
    @return (position_version, prices WAD, initial_margin WAD USD, maintenance_margin WAD USD,
            issued_at, valid_until, signer_set_version).
    """
    return self._attestations[account]


@external
@view
def attestation_scenario_params(account: address) -> bytes32:
    """
    @notice The scenario parameters hash the stored attestation of `account` was computed with
            (zero if none); it holds only while this equals `scenario_params_hash`.
    @param account The account.
    @return The 32-byte hash.
    """
    return self._attested_params[account]


@external
@view
def attestation_digest(att: HealthAttestation) -> bytes32:
    """
    @notice The EIP-712 digest the risk signers sign for `att`.
    @param att The attestation (see `submit_attestation`).
    @return keccak256(0x1901 || domain separator || hashStruct(att)).
    """
    return self._attestation_digest(att)
