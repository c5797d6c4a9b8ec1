"""Health attestations: compute each opted-in account's portfolio margin off-chain and keep a
signed attestation of it fresh on the HealthAttestor, so the engine can apply the lower margin.

Per block (called from the liquidator's loop, sharing its transaction manager):

0. governed parameters: the attestor's `scenario_params_hash` must equal the hash of the keeper's
   scenario parameters (keeper.risk.scenarios.scenario_params_hash); otherwise nothing is attested
   at this block (the attestor would refuse it), with a warning and the skipped metric. At start
   `check_governed` refuses a mismatching file outright. A stored attestation computed with
   another hash (void on chain) is refreshed;
1. candidates: the configured accounts (`accounts: all` = every tracked account holding an option);
2. for each, `refresh_reason`: none stored, expired or less than `refresh_before_seconds` of
   validity left, position version changed (trade, withdrawal, liquidation), signer set changed,
   or any index price moved more than `price_move_fraction` x the attestor's price band from the
   attested price (the attestor voids it at the full band);
3. for those: the book at the block (keeper.risk.book), portfolio IM/MM over the scenario grid
   (keeper.risk.scenarios, prices = the oracle's `index_prices()` at the block), rounded up to
   the cent and then to WAD; the standard IM/MM = the engine's cross margin (keeper.risk.margin,
   the exact mirror) + the option market's `margin_contribution`; the attested values are never
   above the standard ones, and an account whose portfolio margin is not lower is skipped;
4. sign with the m configured keys (EIP-712, keeper.chain.attestations), simulate with eth_call,
   and send keyed "attest:<account>" (never two in flight for one account).

Derive (Lyra v2) runs the same split: a trusted off-chain risk assessor signs portfolio margin
that the on-chain manager accepts within bounds (PMRM `_assessRisk`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Sequence

from web3.exceptions import ContractLogicError

from keeper.chain.attestations import HealthAttestation, sign_attestation
from keeper.chain.client import AttestorTerms, ProtocolClient, StoredAttestation
from keeper.errors import KeeperError
from keeper.metrics import KeeperMetrics
from keeper.risk.margin import margin
from keeper.risk.scenarios import ScenarioParams, build_risk_tables, portfolio_margin, scenario_params_hash
from keeper.units import WAD

log = logging.getLogger("keeper.attest")

CENT = 10**16  # one cent in WAD USD


class ScenarioParamsNotGoverned(KeeperError):
    """The keeper's scenario parameters are not the ones the attestor is governed to (one line)."""


def attestation_key(account: str) -> str:
    return f"attest:{account}"


def usd_to_wad_up(usd: float) -> int:
    """A float USD amount rounded up to the cent, as WAD (protocol-favouring).

    The float's shortest decimal form is rounded (so 1234.56 stays 123456 cents, not 123457
    from binary noise). Raises ValueError for a negative or non-finite amount."""
    if not math.isfinite(usd) or usd < 0:
        raise ValueError(f"margin must be a finite amount >= 0, got {usd!r}")
    cents = (Decimal(repr(float(usd))) * 100).to_integral_value(rounding=ROUND_CEILING)
    return int(cents) * CENT


def attested_margins(pm_im_usd: float, pm_mm_usd: float, standard_im: int, standard_mm: int) -> tuple[int, int] | None:
    """The (IM, MM) WAD to attest: the portfolio margin rounded up to the cent, never above the
    standard margin; None when the portfolio margin lowers neither requirement (nothing to gain).
    IM >= MM as the attestor requires (both are minima of pairs ordered that way, and MM is
    capped at IM for safety)."""
    im = min(usd_to_wad_up(pm_im_usd), standard_im)
    mm = min(usd_to_wad_up(pm_mm_usd), standard_mm)
    if im >= standard_im and mm >= standard_mm:
        return None
    return im, min(mm, im)


@dataclass(frozen=True)
class RefreshRules:
    """When to replace an attestation: less than `refresh_before_seconds` of validity left, or
    a price moved more than `price_move_fraction` of the attestor's band."""

    refresh_before_seconds: int = 120
    price_move_fraction: float = 0.5


def refresh_reason(
    stored: StoredAttestation | None,
    now: int,
    version: int,
    prices: Sequence[int],
    terms: AttestorTerms,
    rules: RefreshRules,
) -> str | None:
    """Why the account needs a new attestation at time `now`, or None if the stored one is good.

    Reasons: "none", "expiring" (valid_until - now < refresh_before_seconds, expired included),
    "position_changed", "signers_changed", "prices" (count differs or some price moved by more
    than price_move_fraction x price_band of its attested value: |p - p_a| > f x band x p_a)."""
    if stored is None:
        return "none"
    if stored.valid_until - now < rules.refresh_before_seconds:
        return "expiring"
    if stored.position_version != version:
        return "position_changed"
    if stored.signer_set_version != terms.signer_set_version:
        return "signers_changed"
    if len(stored.prices) != len(prices):
        return "prices"
    # |p - p_a| * 1e18 > f * band * p_a, with f as an exact fraction
    f = Decimal(repr(rules.price_move_fraction))
    for attested, current in zip(stored.prices, prices):
        if attested == 0 or Decimal(abs(int(current) - int(attested))) * WAD > f * terms.price_band * attested:
            return "prices"
    return None


