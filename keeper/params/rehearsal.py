"""Rehearse parameter changes on an Anvil fork before queuing them.

Anvil forks the chain at its latest block, impersonates the timelock (or, before one is
installed, each contract's current risk admin), sends the setter calls in order, and the
contract's own (equity, IM, MM, health) of every known account (those that deposited or
changed a perp or option position since the deploy block) is compared before and after. The
lens values option positions and applies live portfolio-margin attestations, so a higher
option rate, a higher attestation floor or a narrower attestation price band shows as a higher
requirement. Nothing is sent to the real chain.

A stricter margin rate or haircut phases in over `REQUIREMENT_RAMP` (7 days) on chain, so
nothing tightens in the block a change executes. "After" is therefore the state once every
change has phased in, at today's prices: on the fork, the time each ramp started is set far
enough back (`complete_phase_in`, through `anvil_setStorageAt`) that the targets are in force.

An account is newly liquidatable when equity >= MM before and equity < MM after (the engine's
`is_liquidatable`), newly below IM when equity >= IM before and equity < IM after (it can
then no longer withdraw or add risk).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_utils import keccak
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from keeper.chain.anvil import Anvil
from keeper.chain.artifacts import load_artifact, storage_slot
from keeper.chain.client import ProtocolClient, connect
from keeper.chain.deployment import Deployment
from keeper.chain.types import MarginSummary
from keeper.params.plan import CONTRACT_NAMES, Call, call_data

ACTOR_BALANCE = 10**20  # wei given to the impersonated account for gas on the fork
CALL_GAS = 1_000_000


@dataclass
class Rehearsal:
    """Outcome of a rehearsal. `before` / `after`: (equity, IM, MM, health) per account, WAD.

    `failed` = (index of the call that would revert, revert reason); later calls were not
    sent. `after_error` is set when the margins cannot be read after the change (a price id
    left without a valid feed)."""

    block: int
    actor: str
    accounts: tuple[str, ...]
    before: list[MarginSummary]
    after: list[MarginSummary] = field(default_factory=list)
    failed: tuple[int, str] | None = None
    after_error: str | None = None
    # one line if, after the change, an open-interest cap is not coherent with the insurance
    # fund (keeper.params.backstop, read on the fork); None if coherent or not checkable
    backstop_warning: str | None = None

    def _changed(self, requirement: str) -> list[int]:
        return [
            i
            for i, (b, a) in enumerate(zip(self.before, self.after))
            if b.equity >= getattr(b, requirement) and a.equity < getattr(a, requirement)
        ]

    @property
    def newly_liquidatable(self) -> list[int]:
        """Indices into `accounts` of accounts that become liquidatable (equity < MM)."""
        return self._changed("maintenance_margin")

    @property
    def newly_below_im(self) -> list[int]:
        """Indices of accounts that fall below initial margin (equity < IM)."""
        return self._changed("initial_margin")

    def total(self, which: str, field: str | int) -> int:
        """Sum over the accounts of one MarginSummary field (a name, or its position)."""
        rows = self.before if which == "before" else self.after
        return sum(r[field] if isinstance(field, int) else getattr(r, field) for r in rows)

    @property
    def applied(self) -> bool:
        """Every call went through and the margins could be read after."""
        return self.failed is None and self.after_error is None

    @property
    def safe(self) -> bool:
        """Applied, and no account becomes liquidatable."""
        return self.applied and not self.newly_liquidatable


def revert_message(e: Exception) -> str:
    """The revert reason of a refused call (`ContractLogicError`, `Web3RPCError`): the
    contract's message without the node's "execution reverted: " prefix."""
    text = str(e.args[0] if e.args else e)
    for prefix in ("execution reverted: ", "execution reverted"):
        if text.startswith(prefix):
            return text[len(prefix) :] or "reverted without a reason"
    return text


def _rpc(w3: Web3, method: str, params: list) -> None:
    response = w3.provider.make_request(method, params)
    if "error" in response:
        raise RuntimeError(f"{method} failed: {response['error'].get('message', response['error'])}")


def _risk_admin(w3: Web3, call: Call) -> str:
    abi = load_artifact(CONTRACT_NAMES[call.contract]).abi
    return w3.eth.contract(address=call.address, abi=abi).functions.risk_admin().call()


def apply_calls(w3: Web3, calls: list[Call], actor: str | None) -> tuple[int, str] | None:
    """Send `calls` in order on a fork, each from `actor` (impersonated), or, when None, from
    the risk admin of the call's contract. Returns (index, reason) of the first call that
    would revert, or None."""
    impersonated: set[str] = set()
    for i, call in enumerate(calls):
        sender = actor or _risk_admin(w3, call)
        if sender not in impersonated:
            _rpc(w3, "anvil_impersonateAccount", [sender])
            _rpc(w3, "anvil_setBalance", [sender, hex(ACTOR_BALANCE)])
            impersonated.add(sender)
        tx = {"from": sender, "to": call.address, "data": "0x" + call_data(call).hex()}
        try:
            w3.eth.call(tx)
        except (ContractLogicError, Web3RPCError) as e:
            return i, revert_message(e)
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_transaction({**tx, "gas": CALL_GAS}), timeout=60)
        if receipt["status"] != 1:
            return i, "reverted"
    return None


def _ramp_starts(w3: Web3, deployment: Deployment) -> list[tuple[str, int]]:
    """(contract address, storage slot) of every ramp start time: each underlying's
    `rates_changed_at`, each asset's `haircut_changed_at`, the option market's
    `risk_params_changed_at`, the attestor's `margin_floor_changed_at`, the vol feed's
    `heartbeat_changed_at`."""

    def element(base: int, key: int) -> int:
        return int.from_bytes(keccak(base.to_bytes(32, "big") + key.to_bytes(32, "big")), "big")

    engine = w3.eth.contract(address=deployment.engine, abi=load_artifact("MarginEngine").abi).functions
    vault = w3.eth.contract(address=deployment.vault, abi=load_artifact("CollateralVault").abi).functions
    base = storage_slot("MarginEngine", "core", "rates_changed_at")
    out = [(deployment.engine, element(base, u)) for u in range(engine.underlying_count().call())]
    base = storage_slot("CollateralVault", "haircut_changed_at")
    out += [(deployment.vault, element(base, a)) for a in range(vault.asset_count().call())]
    if getattr(deployment, "option_market", ""):
        out.append((deployment.option_market, storage_slot("OptionMarket", "core", "risk_params_changed_at")))
    if getattr(deployment, "health_attestor", ""):
        out.append((deployment.health_attestor, storage_slot("HealthAttestor", "margin_floor_changed_at")))
    if getattr(deployment, "vol_feed", ""):
        out.append((deployment.vol_feed, storage_slot("VolFeed", "heartbeat_changed_at")))
    return out


def complete_phase_in(w3: Web3, deployment: Deployment) -> None:
    """On a fork only: make every requirement ramp look as if it started at time 0, so the
    targets of every change are in force now (and mine a block, for calls at "latest")."""
    for address, slot in _ramp_starts(w3, deployment):
        _rpc(w3, "anvil_setStorageAt", [address, hex(slot), "0x" + "00" * 32])
    _rpc(w3, "evm_mine", [])


def option_accounts(w3: Web3, deployment: Deployment, from_block: int, to_block: int) -> set[str]:
    """Accounts whose option position changed in [from_block, to_block] (OptionMarket
    `OptionPositionChanged`); empty without an option market."""
    if not getattr(deployment, "option_market", ""):
        return set()
    market = w3.eth.contract(address=deployment.option_market, abi=load_artifact("OptionMarket").abi)
    logs = market.events.OptionPositionChanged.get_logs(from_block=from_block, to_block=to_block)
    return {log["args"]["account"] for log in logs}


def rehearse(rpc: str, deployment: Deployment, calls: list[Call], actor: str | None = None) -> Rehearsal:
    """Apply `calls` on an Anvil fork of `rpc` at its latest block and compare margins.

    `actor` sends the calls (default: the manifest's timelock, else each contract's risk
    admin). Raises ChainError if `rpc` is unreachable or another chain, AnvilError if the fork
    cannot start."""
    source = connect(rpc)
    ProtocolClient(source, deployment).check_chain()
    head = source.eth.block_number
    actor = actor or getattr(deployment, "timelock", "") or None
    with Anvil(extra_args=("--fork-url", rpc, "--fork-block-number", str(head))) as fork_url:
        w3 = connect(fork_url, timeout=60)
        client = ProtocolClient(w3, deployment)
        accounts = tuple(
            sorted(
                client.discover_accounts(deployment.deploy_block, head)
                | option_accounts(w3, deployment, deployment.deploy_block, head)
            )
        )
        before = client.margin_summaries(accounts, head)
        result = Rehearsal(block=head, actor=actor or "risk admin", accounts=accounts, before=before)
        result.failed = apply_calls(w3, calls, actor)
        if result.failed is not None:
            return result
        complete_phase_in(w3, deployment)
        try:
            result.after = client.margin_summaries(accounts, "latest")
        except (ContractLogicError, Web3RPCError) as e:
            result.after_error = revert_message(e)
            return result
        result.backstop_warning = backstop_after(w3, deployment)
    return result


def backstop_after(w3: Web3, deployment: Deployment) -> str | None:
    """The warning line of keeper.params.backstop for the state at `w3`'s latest block: caps,
    mm rates, index prices and insurance fund on chain, max_gap from the manifest's config."""
    from keeper.params import backstop

    try:
        found = backstop.onchain_exposures(w3, deployment, "latest")
    except (ContractLogicError, Web3RPCError, ValueError, KeyError) as e:
        return f"backstop: cannot check open-interest caps against the insurance fund: {e.__class__.__name__}"
    if found is None:
        return None  # the manifest records no max_gap: deployed before the rule
    exposures, fund, coverage = found
    lines = backstop.problems(exposures, fund, coverage)
    return backstop.warning_line(lines) if lines else None
