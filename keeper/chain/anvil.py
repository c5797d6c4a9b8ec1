"""Start and stop a local Anvil chain (from the npm package `@foundry-rs/anvil`)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import requests

from keeper import resources
from keeper.errors import KeeperError

# Anvil's well-known development accounts (mnemonic "test test ... junk"): local chains only.
DEV_ACCOUNTS = (
    (
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    ),
    (
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    ),
    (
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    ),
)


class AnvilError(KeeperError, RuntimeError):
    """Anvil could not be found or started."""


def anvil_binary() -> str:
    """Path of the anvil binary: the checkout's node_modules first, then PATH."""
    checkout = resources.checkout_root()
    local = checkout / "node_modules" / ".bin" / "anvil" if checkout is not None else None
    if local is not None and local.exists():
        return str(local)
    found = shutil.which("anvil")
    if not found:
        raise AnvilError("anvil not found: run the README's set-up (bin/demo installs it from npm)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Anvil:
    """A local Anvil process, as a context manager: `with Anvil() as rpc_url: ...`."""

    def __init__(self, port: int | None = None, extra_args: tuple[str, ...] = (), gas_limit: int = 100_000_000):
        self.port = port or free_port()
        self.gas_limit = gas_limit  # of every block
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> str:
        # the contracts target cancun (see keeper/chain/artifacts.py); the chain matches it
        cmd = [
            anvil_binary(),
            "--port",
            str(self.port),
            "--silent",
            "--hardfork",
            "cancun",
            "--gas-limit",
            str(self.gas_limit),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.process.stderr.read() or b"").decode(errors="replace").strip().splitlines()
                raise AnvilError(f"anvil exited at start: {err[-1] if err else 'no message'}")
            try:
                requests.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=1)
                return self.url
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise AnvilError(f"anvil did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
