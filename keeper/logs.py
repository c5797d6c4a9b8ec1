"""Logging set-up: readable text (rich on a terminal) or one JSON object per line
(python-json-logger) for log shippers. Extra fields passed with `extra={...}` appear as JSON
keys, e.g. `log.info("sent", extra={"account": a, "tx": h})`."""

from __future__ import annotations

import logging
import sys
from typing import IO

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup_logging(level: str = "INFO", fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """Configure the root logger once (replacing earlier handlers); returns the handler.

    fmt : "text" (rich on a terminal, plain lines otherwise) or "json" (keys timestamp, level,
        logger, message, plus any `extra` fields).
    """
    stream = stream or sys.stderr
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(stream)
        handler.setFormatter(
            JsonFormatter(
                JSON_FIELDS,
                rename_fields={"asctime": "timestamp", "levelname": "level", "name": "logger"},
                timestamp=False,
            )
        )
    elif fmt == "text":
        if stream.isatty():
            from rich.console import Console
            from rich.logging import RichHandler

            handler = RichHandler(console=Console(file=stream), show_path=False)
            handler.setFormatter(logging.Formatter("%(message)s"))
        else:
            handler = logging.StreamHandler(stream)
            handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        raise ValueError(f"log format must be text or json, got {fmt!r}")
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # web3 and urllib3 at DEBUG drown the keeper's own lines
    for noisy in ("web3", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
    return handler
