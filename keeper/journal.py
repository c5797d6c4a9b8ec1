"""A persistent, write-ahead journal of the keeper's transactions (one row per nonce).

The transaction manager writes a record, including the signed raw transaction, *before* it
broadcasts, so a crash between the two is reconciled on restart (the raw transaction is sent
again) instead of the nonce being re-used or the intent forgotten.

Storage is one sqlite3 file (stdlib): every write is one transaction, committed with
`synchronous=FULL` (fsync'd) before `put` returns. `TxJournal(None)` keeps the same table in
memory (tests, or a keeper that accepts losing its pending transactions on restart).

One writer per journal: the file is locked with `fcntl.flock` for the journal's lifetime, so a
second keeper started on the same journal stops with `JournalLocked`. Two processes sending
from the same key with *different* journals are not supported: nothing can stop them from
using the same nonce.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from keeper.errors import KeeperError

SCHEMA_VERSION = "1"
# status of a record: still replaceable / finished (see TxRecord.status)
PENDING = "pending"
MINED = "mined"
FAILED = "failed"
REPLACED_BY_OTHER = "replaced-by-other"
STATUSES = (PENDING, MINED, FAILED, REPLACED_BY_OTHER)


class JournalError(KeeperError, RuntimeError):
    """The journal file cannot be used (unreadable, or written for another key or chain)."""


class JournalLocked(JournalError):
    """Another process holds the journal."""


@dataclass
class TxRecord:
    """One logical transaction: one nonce, possibly broadcast several times with rising fees.

    Amounts in wei (`max_fee`, `tip` per gas; `value`), `gas` in gas units. `hashes` lists every
    signed version (original first, newest last); `raw_tx` is the newest signed transaction
    (0x hex), re-broadcast if the node forgets it. `sent_block` is the block at which the newest
    version was signed (bumps are timed from it). `status`: "pending" | "mined" | "failed"
    (mined with receipt status 0) | "replaced-by-other" (the nonce was used by a transaction
    that is not one of `hashes`). `mined_hash` is the hash that was mined, if any.
    """

    key: str
    nonce: int
    hashes: list[str]
    max_fee: int
    tip: int
    gas: int
    to: str
    data: str
    sent_block: int
    bumps: int = 0
    status: str = PENDING
    raw_tx: str = ""
    value: int = 0
    mined_hash: str = ""


_COLUMNS = (
    "nonce",
    "key",
    "hashes",
    "max_fee",
    "tip",
    "gas",
    "to_address",
    "data",
    "value",
    "sent_block",
    "bumps",
    "status",
    "raw_tx",
    "mined_hash",
)


class TxJournal:
    """Transaction records of one key on one chain, keyed by nonce.

    `path`: the sqlite3 file (created if missing; its folder must exist), or None for memory.
    Raises JournalLocked if another process (or another TxJournal in this one) holds the file,
    JournalError if it is not a journal.
    """

    def __init__(self, path: Path | str | None):
        self.path = Path(path) if path is not None else None
        self._lock_fd: int | None = None
        if self.path is not None:
            if not self.path.parent.is_dir():
                raise JournalError(f"transaction journal {self.path}: folder {self.path.parent} does not exist")
            self._lock_fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise JournalLocked(
                    f"transaction journal {self.path} is in use by another keeper process; "
                    "run one keeper per key and journal"
                ) from None
        try:
            # autocommit: every statement is its own (atomic, fsync'd) transaction
            self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path), isolation_level=None)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS txs (nonce INTEGER PRIMARY KEY, key TEXT NOT NULL, hashes TEXT NOT NULL,"
                " max_fee TEXT NOT NULL, tip TEXT NOT NULL, gas INTEGER NOT NULL, to_address TEXT NOT NULL,"
                " data TEXT NOT NULL, value TEXT NOT NULL, sent_block INTEGER NOT NULL, bumps INTEGER NOT NULL,"
                " status TEXT NOT NULL, raw_tx TEXT NOT NULL, mined_hash TEXT NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS txs_status ON txs(status)")
            version = self._meta("schema")
            if version is None:
                self._set_meta("schema", SCHEMA_VERSION)
            elif version != SCHEMA_VERSION:
                raise JournalError(f"transaction journal {self.path} has schema {version}, expected {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            self.close()
            raise JournalError(f"transaction journal {self.path} is not readable as a journal: {e}") from None

    # ------------------------------------------------------------------ identity

    def bind(self, address: str, chain_id: int, genesis_hash: str) -> None:
        """Tie the journal to one sender on one chain; raise JournalError if it belongs to another."""
        want = {"address": address.lower(), "chain_id": str(chain_id), "genesis": genesis_hash.lower()}
        for name, value in want.items():
            have = self._meta(name)
            if have is None:
                self._set_meta(name, value)
            elif have != value:
                raise JournalError(f"transaction journal {self.path} belongs to {name} {have}, not {value}")

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    # ------------------------------------------------------------------ records

    def put(self, rec: TxRecord) -> None:
        """Insert or replace the record for `rec.nonce`; durable when this returns."""
        if rec.status not in STATUSES:
            raise ValueError(f"unknown transaction status {rec.status!r}")
        row = (
            rec.nonce, rec.key, json.dumps(rec.hashes), str(rec.max_fee), str(rec.tip), rec.gas, rec.to, rec.data,
            str(rec.value), rec.sent_block, rec.bumps, rec.status, rec.raw_tx, rec.mined_hash,
        )  # fmt: skip
        self._db.execute(
            f"INSERT OR REPLACE INTO txs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", row
        )

    def delete(self, nonce: int) -> None:
        """Forget the record of `nonce` (a transaction the node refused: it holds no nonce)."""
        self._db.execute("DELETE FROM txs WHERE nonce = ?", (nonce,))

    def get(self, nonce: int) -> TxRecord | None:
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM txs WHERE nonce = ?", (nonce,)).fetchone()
        return None if row is None else _record(row)

    def pending(self) -> list[TxRecord]:
        """Pending records, lowest nonce first."""
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM txs WHERE status = ? ORDER BY nonce", (PENDING,))
        return [_record(r) for r in rows]

    def records(self) -> list[TxRecord]:
        """Every record, lowest nonce first."""
        return [_record(r) for r in self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM txs ORDER BY nonce")]

    def pending_keys(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT key FROM txs WHERE status = ?", (PENDING,))}

    def is_pending(self, key: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM txs WHERE status = ? AND key = ? LIMIT 1", (PENDING, key)).fetchone()
            is not None
        )

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the file and release the lock (idempotent)."""
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
            self._db = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> TxJournal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _record(row) -> TxRecord:
    nonce, key, hashes, max_fee, tip, gas, to, data, value, sent_block, bumps, status, raw_tx, mined_hash = row
    return TxRecord(
        key=key, nonce=nonce, hashes=json.loads(hashes), max_fee=int(max_fee), tip=int(tip), gas=gas, to=to, data=data,
        sent_block=sent_block, bumps=bumps, status=status, raw_tx=raw_tx, value=int(value), mined_hash=mined_hash,
    )  # fmt: skip
