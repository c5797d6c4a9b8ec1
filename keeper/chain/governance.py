"""Hand the protocol's governance roles to a Timelock (`contracts/Timelock.vy`).

After `install_timelock` every risk parameter of the oracle router, vault and margin engine (and,
when options are deployed, of the option market, volatility feed and health attestor) changes only through a call queued on the timelock at least its delay in advance (see
`keeper params`), and within the bounds each setter enforces on chain.
"""

from __future__ import annotations

from typing import Any

from keeper.chain.deployment import Backend, Deployment

# manifest field -> contract name, for every contract that carries the roles module
GOVERNED = (
    ("oracle", "OracleRouter"),
    ("vault", "CollateralVault"),
    ("engine", "MarginEngine"),
    ("option_market", "OptionMarket"),
    ("vol_feed", "VolFeed"),
    ("health_attestor", "HealthAttestor"),
    ("backstop_vault", "BackstopVault"),
)


def governed(deployment: Deployment) -> list[tuple[str, str, str]]:
    """(manifest field, contract name, address) of every deployed contract with the roles module."""
    return [(field, name, getattr(deployment, field)) for field, name in GOVERNED if getattr(deployment, field, "")]


def contract_at(backend: Backend, name: str, address: str) -> Any:
    """A handle on the deployed contract `name` at `address` for `backend.transact`.

    Works with a backend that has `at(name, address)`, or one with a web3 connection `w3`
    (`keeper.chain.deploy.Web3Backend`); raises TypeError otherwise."""
    if hasattr(backend, "at"):
        return backend.at(name, address)
    w3 = getattr(backend, "w3", None)
    if w3 is None:
        raise TypeError(f"{type(backend).__name__} can neither `at(name, address)` nor reach web3")
    from keeper.chain.artifacts import load_artifact

    return w3.eth.contract(address=address, abi=load_artifact(name).abi)


def _same(a: str | None, b: str) -> bool:
    return isinstance(a, str) and a.lower() == b.lower()


def install_timelock(backend: Backend, deployment: Deployment, governance: str, delay: int) -> str:
    """Deploy `Timelock(governance, delay)` and hand it both roles of every governed contract
    (`governed`). Returns the timelock's address and records it as `deployment.timelock`.

    Steps, from the backend's sender, which must be the current `admin` of all of them:
    `set_risk_admin(timelock)` then `propose_admin(timelock)` on each (risk admin first: once
    the admin role has moved, the sender can no longer assign it). Then, if the sender is also
    `governance`, the timelock accepts the admin role of each through `accept_admin_of`, a
    governance call without delay (accepting only gives the timelock power). Otherwise the
    proposals stay pending: `governance` completes them later with `accept_admin_roles`, and
    until then the sender is still admin (it may propose another admin or cancel with
    `propose_admin(0)`), though no longer risk admin.

    The backend's sender is `backend.sender` (as `Web3Backend`); a backend without one is
    treated as not being governance. `delay` is seconds in [1 hour, 30 days] (the contract's
    MIN_DELAY / MAX_DELAY); the deployment reverts otherwise. Raises what the backend raises
    when a transaction reverts (e.g. "roles: not admin" when the sender is not admin).
    """
    timelock = backend.deploy("Timelock", governance, delay)
    address = timelock.address
    for _, name, at in governed(deployment):
        contract = contract_at(backend, name, at)
        backend.transact(contract, "set_risk_admin", address)
        backend.transact(contract, "propose_admin", address)
    deployment.timelock = address
    if _same(getattr(backend, "sender", None), governance):
        accept_admin_roles(backend, deployment, timelock)
    return address


def accept_admin_roles(backend: Backend, deployment: Deployment, timelock: Any = None) -> None:
    """Let the timelock accept the pending `admin` role of every governed contract.

    The backend's sender must be the timelock's governance ("timelock: not governance"
    otherwise) and each contract must have proposed the timelock ("roles: not pending admin").
    `timelock` is a handle or None for `deployment.timelock`."""
    if timelock is None or isinstance(timelock, str):
        timelock = contract_at(backend, "Timelock", timelock or deployment.timelock)
    for _, _, at in governed(deployment):
        backend.transact(timelock, "accept_admin_of", at)
