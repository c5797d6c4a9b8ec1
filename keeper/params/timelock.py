"""Queue, execute and cancel setter calls on the Timelock, and keep track of them.

Queued operations are kept in a JSON file next to the deployment manifest
(`deployment.json` -> `deployment.operations.json`) so that `execute` and `cancel` know each
call's calldata and eta; the same can be rebuilt from the timelock's `Queued` events
(`recover_operations`). Whether an operation is still queued, executed or cancelled is always
read from chain.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from eth_abi import encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from keeper.chain.artifacts import load_artifact
from keeper.errors import KeeperError
from keeper.params.plan import CONTRACT_NAMES, Call, call_data
from keeper.params.rehearsal import revert_message

GRACE_PERIOD = 14 * 86400  # Timelock.vy
RECEIPT_TIMEOUT = 120


class TimelockError(KeeperError, RuntimeError):
    """A timelock operation cannot be sent, or reverted; the message is one line."""


@dataclass
class Operation:
    """A call on the timelock: `id` = keccak256(abi_encode(target, data, eta)), hex."""

    id: str
    target: str
    data: str  # 0x hex calldata
    eta: int
    label: str = ""  # e.g. "underlying ETH: engine.set_underlying_params(0, ...)"
    queued_tx: str = ""
    executed_tx: str = ""
    cancelled_tx: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:10]


def operation_id(target: str, data: bytes, eta: int) -> str:
    """Python twin of `Timelock.operation_id`: keccak256(abi_encode(address, bytes, uint256))."""
    return "0x" + keccak(encode(["address", "bytes", "uint256"], [target, data, eta])).hex()


def timelock_contract(w3: Web3, address: str):
    return w3.eth.contract(address=to_checksum_address(address), abi=load_artifact("Timelock").abi)


def store_path(manifest: str | Path) -> Path:
    """Where the operations of the deployment in `manifest` are kept."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + ".operations.json")


@dataclass
class OperationStore:
    """The operations file: timelock address, chain id and every operation queued through it."""

    path: Path
    timelock: str = ""
    chain_id: int = 0
    operations: list[Operation] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> "OperationStore":
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            ops = [Operation(**o) for o in raw["operations"]]
            return cls(path, raw["timelock"], raw["chain_id"], ops)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TimelockError(
                f"operations file {path} is unreadable ({e.__class__.__name__}); "
                "move it away to rebuild it from the timelock's events"
            ) from None

    def save(self) -> Path:
        data = {
            "timelock": self.timelock,
            "chain_id": self.chain_id,
            "operations": [asdict(o) for o in self.operations],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data, indent=2) + "\n")
        return self.path

    def merge(self, ops: list[Operation]) -> int:
        """Add operations not yet known (by id); returns how many were added."""
        known = {o.id for o in self.operations}
        new = [o for o in ops if o.id not in known]
        self.operations += new
        return len(new)

    def find(self, prefix: str) -> Operation:
        """The operation whose id starts with `prefix` (0x optional); exactly one must match."""
        p = prefix.lower() if prefix.lower().startswith("0x") else "0x" + prefix.lower()
        found = [o for o in self.operations if o.id.startswith(p)]
        if len(found) != 1:
            raise TimelockError(f"{'no' if not found else 'more than one'} operation with id {prefix} in {self.path}")
        return found[0]


def describe_calldata(w3: Web3, target_name: str, address: str, data: bytes) -> str:
    """`engine.set_underlying_params(0, ...)` for calldata to a governed contract
    (`target_name`, a manifest field of CONTRACT_NAMES), else the hex calldata."""
    if target_name in CONTRACT_NAMES:
        contract = w3.eth.contract(address=address, abi=load_artifact(CONTRACT_NAMES[target_name]).abi)
        try:
            fn, args = contract.decode_function_input(data)
        except ValueError:
            return "0x" + data.hex()
        values = ", ".join(_show_arg(v) for v in args.values())
        return f"{target_name}.{fn.fn_name}({values})"
    return "0x" + data.hex()


def _show_arg(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show_arg(v) for v in value) + "]"
    return str(value)


def utc(timestamp: int) -> str:
    """Unix seconds as `2026-11-21 05:41:12 UTC`."""
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def recover_operations(w3: Web3, timelock: str, deployment, from_block: int = 0) -> list[Operation]:
    """Every operation ever queued on `timelock` from its `Queued` events (oldest first)."""
    contract = timelock_contract(w3, timelock)
    names = {getattr(deployment, f).lower(): f for f in CONTRACT_NAMES if getattr(deployment, f, "")}
    ops = []
    for log in contract.events.Queued.get_logs(from_block=from_block, to_block="latest"):
        a = log["args"]
        target_name = names.get(a["target"].lower(), "")
        label = describe_calldata(w3, target_name, a["target"], bytes(a["data"]))
        ops.append(
            Operation(
                "0x" + bytes(a["id"]).hex(),
                a["target"],
                "0x" + bytes(a["data"]).hex(),
                a["eta"],
                label,
                queued_tx="0x" + bytes(log["transactionHash"]).hex(),
            )
        )
    return ops


def state(w3: Web3, timelock: str, op: Operation, now: int | None = None) -> str:
    """One of: executed, cancelled (not queued, never executed), waiting (queued, before eta),
    ready, expired (queued, after eta + grace period)."""
    contract = timelock_contract(w3, timelock)
    key = bytes.fromhex(op.id[2:])
    if contract.functions.executed(key).call():
        return "executed"
    if not contract.functions.queued(key).call():
        return "cancelled"
    now = w3.eth.get_block("latest")["timestamp"] if now is None else now
    if now < op.eta:
        return "waiting"
    return "ready" if now <= op.eta + GRACE_PERIOD else "expired"


