"""Keeper settings: file, then KEEPER_* environment, then options; one clear error per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from keeper.settings import KeeperSettings, SettingsError, load_settings, validate_for_run

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "keeper.example.yaml"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "keeper.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment():
    s = load_settings(env={})
    assert s == KeeperSettings()
    assert (
        s.min_profit_usd == 0.0
        and s.gas_margin == 0.25
        and s.liquidation_gas_floor == 200_000
        and s.metrics_port is None
        and s.log_format == "text"
    )


def test_example_file_loads():
    s = load_settings(EXAMPLE, env={})
    assert len(s.rpc_urls) >= 2 and s.private_key_env == "KEEPER_PRIVATE_KEY"
    assert s.gas.max_fee_wei == int(s.gas.max_fee_gwei * 10**9)


def test_file_then_environment_then_options(tmp_path):
    path = write(
        tmp_path,
        "rpc_urls: [http://a:8545, http://b:8545]\nmin_profit_usd: 5\ngas: {max_fee_gwei: 100}\nmetrics_port: 9100\n",
    )
    env = {
        "KEEPER_MIN_PROFIT_USD": "7.5",
        "KEEPER_GAS_MAX_FEE_GWEI": "200",
        "KEEPER_STATE_DIR": "/var/lib/keeper",
        "KEEPER_LOG_FORMAT": "",
    }
    s = load_settings(path, env=env, metrics_port=9200, min_profit_usd=None)
    assert s.rpc_urls == ("http://a:8545", "http://b:8545")
    assert s.min_profit_usd == 7.5  # environment over file; None option = not given
    assert s.gas.max_fee_gwei == 200 and s.gas.max_fee_wei == 200 * 10**9
    assert s.state_dir == Path("/var/lib/keeper")
    assert s.metrics_port == 9200  # option over file
    assert s.log_format == "text"  # an empty variable is unset


def test_rpc_urls_from_environment_list():
    s = load_settings(env={"KEEPER_RPC_URLS": "http://a:1, https://b/key"})
    assert s.rpc_urls == ("http://a:1", "https://b/key")
    assert load_settings(env={"KEEPER_RPC_URL": "http://one:1"}).rpc_urls == ("http://one:1",)


def test_websocket_rpc_urls_and_a_send_endpoint(tmp_path):
    """ws:// and wss:// are RPC URLs; `send_rpc` (file, KEEPER_SEND_RPC, option) is one URL."""
    path = tmp_path / "keeper.yaml"
    path.write_text("rpc_urls: [ws://a:8546, https://b/key]\nsend_rpc: https://relay.example/fast\n")
    s = load_settings(path, env={})
    assert s.rpc_urls == ("ws://a:8546", "https://b/key") and s.send_rpc == "https://relay.example/fast"
    assert load_settings(env={}).send_rpc is None
    assert load_settings(path, env={"KEEPER_SEND_RPC": "wss://relay/x"}).send_rpc == "wss://relay/x"
    assert load_settings(path, env={"KEEPER_SEND_RPC": "wss://relay/x"}, send_rpc="http://c:1").send_rpc == "http://c:1"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("private_key: '0xabc'\n", "never put a private key"),
        ("rpc_url: http://a\n", "unknown field 'rpc_url'"),
        ("rpc_urls: [localhost:8545]\n", "an RPC URL must start with http://, https://, ws:// or wss://"),
        ("send_rpc: [http://a:1, http://b:1]\n", "send_rpc: must be one RPC URL"),
        (
            "send_rpc: relay:8545\n",
            "send_rpc: must be one RPC URL starting with http://, https://, ws:// or wss://, got 'relay:8545'",
        ),
        ("rpc_urls: []\n", "non-empty list"),
        ("min_profit_usd: abc\n", "min_profit_usd"),
        ("min_profit_usd: null\n", "min_profit_usd: must be a number (USD; 0 = never at a loss) or always"),
        ("gas_margin: -0.1\n", "gas_margin: must be in [0, 100]"),
        ("liquidation_gas_floor: 1.5\n", "liquidation_gas_floor: must be an integer"),
        ("metrics_port: 70000\n", "metrics_port: must be in [1, 65535]"),
        ("log_format: xml\n", "text or json"),
        ("gas: {max_fee_gwei: -1}\n", "gas.max_fee_gwei"),
        ("gas: {tip: 1}\n", "gas: unknown field 'tip'"),
        ("stale_after_seconds: .nan\n", "stale_after_seconds"),
        ("reorg_depth: 1.5\n", "reorg_depth: must be an integer"),
        ("- a\n- b\n", "must be a mapping"),
        ("a: [\n", "not valid YAML (line"),
    ],
)
def test_bad_file_values_name_file_and_field(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as e:
        load_settings(path, env={})
    assert needle in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_min_profit_always_keeps_the_old_liquidate_all(tmp_path):
    """`always` (file, environment or option, any case) is None in the settings: liquidate all;
    a negative number accepts a loss up to that much; the default is 0, never at a loss."""
    assert load_settings(write(tmp_path, "min_profit_usd: always\n"), env={}).min_profit_usd is None
    assert load_settings(env={"KEEPER_MIN_PROFIT_USD": "ALWAYS"}).min_profit_usd is None
    assert load_settings(env={}, min_profit_usd="always").min_profit_usd is None
    assert load_settings(env={}, min_profit_usd="-2.5").min_profit_usd == -2.5
    assert load_settings(env={"KEEPER_GAS_MARGIN": "0.5", "KEEPER_LIQUIDATION_GAS_FLOOR": "150000"}).gas_margin == 0.5


def test_bad_environment_value_names_the_source():
    with pytest.raises(SettingsError, match="environment KEEPER_.*: min_profit_usd: must be a number"):
        load_settings(env={"KEEPER_MIN_PROFIT_USD": "lots"})


def test_missing_file():
    with pytest.raises(SettingsError, match="settings file not found"):
        load_settings("/nonexistent/keeper.yaml", env={})


def test_run_needs_rpc_and_manifest():
    with pytest.raises(SettingsError, match="no RPC URL"):
        validate_for_run(load_settings(env={}))
    with pytest.raises(SettingsError, match="no deployment manifest"):
        validate_for_run(load_settings(env={"KEEPER_RPC_URL": "http://a:1"}))


def test_cli_run_with_a_bad_settings_file_gives_one_line(tmp_path):
    import subprocess
    import sys

    path = write(tmp_path, "gas: {max_fee_gwei: lots}\n")
    out = subprocess.run(
        [sys.executable, "-m", "keeper", "run", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and len(lines) == 1 and "Traceback" not in out.stderr
    assert "gas.max_fee_gwei" in lines[0] and str(path) in lines[0]
