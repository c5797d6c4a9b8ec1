"""Cross-check of benchmarks/gas.py's accounting against Anvil receipts.

    python -m benchmarks.gas_anvil_check

Runs one short sequence on a fresh Anvil (receipts' gasUsed) and on titanoboa (gas.py's `Meter`:
intrinsic gas per EIP-2028 + execution - capped refund, after ending the previous transaction),
with the same accounts, amounts and order of transactions, on config/local.yaml:
  a deposit of 1,000 USDC into an account that already holds 1,000, a first trade of two
  accounts (1 ETH-PERP through the order entry point), a withdrawal of 500 USDC with the
  initial-margin check.
Prints both figures and their difference; the contract addresses differ between the two chains,
so the calldata (intrinsic gas) may differ by a few zero bytes: the table shows it apart.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.gas import WAD, Meter, detect_adapter, intrinsic_gas
from keeper.chain.anvil import DEV_ACCOUNTS, Anvil
from keeper.chain.orders import Order, sign_order
from keeper.config import load_config

ROOT = Path(__file__).resolve().parent.parent
USDC = 10**6


def on_anvil(config) -> dict:
    from web3 import Web3

    from keeper.chain.deploy import Web3Backend, deploy_protocol

    out = {}
    with Anvil() as url:
        w3 = Web3(Web3.HTTPProvider(url))
        (admin, _), (alice, alice_key), (bob, bob_key) = DEV_ACCOUNTS
        backend = Web3Backend(w3, admin)
        dep = deploy_protocol(backend, config, admin, w3.eth.chain_id)
        usdc = backend.at("MockERC20", dep.settlement_token)
        vault = backend.at("CollateralVault", dep.vault)
        adapter = detect_adapter(ROOT)
        entry = backend.at(
            "Matching" if adapter.order_entry == "matching" else "MarginEngine", getattr(dep, adapter.order_entry)
        )

        def send(fn, sender):
            receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "gas": 10_000_000}))
            assert receipt["status"] == 1
            tx = w3.eth.get_transaction(receipt["transactionHash"])
            return receipt["gasUsed"], intrinsic_gas(bytes(tx["input"]))

        for who in (alice, bob):
            send(usdc.functions.mint(who, 20_000 * USDC), admin)
            send(usdc.functions.approve(vault.address, 10_000 * USDC), who)
            send(vault.functions.deposit(usdc.address, 10_000 * USDC), who)
        send(usdc.functions.approve(vault.address, 1_000 * USDC), alice)
        out["deposit"] = send(vault.functions.deposit(usdc.address, 1_000 * USDC), alice)
        deadline = w3.eth.get_block("latest")["timestamp"] + 3600
        price = 2000 * WAD
        orders = []
        for nonce, (who, key, size) in enumerate(((alice, alice_key, WAD), (bob, bob_key, -WAD)), start=1):
            order = Order(who, dep.markets["ETH-PERP"], size, price, nonce, deadline)
            orders += [order.as_tuple(), sign_order(order, bytes.fromhex(key[2:]), w3.eth.chain_id, entry.address)]
        out["match_orders"] = send(entry.functions.match_orders(*orders), admin)
        out["withdraw"] = send(vault.functions.withdraw(usdc.address, 500 * USDC), alice)
    return out


def on_boa(config) -> dict:
    import boa

    from tests.boa_protocol import BoaProtocol, User

    out = {}
    p = BoaProtocol.deploy(config)
    meter = Meter()
    (_, _), (alice, alice_key), (bob, bob_key) = DEV_ACCOUNTS
    users = {a: User(a, bytes.fromhex(k[2:])) for a, k in ((alice, alice_key), (bob, bob_key))}

    def send(contract, fn, *args, sender):
        tx = meter.send(fn, contract, fn, *args, sender=sender)
        return tx.gas, tx.intrinsic

    for who in (alice, bob):
        p.usdc.mint(who, 20_000 * USDC)
        with boa.env.prank(who):
            p.usdc.approve(p.vault.address, 10_000 * USDC)
            p.vault.deposit(p.usdc.address, 10_000 * USDC)
    with boa.env.prank(alice):
        p.usdc.approve(p.vault.address, 1_000 * USDC)
    out["deposit"] = send(p.vault, "deposit", p.usdc.address, 1_000 * USDC, sender=alice)
    deadline = boa.env.evm.patch.timestamp + 3600
    adapter = detect_adapter(ROOT)
    entry, fn = adapter.match_orders(p)
    orders = []
    for nonce, (who, size) in enumerate(((alice, WAD), (bob, -WAD)), start=1):
        order = Order(who, p.deployment.markets["ETH-PERP"], size, 2000 * WAD, nonce, deadline)
        orders += [order.as_tuple(), sign_order(order, users[who].key, boa.env.evm.patch.chain_id, entry.address)]
    out["match_orders"] = send(entry, fn, *orders, sender=p.admin)
    out["withdraw"] = send(p.vault, "withdraw", p.usdc.address, 500 * USDC, sender=alice)
    return out


def main() -> None:
    config = load_config(ROOT / "config" / "local.yaml")
    start = time.perf_counter()
    anvil = on_anvil(config)
    boa_ = on_boa(config)
    table = Table(title="gas.py accounting (titanoboa) vs Anvil receipts, same sequence")
    for col in ("transaction", "Anvil gasUsed", "titanoboa (gas.py)", "difference", "intrinsic Anvil / boa"):
        table.add_column(col, justify="left" if col == "transaction" else "right")
    for name in anvil:
        (a, ai), (b, bi) = anvil[name], boa_[name]
        table.add_row(name, f"{a:,}", f"{b:,}", f"{b - a:+,}", f"{ai:,} / {bi:,}")
    Console(width=140).print(table)
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