@dataclass
class AttestationService:
    """Keeps attestations fresh. `tx` is the bot's keeper.txmanager.TxManager; `signer_keys` the
    m risk signers' private keys (hex); `accounts` None = every tracked account holding options,
    else only these; `validity_seconds` is clamped to the attestor's max validity;
    `scenario_source` names where `scenario_params` came from (a file), for messages."""

    client: ProtocolClient
    tx: object
    signer_keys: Sequence[str]
    scenario_params: ScenarioParams = field(default_factory=ScenarioParams)
    rules: RefreshRules = field(default_factory=RefreshRules)
    accounts: Sequence[str] | None = None
    validity_seconds: int = 600
    metrics: KeeperMetrics = field(default_factory=KeeperMetrics)
    scenario_source: str = "the scenario parameters"
    # account -> (version, prices, recheck after): a skipped account is re-judged when one changes
    _skipped: dict = field(default_factory=dict)
    _terms: AttestorTerms | None = None
    _terms_block: int = -1
    _governed: bytes | None = None  # the attestor's scenario_params_hash at the last block read
    # accounts whose stored attestation is known to carry the governed hash (reset when it changes)
    _params_ok: set = field(default_factory=set)

    @property
    def params_hash(self) -> bytes:
        """keccak256 of the canonical encoding of `scenario_params` (32 bytes)."""
        return scenario_params_hash(self.scenario_params)

    def governed_hash(self, block: int | str = "latest") -> bytes:
        """The attestor's `scenario_params_hash` at `block` (one eth_call)."""
        return bytes(self.client.attestor.functions.scenario_params_hash().call(block_identifier=block))

    def check_governed(self, block: int | str = "latest") -> None:
        """Refuse to start with parameters the attestor would refuse.

        Raises ScenarioParamsNotGoverned (one line naming the file and both hashes)."""
        governed, local = self.governed_hash(block), self.params_hash
        if governed != local:
            raise ScenarioParamsNotGoverned(
                f"the scenario parameters in {self.scenario_source} hash to 0x{local.hex()} but the attestor is "
                f"governed to 0x{governed.hex()}; use the governed file"
            )
        self._governed = governed

    def _governed_now(self, block: int) -> bool:
        """Whether the governed hash at `block` is ours; logs once per change of the governed hash."""
        governed, local = self.governed_hash(block), self.params_hash
        if governed != self._governed:
            self._params_ok.clear()  # stored attestations may now be void on chain
            if governed != local:
                log.warning(
                    "governance set the scenario parameters hash to 0x%s; %s hash to 0x%s: not attesting until they agree",
                    governed.hex(),
                    self.scenario_source,
                    local.hex(),
                    extra={"governed": "0x" + governed.hex()},
                )
            elif self._governed is not None:
                log.info("the scenario parameters hash is governed to ours again (0x%s): attesting", local.hex())
            self._governed = governed
        return governed == local

    def _params_current(self, account: str, block: int) -> bool:
        """Whether `account`'s stored attestation carries the governed hash (read once per account
        and governed hash: later attestations can only carry the same one)."""
        if account in self._params_ok:
            return True
        stored = bytes(self.client.attestor.functions.attestation_scenario_params(account).call(block_identifier=block))
        if stored == self._governed:
            self._params_ok.add(account)
            return True
        return False

    def step(self, block: int, timestamp: int, tracked: Sequence[str]) -> list[str]:
        """Refresh what needs it at `block` (time `timestamp`) among `tracked` accounts (or the
        configured list); returns the accounts an attestation was sent for."""
        if self.client.attestor is None:
            return []
        if not self._governed_now(block):
            self.metrics.attestations_skipped.labels(reason="scenario_params").inc()
            return []
        if self._terms is None or block - self._terms_block >= 50:
            self._terms, self._terms_block = self.client.attestor_terms(block), block
        terms = self._terms
        candidates = list(self.accounts) if self.accounts is not None else list(tracked)
        if not candidates:
            return []
        if self.accounts is None:  # all: those holding options
            held = self.client.option_positions(candidates, block)
            candidates = [a for a, row in zip(candidates, held) if row]
        prices = [int(p) for p in self.client.oracle.functions.index_prices().call(block_identifier=block)]
        pending = self.tx.pending_keys()
        due: list[str] = []
        fresh = 0
        # two batched lens reads for all candidates, not two calls per account
        versions = self.client.position_versions(candidates, block)
        stored_all = self.client.stored_attestations(candidates, block)
        for account, version, stored in zip(candidates, versions, stored_all):
            if attestation_key(account) in pending:
                continue
            reason = refresh_reason(stored, timestamp, version, prices, terms, self.rules)
            if reason is None and not self._params_current(account, block):
                reason = "scenario_params_changed"
            if reason is None:
                fresh += 1
                continue
            skipped = self._skipped.get(account)
            if skipped is not None and refresh_reason(skipped, timestamp, version, prices, terms, self.rules) is None:
                continue  # judged not worth attesting at this version and these prices
            due.append(account)
        self.metrics.accounts_attested.set(fresh)
        if not due:
            return []
        return self._attest(due, block, timestamp, prices, terms)

    def _attest(
        self, accounts: list[str], block: int, timestamp: int, prices: list[int], terms: AttestorTerms
    ) -> list[str]:
        client = self.client
        snap = client.snapshot(accounts, block)
        params = client.risk_params(block)
        book = client.risk_book(snap, params)
        tables = build_risk_tables(book.instruments, book.market, self.scenario_params)
        pm = portfolio_margin(tables, book.positions)
        standard = margin(snap.book, snap.markets, params, snap.prices)
        validity = min(self.validity_seconds, terms.max_validity)
        sent = []
        for i, account in enumerate(accounts):
            version = client.position_versions([account], block)[0]
            if book.holds_unpriced[i] or book.holds_stale[i]:
                self._skip(
                    account, "stale_vol", "holds a series without a fresh vol", version, prices, timestamp, validity
                )
                continue
            options = client.option_margin(account, prices, block)
            std_im = int(standard.initial_margin[i]) + options.initial_margin
            std_mm = int(standard.maintenance_margin[i]) + options.maintenance_margin
            margins = attested_margins(float(pm.im[i]), float(pm.mm[i]), std_im, std_mm)
            if margins is None:
                self._skip(
                    account,
                    "not_lower",
                    f"portfolio IM {pm.im[i]:,.2f} >= standard {std_im / WAD:,.2f} USD",
                    version,
                    prices,
                    timestamp,
                    validity,
                )
                continue
            self._skipped.pop(account, None)
            stored = client.stored_attestation(account, block)
            issued = timestamp if stored is None else max(timestamp, stored.issued_at + 1)
            if issued > timestamp:
                continue  # an attestation from this very second is stored: next block
            att = HealthAttestation(
                account, version, tuple(prices), margins[0], margins[1], issued, issued + validity, self.params_hash
            )
            args = sign_attestation(att, self.signer_keys, client.deployment.chain_id, client.attestor.address)
            call = client.attestor.functions.submit_attestation(*args)
            try:
                call.call({"from": self.tx.address}, block_identifier="latest")
                gas = call.estimate_gas({"from": self.tx.address}, block_identifier="latest")
            except ContractLogicError as e:
                self.metrics.attestations_failed.inc()
                log.warning(
                    "attestation of %s not sent: simulation reverted (%s)",
                    account,
                    e.message or e,
                    extra={"account": account},
                )
                continue
            tx_hash = self.tx.send(call, gas, attestation_key(account))
            if tx_hash is None:
                continue
            self.metrics.attestations_submitted.inc()
            sent.append(account)
            log.info(
                "attest %s: IM %.2f / MM %.2f USD (standard %.2f / %.2f; worst %s %.2f) valid %d s: sent %s",
                account, margins[0] / WAD, margins[1] / WAD, std_im / WAD, std_mm / WAD, pm.labels[int(pm.worst_scenario[i])],
                float(pm.worst_pnl[i]), validity, tx_hash,
                extra={"account": account, "tx": tx_hash, "im_usd": margins[0] / WAD, "mm_usd": margins[1] / WAD},
            )  # fmt: skip
        return sent

    def _skip(self, account, reason, why, version, prices, timestamp, validity) -> None:
        self.metrics.attestations_skipped.labels(reason=reason).inc()
        previous = self._skipped.get(account)
        self._skipped[account] = StoredAttestation(
            version, tuple(prices), 0, 0, timestamp, timestamp + validity, self._terms.signer_set_version
        )
        if previous is None or previous.position_version != version:
            log.info(
                "no attestation for %s (%s): %s", account, reason, why, extra={"account": account, "reason": reason}
            )

    def handle_outcome(self, outcome) -> None:
        """A settled "attest:<account>" transaction (keeper.txmanager.Outcome)."""
        account = outcome.key.partition(":")[2]
        receipt = outcome.receipt
        if outcome.status == "mined" and receipt is not None and receipt.get("status") == 1:
            log.info(
                "attestation of %s mined in block %d",
                account,
                receipt["blockNumber"],
                extra={"account": account, "tx": outcome.tx_hash},
            )
            return
        self.metrics.attestations_failed.inc()
        log.warning(
            "attestation of %s %s (tx %s): prices or position moved first",
            account,
            outcome.status,
            outcome.tx_hash,
            extra={"account": account},
        )
