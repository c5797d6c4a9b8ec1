"""Pieces shared by the `keeper` command groups: the --rpc/--manifest options, the signing-key
options of the keyed commands, and turning expected failures into one-line errors."""

from __future__ import annotations

import functools
import sys
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


def key_options(default_env: str, whose: str):
    """--private-key-env, --keystore and --password-env: where a keyed command's signing key
    comes from (one of the first two; read by `signing_key`)."""

    def decorate(fn):
        fn = click.option(
            "--password-env",
            default=None,
            metavar="VAR",
            help="Environment variable holding the keystore's password [default: KEEPER_KEYSTORE_PASSWORD; "
            "unset: asked on a terminal].",
        )(fn)
        fn = click.option(
            "--keystore",
            type=click.Path(path_type=Path),
            default=None,
            metavar="PATH",
            help=f"Encrypted keystore (eth-account JSON v3) holding {whose}'s key, instead of --private-key-env.",
        )(fn)
        return click.option(
            "--private-key-env",
            default=None,
            metavar="VAR",
            help=f"Environment variable holding {whose}'s key [default: {default_env}].",
        )(fn)

    return decorate


def signing_key(
    private_key_env: str | None,
    keystore: Path | None,
    password_env: str | None,
    default_env: str,
    what: str = "private key",
):
    """The command's SigningKey (keeper.settings.load_signing_key); a keystore's password is
    asked, hidden, only when stdin is a terminal and the password variable is unset."""
    from keeper.settings import load_signing_key

    prompt = (lambda text: click.prompt(text, hide_input=True, err=True)) if sys.stdin.isatty() else None
    return load_signing_key(private_key_env, default_env, keystore, password_env, what=what, prompt=prompt)
