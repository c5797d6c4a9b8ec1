"""Bad input at the CLI's edges: one clear line on stderr, exit code 1, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def keeper(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keeper", *args], capture_output=True, text=True, timeout=60, env=env)


def assert_one_line_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "deployment.json"
    zero = "0x" + "00" * 19 + "01"
    path.write_text(
        json.dumps(
            {
                "chain_id": 31337,
                "settlement_decimals": 6,
                "oracle": zero,
                "vault": zero,
                "engine": zero,
                "settlement_token": zero,
            }
        )
    )
    return path


def test_unreachable_rpc(manifest):
    out = keeper("account", "0x" + "11" * 20, "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest))
    assert_one_line_error(out, "cannot reach RPC")


@pytest.fixture
def html_server():
    """An HTTP server that is up but answers every request with an HTML page."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            page = b"<html><body>Welcome to nginx!</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_rpc_answering_html_is_not_unreachable(manifest, html_server):
    out = keeper("account", "0x" + "11" * 20, "--rpc", html_server, "--manifest", str(manifest))
    assert_one_line_error(out, f"RPC at {html_server} answered badly", "not valid JSON")
    assert "cannot reach" not in out.stderr
    env = {**__import__("os").environ, "KEEPER_PRIVATE_KEY": "0x" + "01" * 32}
    out = keeper("run", "--rpc", html_server, "--manifest", str(manifest), env=env)
    assert_one_line_error(out, f"RPC at {html_server} answered badly")


def test_rpc_url_without_scheme(manifest):
    out = keeper("account", "0x" + "11" * 20, "--rpc", "localhost:8545", "--manifest", str(manifest))
    assert_one_line_error(out, "http://")


def test_missing_manifest(tmp_path):
    out = keeper("account", "0x" + "11" * 20, "--rpc", "http://127.0.0.1:9", "--manifest", str(tmp_path / "nope.json"))
    assert_one_line_error(out, "not found")


def test_malformed_manifest(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    out = keeper("account", "0x" + "11" * 20, "--rpc", "http://127.0.0.1:9", "--manifest", str(bad))
    assert_one_line_error(out, "not valid JSON")


def test_manifest_missing_fields(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"chain_id": 1}))
    out = keeper("account", "0x" + "11" * 20, "--rpc", "http://127.0.0.1:9", "--manifest", str(bad))
    assert_one_line_error(out, "lacks")


