"""What `keeper run` checks once, before it follows the first block.

Each check gives at most one line naming what is wrong and how to fix it. `startup_checks` runs
them all and returns every failure and warning together, so an operator fixes everything in one
go; `keeper run` prints the failures as `error: ...` lines and exits with code 1 (warnings are
logged and the keeper starts).

- the endpoint's chain id is the manifest's;
- every contract address the manifest names has code (core contracts, lens, matching, the
  liquidation modules, the tokens and feeds, options, timelock);
- a separate send endpoint (`send_rpc`), when given, answers for the same chain;
- the keeper's address can pay the gas of one liquidation at the current fee (not in a dry run,
  which sends nothing); below `low_balance_eth` is a warning;
- the keeper has a balance in the vault (settlement cash or collateral): a liquidator takes over
  the closed positions and must meet initial margin after, so with nothing in the vault every
  liquidation simulates as "liquidator below IM". Zero is a warning, not a failure (a keeper
  may only settle expired markets);
- the node's head is recent: its timestamp at most `stale_after_seconds` behind the wall clock.

`chain_problem` and `code_problems` are also what `ProtocolClient.check_chain` (every other
command) raises on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from web3 import Web3

from keeper.chain.deployment import Deployment
from keeper.errors import KeeperError
from keeper.units import GWEI, WAD

# manifest fields holding a contract address (admin and deployer are accounts, not contracts)
CONTRACT_FIELDS = (
    "oracle",
    "vault",
    "engine",
    "settlement_token",
    "lens",
    "matching",
    "engine_liquidation",
    "engine_deleveraging",
    "timelock",
    "option_market",
    "vol_feed",
    "health_attestor",
    "option_liquidation",
    "backstop_vault",
)


class StartupCheckError(KeeperError, RuntimeError):
    """One or more startup checks failed: the message holds one line per failure."""

    def __init__(self, failures: list[str]):
        super().__init__("\n".join(failures))
        self.failures = list(failures)


@dataclass
class StartupReport:
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was checked, for the start log line

    def raise_if_failed(self) -> None:
        if self.failures:
            raise StartupCheckError(self.failures)


def chain_problem(w3: Web3, deployment: Deployment, where: str = "RPC") -> str | None:
    chain_id = w3.eth.chain_id
    if chain_id != deployment.chain_id:
        return (
            f"{where} is chain {chain_id} but the manifest is for chain {deployment.chain_id}: "
            "point the keeper at an endpoint of that chain, or give the manifest of this chain's deployment"
        )
    return None


def manifest_contracts(deployment: Deployment) -> dict[str, str]:
    """Manifest field ("engine", "tokens.WETH", "feeds.ETH") -> contract address, non-empty ones."""
    out = {name: getattr(deployment, name) for name in CONTRACT_FIELDS if getattr(deployment, name, "")}
    out |= {f"tokens.{s}": a for s, a in deployment.tokens.items() if a}
    out |= {f"feeds.{s}": a for s, a in deployment.feeds.items() if a}
    return out


def code_problems(w3: Web3, deployment: Deployment, only: tuple[str, ...] | None = None) -> list[str]:
    """One line per manifest address without code (`only`: these fields only)."""
    problems = []
    for name, address in manifest_contracts(deployment).items():
        if only is not None and name not in only:
            continue
        if not w3.eth.get_code(address):
            problems.append(
                f"no contract at the manifest's {name} address {address}: "
                "the manifest is for another deployment or chain, or the node is not synced to it"
            )
    return problems


def startup_checks(
    w3: Web3,
    deployment: Deployment,
    address: str,
    *,
    vault=None,
    send_w3: Web3 | None = None,
    dry_run: bool = False,
    gas_floor: int = 200_000,
    max_fee_per_gas: int = 500 * GWEI,
    priority_fee: int = GWEI,
    base_fee_multiplier: int = 2,
    low_balance_eth: float = 0.05,
    stale_after_seconds: float = 120.0,
    clock: Callable[[], float] = time.time,
) -> StartupReport:
    """Every check of the module docstring; RPC errors of a check are reported as its failure.
    `vault`: the CollateralVault contract (its `cash` and `has_collateral` views)."""
    report = StartupReport()

    def attempt(what: str, check: Callable[[], None]) -> None:
        try:
            check()
        except KeeperError:
            raise
        except Exception as e:  # noqa: BLE001 - any failed read is reported with the others
            report.failures.append(f"cannot check {what}: {e.__class__.__name__}: {str(e)[:160]}")

    def chain() -> None:
        problem = chain_problem(w3, deployment)
        if problem:
            report.failures.append(problem)
        else:
            report.notes.append(f"chain {deployment.chain_id}")

    def code() -> None:
        problems = code_problems(w3, deployment)
        report.failures.extend(problems)
        if not problems:
            report.notes.append(f"{len(manifest_contracts(deployment))} contracts")

    def send_endpoint() -> None:
        try:
            chain_id = send_w3.eth.chain_id
        except (OSError, ConnectionError) as e:
            report.failures.append(
                f"send endpoint (send_rpc) cannot be reached: {e}; check the URL or leave send_rpc unset"
            )
            return
        except Exception as e:  # noqa: BLE001 - a relay that does not serve eth_chainId
            report.warnings.append(
                f"send endpoint (send_rpc) did not answer eth_chainId ({e.__class__.__name__}); "
                "cannot confirm it is the manifest's chain"
            )
            return
        if chain_id != deployment.chain_id:
            report.failures.append(
                f"send endpoint (send_rpc) is chain {chain_id} but the manifest is for chain {deployment.chain_id}: "
                "give a send endpoint of that chain"
            )

    head_box: list = []

    def head() -> None:
        block = w3.eth.get_block("latest")
        head_box.append(block)
        lag = clock() - int(block["timestamp"])
        if lag > stale_after_seconds:
            report.failures.append(
                f"the node's head (block {block['number']}) is {lag:.0f} s old, more than stale_after_seconds "
                f"{stale_after_seconds:g} s: the node is syncing or stuck; wait for it, or use another --rpc"
            )
        else:
            report.notes.append(f"head {block['number']} {max(lag, 0):.0f} s old")

    def gas() -> None:
        balance = w3.eth.get_balance(address)
        base = int(head_box[0].get("baseFeePerGas") or 0) if head_box else 0
        fee = min(base * base_fee_multiplier + priority_fee, max_fee_per_gas)
        need = gas_floor * fee
        eth = balance / WAD
        if balance < need or balance == 0:
            report.failures.append(
                f"keeper {address} has {eth:.6f} ETH, less than the gas of one liquidation "
                f"({gas_floor} gas x {fee / GWEI:g} gwei = {need / WAD:.6f} ETH): send it ETH for gas"
            )
        elif eth < low_balance_eth:
            report.warnings.append(
                f"keeper {address} has {eth:.6f} ETH, below low_balance_eth {low_balance_eth:g}: top it up soon"
            )
        else:
            report.notes.append(f"{eth:.4f} ETH")

    def collateral() -> None:
        cash = vault.functions.cash(address).call()
        has_collateral = vault.functions.has_collateral(address).call()
        if cash <= 0 and not has_collateral:
            report.warnings.append(
                f"keeper {address} has no balance in the vault (settlement cash {cash}, no collateral): a liquidator "
                "takes over the closed positions and must meet initial margin, so every liquidation will simulate "
                "as 'liquidator below IM' and be skipped; deposit settlement tokens with CollateralVault.deposit"
            )
        else:
            report.notes.append("vault balance")

    attempt("the chain id", chain)
    attempt("the manifest's contract code", code)
    if send_w3 is not None:
        attempt("the send endpoint", send_endpoint)
    attempt("the node's head", head)
    if not dry_run:
        attempt(f"the ETH balance of {address}", gas)
    if vault is not None:
        attempt(f"the vault balance of {address}", collateral)
    return report
