"""Pieces shared by the `keeper` command groups: the --rpc/--manifest options and turning
expected failures into one-line errors."""

from __future__ import annotations

import functools
from pathlib import Path

import click
from web3.exceptions import ContractLogicError, Web3RPCError


def one_line_errors(*expected: type[Exception]):
    """Decorator: the `expected` exceptions (the command groups pass `keeper.errors.KeeperError`,
    the root of the errors the keeper raises on purpose), and a call the node refuses, become
    one-line click errors (exit code 1) instead of tracebacks."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except expected as e:
                raise click.ClickException(str(e)) from None
            except (ContractLogicError, Web3RPCError) as e:
                raise click.ClickException(f"the node refused a call: {e}") from None

        return wrapper

    return decorate


def chain_options(fn):
    """--rpc (or KEEPER_RPC_URL) and --manifest (or KEEPER_MANIFEST)."""
    fn = click.option(
        "--manifest",
        required=True,
        type=click.Path(path_type=Path),
        envvar="KEEPER_MANIFEST",
        help="Deployment manifest JSON (or KEEPER_MANIFEST).",
    )(fn)
    return click.option(
        "--rpc", "--rpc-url", required=True, envvar="KEEPER_RPC_URL", help="JSON-RPC endpoint (or KEEPER_RPC_URL)."
    )(fn)