def test_bad_address(manifest):
    out = keeper("account", "0x1234", "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest))
    assert_one_line_error(out, "not an address")


def test_run_without_key(manifest):
    env = {k: v for k, v in __import__("os").environ.items() if k != "KEEPER_PRIVATE_KEY"}
    out = keeper("run", "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest), env=env)
    assert_one_line_error(out, "KEEPER_PRIVATE_KEY")


@pytest.mark.parametrize(
    "key, needle",
    [
        ("0" * 64, "zero"),
        ("0x" + "0" * 64, "zero"),
        ("0x" + "f" * 64, "group order"),
        ("0x1234", "64 hex digits"),
        ("zz" * 32, "64 hex digits"),
    ],
)
def test_run_with_invalid_key(manifest, key, needle):
    """A placeholder or out-of-range key is refused in one line naming the variable, before any RPC."""
    env = {**__import__("os").environ, "KEEPER_PRIVATE_KEY": key}
    out = keeper("run", "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest), env=env)
    assert_one_line_error(out, "KEEPER_PRIVATE_KEY", needle)
    assert key not in out.stderr


def test_replay_malformed_csv(tmp_path):
    csv = tmp_path / "eth.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n2020-03-12T00:00:00Z,1,1,1,abc,1\n")
    out = keeper("replay", "--prices", f"ETH={csv}", "--prices", f"BTC={csv}")
    assert_one_line_error(out, "eth.csv")


def test_replay_needs_both_assets(tmp_path):
    csv = tmp_path / "eth.csv"
    csv.write_text(
        "timestamp,open,high,low,close,volume\n2020-03-12T00:00:00Z,1,1,1,2,1\n2020-03-12T01:00:00Z,1,1,1,2,1\n"
    )
    out = keeper("replay", "--prices", f"ETH={csv}")
    assert_one_line_error(out, "BTC")


def test_replay_same_symbol_twice(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for f in (a, b):
        f.write_text(
            "timestamp,open,high,low,close,volume\n2020-03-12T00:00:00Z,1,1,1,2,1\n2020-03-12T01:00:00Z,1,1,1,2,1\n"
        )
    out = keeper("replay", "--prices", f"ETH={a}", "--prices", f"ETH={b}", "--prices", f"BTC={a}")
    assert_one_line_error(out, "--prices ETH is given twice", "a.csv", "b.csv")


def test_replay_unknown_symbol(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text(
        "timestamp,open,high,low,close,volume\n2020-03-12T00:00:00Z,1,1,1,2,1\n2020-03-12T01:00:00Z,1,1,1,2,1\n"
    )
    out = keeper("replay", "--prices", f"ETH={a}", "--prices", f"BTC={a}", "--prices", f"SOL={a}")
    assert_one_line_error(out, "--prices SOL", "no price id SOL", "known: ETH, BTC")


def test_replay_bad_price_argument():
    out = keeper("replay", "--prices", "eth.csv")
    assert_one_line_error(out, "SYMBOL=")


def test_replay_bad_window_date(tmp_path):
    csv = tmp_path / "eth.csv"
    csv.write_text(
        "timestamp,open,high,low,close,volume\n2020-03-12T00:00:00Z,1,1,1,2,1\n2020-03-12T01:00:00Z,1,1,1,2,1\n"
    )
    out = keeper("replay", "--prices", f"ETH={csv}", "--prices", f"BTC={csv}", "--start", "yesterday")
    assert_one_line_error(out, "yesterday")


def test_replay_rejects_zero_accounts():
    out = keeper("replay", "--accounts", "0")
    assert_one_line_error(out, "--accounts")


@pytest.mark.parametrize("value", ["abc", "-5", "1.5", "1e20", "", str(10**15 + 1)])
def test_replay_insurance_fund_is_whole_usd(value):
    out = keeper("replay", "--insurance-fund", value)
    assert_one_line_error(out, "--insurance-fund is whole USD", repr(value))
    out = keeper("replay", "--backstop", value)
    assert_one_line_error(out, "--backstop is whole USD", repr(value))


@pytest.mark.parametrize(
    "args, needle",
    [
        (("--plot", "crash.jpg"), "ending in .png"),
        (("--plot", "crash.png", "--no-plot"), "--plot and --no-plot"),
        (("--plot", "."), "--plot"),
    ],
)
def test_replay_plot_path(args, needle):
    """Refused before any chain is started."""
    assert_one_line_error(keeper("replay", *args), needle)


@pytest.mark.parametrize(
    "command", [(), ("run",), ("account",), ("params",), ("params", "show"), ("dev",), ("replay",)]
)
def test_short_help_flag(command):
    """`-h` is `--help` on every command, as operators type it."""
    short, long = keeper(*command, "-h"), keeper(*command, "--help")
    assert short.returncode == 0 and short.stdout.startswith("Usage: ")
    assert short.stdout == long.stdout


def test_rpc_url_is_the_foundry_style_name_for_rpc(manifest):
    """`--rpc-url` (forge, cast) is accepted wherever `--rpc` is, with the same one-line error."""
    out = keeper("account", "0x" + "11" * 20, "--rpc-url", "http://127.0.0.1:9", "--manifest", str(manifest))
    assert_one_line_error(out, "127.0.0.1:9")


def test_from_without_dry_run(manifest):
    """`--from` names the address a dry run simulates from; a keeper that sends uses its key's."""
    out = keeper("run", "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest), "--from", "0x" + "11" * 20)
    assert_one_line_error(out, "--from is only for --dry-run")


def test_dry_run_from_not_an_address(manifest):
    args = ("run", "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest), "--dry-run", "--from", "0x1234")
    assert_one_line_error(keeper(*args), "--from: not an address", "'0x1234'")


def test_dry_run_without_key_or_from(manifest):
    env = {k: v for k, v in __import__("os").environ.items() if k != "KEEPER_PRIVATE_KEY"}
    out = keeper("run", "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest), "--dry-run", env=env)
    assert_one_line_error(out, "KEEPER_PRIVATE_KEY", "or give --from ADDRESS with --dry-run")


@pytest.mark.parametrize("url", ["localhost:8545", "ftp://relay.example"])
def test_send_rpc_not_a_url(manifest, url):
    env = {**__import__("os").environ, "KEEPER_PRIVATE_KEY": "0x" + "01" * 32}
    out = keeper("run", "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest), "--send-rpc", url, env=env)
    assert_one_line_error(out, "command line: send_rpc: must be one RPC URL starting with http://", repr(url))
    env["KEEPER_SEND_RPC"] = url
    out = keeper("run", "--rpc", "http://127.0.0.1:9", "--manifest", str(manifest), env=env)
    assert_one_line_error(out, "environment KEEPER_SEND_RPC: send_rpc:")


def test_run_with_unreachable_websocket_rpc(manifest):
    env = {**__import__("os").environ, "KEEPER_PRIVATE_KEY": "0x" + "01" * 32}
    out = keeper("run", "--rpc", "ws://127.0.0.1:9", "--manifest", str(manifest), env=env)
    assert_one_line_error(out, "cannot reach RPC at ws://127.0.0.1:9")
