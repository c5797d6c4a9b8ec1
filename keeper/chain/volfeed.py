"""Post signed implied-vol updates to a deployed VolFeed (`submit_vol`).

Each update is an EIP-712 `VolUpdate` (keeper.chain.attestations) signed by the given signer
keys (at least the feed's threshold m of its n signers); anyone may send it, here `sender`, an
account the node signs for (e.g. an Anvil dev account). Units: vols and skews WAD (0.8e18 =
80% annualised; skew per unit of ln(K / F)), times unix seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

from keeper.chain.artifacts import load_artifact
from keeper.chain.attestations import VolUpdate, sign_vol_update
from keeper.chain.deployment import Deployment
from keeper.errors import KeeperError

SUBMIT_GAS = 400_000


class VolPostError(KeeperError, RuntimeError):
    """The deployment has no vol feed, or a vol update reverted."""


def vol_update(price_id: int, expiry: int, atm_vol: float, skew: float, now: int, valid_for: int = 3600) -> VolUpdate:
    """A VolUpdate stamped `now` (submittable for `valid_for` seconds) from float vols: the WAD
    values are rounded to the nearest 1e-18 (vol is an input, not an amount; the feed bounds it)."""
    return VolUpdate(price_id, expiry, int(round(atm_vol * 10**18)), int(round(skew * 10**18)), now, now + valid_for)


def post_vols(
    w3,
    deployment: Deployment,
    signer_keys: Sequence[bytes | str],
    updates: Sequence[VolUpdate],
    sender: str,
    *,
    tx: dict | None = None,
    wait: bool = True,
) -> list[bytes]:
    """Sign each of `updates` with every key in `signer_keys` and send `VolFeed.submit_vol`
    from `sender`. `tx`: extra transaction fields (e.g. fees). With `wait`, waits for every
    receipt and raises VolPostError naming the (price id, expiry) of one that reverted (e.g. a
    timestamp not after the stored one, a vol outside the feed's bounds, too few signers).
    Returns the transaction hashes, in order."""
    if not deployment.vol_feed:
        raise VolPostError("the deployment has no vol feed (deployed without an `options:` section)")
    feed = w3.eth.contract(address=deployment.vol_feed, abi=load_artifact("VolFeed").abi)
    params = {"from": sender, "gas": SUBMIT_GAS, **(tx or {})}
    hashes = []
    for update in updates:
        args, signatures = sign_vol_update(update, signer_keys, deployment.chain_id, deployment.vol_feed)
        hashes.append(feed.functions.submit_vol(args, signatures).transact(params))
    if wait:
        for update, h in zip(updates, hashes):
            receipt = w3.eth.wait_for_transaction_receipt(h, timeout=60)
            if receipt["status"] != 1:
                raise VolPostError(
                    f"vol update for price id {update.underlying} expiry {update.expiry} reverted "
                    f"(tx 0x{bytes(h).hex()})"
                )
    return hashes