class Sender:
    """Signs and sends governance transactions from one key (rare, one at a time: each is
    mined before the next is signed, so the nonce is always the node's). Fees: web3's
    EIP-1559 defaults (max fee = 2 x base fee + the node's suggested tip)."""

    def __init__(self, w3: Web3, private_key: str):
        self.w3 = w3
        self.account = Account.from_key(private_key)  # ValueError for a malformed key
        self.address = self.account.address

    def send(self, call, what: str) -> str:
        """Estimate (which runs the call, so a revert gives its reason), sign, send, wait for
        the receipt. Returns the 0x transaction hash; raises TimelockError with one line."""
        try:
            gas = call.estimate_gas({"from": self.address})
        except (ContractLogicError, Web3RPCError) as e:
            raise TimelockError(f"{what} would revert: {revert_message(e)}") from None
        tx = call.build_transaction({
            "from": self.address,
            "nonce": self.w3.eth.get_transaction_count(self.address, "pending"),
            "gas": gas * 5 // 4 + 50_000,
        })  # fmt: skip
        tx_hash = self.w3.eth.send_raw_transaction(self.account.sign_transaction(tx).raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT)
        hex_hash = "0x" + bytes(tx_hash).hex()
        if receipt["status"] != 1:
            raise TimelockError(f"{what} reverted (tx {hex_hash})")
        return hex_hash


def plan_operations(calls: list[Call], eta: int) -> list[Operation]:
    """The timelock operation of each call, all with `eta`: the one place the operations to queue
    are built, for `queue_calls` (which sends them) and `keeper params queue --calldata-only`
    (which prints them for a multisig)."""
    ops = []
    for call in calls:
        data = call_data(call)
        ops.append(
            Operation(
                operation_id(call.address, data, eta),
                call.address,
                "0x" + data.hex(),
                eta,
                f"{call.label}: {call.describe()}",
            )
        )
    return ops


def queue_call(contract, op: Operation):
    """`Timelock.queue(target, data, eta)` of `op` on the timelock `contract` (a web3 contract
    function call: sent by `queue_calls`, encoded by `queue_calldata`)."""
    return contract.functions.queue(op.target, bytes.fromhex(op.data[2:]), op.eta)


def queue_calldata(w3: Web3, timelock: str, op: Operation) -> str:
    """The 0x hex calldata of the transaction governance sends to `timelock` to queue `op`."""
    return queue_call(timelock_contract(w3, timelock), op)._encode_transaction_data()


def safe_batch(chain_id: int, timelock: str, governance: str, ops: list[Operation], created_at_ms: int) -> dict:
    """A Safe Transaction Builder batch (JSON format version 1.0) of the `Timelock.queue` calls
    of `ops`, for a Safe that is the timelock's `governance` to propose and sign. It carries no
    `meta.checksum` (the Transaction Builder computes one when it saves a batch itself)."""
    w3 = Web3()
    eta = ops[0].eta if ops else 0
    return {
        "version": "1.0",
        "chainId": str(chain_id),
        "createdAt": created_at_ms,
        "meta": {
            "name": f"Timelock queue: {len(ops)} operation(s), eta {eta} ({utc(eta)})",
            "description": "; ".join(f"{op.short_id} {op.label}" for op in ops),
            "txBuilderVersion": "",
            "createdFromSafeAddress": governance,
            "createdFromOwnerAddress": "",
        },
        "transactions": [
            {
                "to": to_checksum_address(timelock),
                "value": "0",
                "data": queue_calldata(w3, timelock, op),
                "contractMethod": None,
                "contractInputsValues": None,
            }
            for op in ops
        ],
    }


def queue_calls(tx: Sender, timelock: str, calls: list[Call], eta: int) -> list[Operation]:
    """Queue every call with the same `eta` (unix seconds, >= chain time + delay when mined),
    in order. Returns the operations, each checked against the id the timelock logged."""
    contract = timelock_contract(tx.w3, timelock)
    ops = plan_operations(calls, eta)
    for op in ops:
        op.queued_tx = tx.send(queue_call(contract, op), f"queue {op.label}")
        receipt = tx.w3.eth.get_transaction_receipt(op.queued_tx)
        logged = contract.events.Queued().process_receipt(receipt)
        if not logged or "0x" + bytes(logged[0]["args"]["id"]).hex() != op.id:
            raise TimelockError(f"queue {op.label}: the timelock logged another operation id than {op.id}")
    return ops


def execute_operation(tx: Sender, timelock: str, op: Operation) -> str:
    """Execute a queued operation; returns the tx hash. Refuses before its eta and after its
    grace period with one line saying when."""
    now = tx.w3.eth.get_block("latest")["timestamp"]
    st = state(tx.w3, timelock, op, now)
    if st == "waiting":
        raise TimelockError(
            f"operation {op.short_id} ({op.label}) is not ready: eta {utc(op.eta)}, in {op.eta - now} s"
        )
    if st != "ready":
        raise TimelockError(f"operation {op.short_id} ({op.label}) is {st}, not executable")
    contract = timelock_contract(tx.w3, timelock)
    call = contract.functions.execute(op.target, bytes.fromhex(op.data[2:]), op.eta)
    op.executed_tx = tx.send(call, f"execute {op.short_id} ({op.label})")
    return op.executed_tx


def cancel_operation(tx: Sender, timelock: str, op: Operation) -> str:
    """Cancel a queued operation; returns the tx hash."""
    contract = timelock_contract(tx.w3, timelock)
    call = contract.functions.cancel(op.target, bytes.fromhex(op.data[2:]), op.eta)
    op.cancelled_tx = tx.send(call, f"cancel {op.short_id} ({op.label})")
    return op.cancelled_tx
