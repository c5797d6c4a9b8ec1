"""Signing keys of the keyed commands (`keeper run`, `keeper params queue/execute/cancel`): from an
environment variable or an encrypted eth-account keystore, loaded in one place
(keeper.settings.load_signing_key); every problem is one line that never shows the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner
from eth_account import Account

from keeper import cli_common
from keeper.settings import SettingsError, load_signing_key
from tests.keeper.test_cli_errors import assert_one_line_error

KEY = "0x" + "4c" * 32
ADDRESS = Account.from_key(KEY).address
PASSWORD = "correct horse"


@pytest.fixture
def keystore(tmp_path):
    path = tmp_path / "keeper.json"
    path.write_text(json.dumps(Account.encrypt(KEY, PASSWORD, kdf="pbkdf2", iterations=1000)))
    return path


def test_key_from_the_environment_as_before():
    k = load_signing_key(None, "KEEPER_PRIVATE_KEY", env={"KEEPER_PRIVATE_KEY": KEY})
    assert (k.key, k.source) == (KEY, "KEEPER_PRIVATE_KEY")
    k = load_signing_key("OTHER", "KEEPER_PRIVATE_KEY", env={"OTHER": KEY[2:].upper()})
    assert (k.key, k.source) == (KEY, "OTHER")
    assert KEY not in repr(k) and KEY[2:] not in repr(k)
    with pytest.raises(SettingsError, match="^no governance key: set the environment variable GOV"):
        load_signing_key(None, "GOV", env={}, what="governance key")


def test_key_from_a_keystore_with_the_password_from_the_environment(keystore):
    k = load_signing_key(None, "X", keystore, env={"KEEPER_KEYSTORE_PASSWORD": PASSWORD})
    assert (k.key, k.source) == (KEY, f"keystore {keystore}")
    k = load_signing_key(None, "X", keystore, "MY_PW", env={"MY_PW": PASSWORD, "KEEPER_KEYSTORE_PASSWORD": "no"})
    assert k.key == KEY


def test_the_password_is_asked_only_when_its_variable_is_unset(keystore):
    asked = []

    def prompt(text):
        asked.append(text)
        return PASSWORD

    assert load_signing_key(None, "X", keystore, env={}, prompt=prompt).key == KEY
    assert asked == [f"Password of keystore {keystore}"]
    with pytest.raises(SettingsError, match="no password for keystore .*KEEPER_KEYSTORE_PASSWORD .*terminal"):
        load_signing_key(None, "X", keystore, env={})


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read keystore"),
        ("{not json", "is not a keystore: not valid JSON"),
        ("[1, 2]", "is not an eth-account keystore"),
        ('{"version": 3}', "is not an eth-account keystore"),
        ('{"version": 3, "crypto": {"kdf": "pbkdf2"}}', "malformed keystore"),
        (b"\xff\xfe\x00", "not a UTF-8 text file"),
    ],
)
def test_unreadable_or_malformed_keystores(tmp_path, content, message):
    path = tmp_path / "ks.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError, match=message) as e:
        load_signing_key(None, "X", path, env={"KEEPER_KEYSTORE_PASSWORD": PASSWORD})
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_wrong_password_and_conflicting_options(keystore):
    with pytest.raises(SettingsError, match=f"^wrong password for keystore {keystore}$"):
        load_signing_key(None, "X", keystore, env={"KEEPER_KEYSTORE_PASSWORD": "wrong"})
    with pytest.raises(SettingsError, match="give either --private-key-env or --keystore, not both"):
        load_signing_key("KEEPER_PRIVATE_KEY", "X", keystore, env={"KEEPER_PRIVATE_KEY": KEY})
    with pytest.raises(SettingsError, match="--password-env .* --keystore"):
        load_signing_key(None, "X", None, "MY_PW", env={"X": KEY})


def test_commands_prompt_hidden_on_a_terminal_only(keystore, monkeypatch):
    @click.command()
    @cli_common.key_options("SOME_KEY", "someone")
    def show(private_key_env, keystore, password_env):
        click.echo(cli_common.signing_key(private_key_env, keystore, password_env, "SOME_KEY").key == KEY)

    monkeypatch.delenv("KEEPER_KEYSTORE_PASSWORD", raising=False)
    result = CliRunner().invoke(show, ["--keystore", str(keystore)], input=PASSWORD + "\n")
    assert isinstance(result.exception, SettingsError) and "no password for keystore" in str(result.exception)
    monkeypatch.setattr(cli_common, "sys", SimpleNamespace(stdin=SimpleNamespace(isatty=lambda: True)))
    result = CliRunner().invoke(show, ["--keystore", str(keystore)], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert result.output.endswith("True\n") and PASSWORD not in result.output  # hidden input


def keeper(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keeper", *args],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def base_env():
    drop = {"KEEPER_PRIVATE_KEY", "GOVERNANCE_PRIVATE_KEY", "KEEPER_KEYSTORE_PASSWORD"}
    return {k: v for k, v in os.environ.items() if k not in drop}


MANIFEST = ("--rpc", "http://127.0.0.1:9", "--manifest", "nope.json")


@pytest.mark.parametrize(
    "command",
    [("run",), ("params", "queue", "changes.yaml"), ("params", "execute"), ("params", "cancel", "--all")],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_keyed_command_takes_a_keystore(keystore, base_env, command):
    """A wrong password is one line before any file or RPC is read; the right one gets as far as
    the changes file or the manifest."""
    env = {**base_env, "KEEPER_KEYSTORE_PASSWORD": "bad"}
    out = keeper(*command, *MANIFEST, "--keystore", str(keystore), env=env)
    assert_one_line_error(out, f"wrong password for keystore {keystore}")
    assert KEY[2:] not in out.stderr + out.stdout
    env = {**base_env, "KEEPER_KEYSTORE_PASSWORD": PASSWORD}
    out = keeper(*command, *MANIFEST, "--keystore", str(keystore), env=env)
    assert_one_line_error(out, "file not found" if command[1:2] == ("queue",) else "nope.json")


def test_keystore_problems_on_the_command_line(keystore, base_env):
    out = keeper("run", *MANIFEST, "--keystore", str(keystore), env=base_env)  # no terminal to ask on
    assert_one_line_error(out, "no password for keystore", "KEEPER_KEYSTORE_PASSWORD")
    out = keeper("params", "execute", *MANIFEST, "--keystore", str(keystore.with_name("none.json")), env=base_env)
    assert_one_line_error(out, "cannot read keystore", "none.json")
    out = keeper("run", *MANIFEST, "--keystore", str(keystore), "--private-key-env", "K", env=base_env)
    assert_one_line_error(out, "give either --private-key-env or --keystore, not both")
