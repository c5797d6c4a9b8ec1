"""Bad input at the keeper's edges: every malformed, missing, negative, NaN, huge or wrong-type
input gives one clear error - the module's own exception type, one line, naming the problem -
never a bare traceback from deep inside and never a silently wrong number.

Edges: the protocol config (keeper.config.load_config -> ConfigError), price CSV files
(keeper.marketdata.prices.load_price_csv -> PriceDataError; the common cases are in test_prices.py),
the deployment manifest (keeper.chain.manifest.load_manifest -> ManifestError), RPC answers
(keeper.chain.client.connect -> ChainError) and the risk engine's inputs (keeper.risk.margin ->
ValueError / TypeError).

Cases that slip through today are marked xfail(strict=True) with what happens instead; once the
module is fixed the test passes, strict xfail fails the run, and the marker should be removed.
docs/reliability.md lists every case with the error line users see.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from keeper.chain.client import ChainError, connect, connect_any
from keeper.chain.manifest import ManifestError, load_manifest
from keeper.config import DEFAULT_CONFIG, ConfigError, load_config
from keeper.marketdata.prices import PriceDataError, align, load_price_csv
from keeper.risk.margin import AccountBook, MarketTable, RiskParams, margin, margin_float
from keeper.units import WAD


def slip(reason: str):
    """A case the module does not handle yet: `reason` says what happens instead."""
    return pytest.mark.xfail(strict=True, reason=reason)


def one_line(exc: BaseException, path: Path | str | None = None) -> str:
    """The error message, checked to be one line; the file path (which holds the test's name
    in tmp_path) is removed so that needles cannot match it by accident."""
    msg = str(exc)
    assert msg.strip() and "\n" not in msg, repr(msg)
    if path is not None:
        assert str(path) in msg, msg
        msg = msg.replace(str(path), "<path>")
    return msg


def assert_needles(msg: str, *needles: str) -> None:
    for needle in needles:
        assert needle.lower() in msg.lower(), f"{needle!r} not in {msg!r}"


# ---------------------------------------------------------------- protocol config

BASE_CONFIG = yaml.safe_load(DEFAULT_CONFIG.read_text())


def config_file(tmp_path: Path, mutate=None, text: str | bytes | None = None) -> Path:
    path = tmp_path / "protocol.yaml"
    if text is not None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    else:
        raw = copy.deepcopy(BASE_CONFIG)
        if mutate is not None:
            mutate(raw)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def assert_config_error(path: Path, *needles: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = one_line(exc.value, path)
    assert_needles(msg, *needles)
    return msg


def setter(section: str, index: int | None, key: str, value):
    def mutate(raw):
        target = raw[section] if index is None else raw[section][index]
        target[key] = value

    return mutate


def test_config_baseline_loads(tmp_path):
    cfg = load_config(config_file(tmp_path))
    assert cfg.assets[0].haircut == 85 * WAD // 100


def test_config_missing_file(tmp_path):
    assert_config_error(tmp_path / "protocol.yaml", "file not found")


@pytest.mark.parametrize(
    "text",
    ["settlement: [1, 2\n", "settlement:\n\t- tab\n", "a: b: c\n", "{unclosed: 1\n"],
    ids=["unclosed-list", "tab-indent", "nested-colon", "unclosed-map"],
)
def test_config_not_yaml(tmp_path, text):
    assert_config_error(config_file(tmp_path, text=text), "not valid YAML")


@pytest.mark.parametrize(
    "text", ["", "- 1\n- 2\n", "42\n", "just a string\n"], ids=["empty", "list", "number", "string"]
)
def test_config_not_a_mapping(tmp_path, text):
    # the message names the first section it cannot find at the top level
    assert_config_error(config_file(tmp_path, text=text), "top level", "missing 'settlement'")


@pytest.mark.parametrize("section", ["settlement", "price_ids", "underlyings", "markets", "liquidation", "trading"])
def test_config_missing_section(tmp_path, section):
    assert_config_error(config_file(tmp_path, lambda raw: raw.pop(section)), f"missing '{section}'")


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("assets", "decimals"),
        ("assets", "haircut"),
        ("price_ids", "heartbeat"),
        ("underlyings", "mm_rate"),
        ("markets", "name"),
    ],
)
def test_config_missing_field(tmp_path, section, key):
    assert_config_error(config_file(tmp_path, lambda raw: raw[section][0].pop(key)), f"{section}: missing '{key}'")


def test_config_missing_fraction_in_section(tmp_path):
    assert_config_error(
        config_file(tmp_path, lambda raw: raw["liquidation"].pop("target")), "liquidation: missing 'target'"
    )


@pytest.mark.parametrize(
    ("value", "needle"),
    [(".nan", "not a finite number"), (".inf", "not a finite number"), ("-.inf", "not a finite number")],
)
def test_config_haircut_not_finite(tmp_path, value, needle):
    text = DEFAULT_CONFIG.read_text().replace(
        "haircut: 0.85, deposit_cap: 10000000", f"haircut: {value}, deposit_cap: 10000000"
    )
    assert_config_error(config_file(tmp_path, text=text), needle)


def test_config_fraction_with_more_than_18_decimals(tmp_path):
    path = config_file(tmp_path, setter("assets", 0, "haircut", "0.1234567890123456789"))
    assert_config_error(path, "more than 18 decimals", "0.1234567890123456789")


def test_config_penalty_with_more_than_18_decimals(tmp_path):
    path = config_file(tmp_path, setter("liquidation", None, "penalty", "0.0200000000000000001"))
    assert_config_error(path, "more than 18 decimals")


@pytest.mark.parametrize("section", ["assets", "underlyings"])
def test_config_unknown_price_id(tmp_path, section):
    path = config_file(tmp_path, setter(section, 0, "price_id", "DOGE"))
    assert_config_error(path, f"{section}: unknown price id 'DOGE'")


def test_config_unknown_underlying(tmp_path):
    path = config_file(tmp_path, setter("markets", 0, "underlying", "SOL"))
    assert_config_error(path, "market ETH-PERP: unknown underlying 'SOL'")


def test_config_decimals_not_a_number(tmp_path):
    # ConfigError, but the text is Python's ("invalid literal for int() with base 10: 'eighteen'")
    assert_config_error(config_file(tmp_path, setter("assets", 0, "decimals", "eighteen")), "eighteen")


def test_config_expiry_not_a_number(tmp_path):
    assert_config_error(config_file(tmp_path, setter("markets", 1, "expiry_days", "soon")), "soon")


def test_config_entry_not_a_mapping(tmp_path):
    assert_config_error(
        config_file(tmp_path, lambda raw: raw["markets"].__setitem__(0, "ETH-PERP")), "markets: missing 'name'"
    )


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("abc", id="abc"),
        pytest.param(None, id="null"),
        pytest.param(True, id="bool"),
        pytest.param([1], id="list"),
    ],
)
def test_config_haircut_not_a_number(tmp_path, value):
    assert_config_error(config_file(tmp_path, setter("assets", 0, "haircut", value)), "haircut")


@pytest.mark.parametrize("value", [pytest.param(1e30, id="1e30"), pytest.param(1.5, id="1.5")])
def test_config_haircut_above_one(tmp_path, value):
    assert_config_error(config_file(tmp_path, setter("assets", 0, "haircut", value)), "haircut")


def test_config_haircut_negative(tmp_path):
    assert_config_error(config_file(tmp_path, setter("assets", 0, "haircut", -0.5)), "haircut")


@pytest.mark.parametrize(
    ("section", "index", "key", "value"),
    [
        pytest.param("underlyings", 0, "im_rate", -0.1, id="im_rate"),
        pytest.param("liquidation", None, "penalty", -0.02, id="penalty"),
        pytest.param("trading", None, "max_funding_rate", -0.005, id="max_funding_rate"),
    ],
)
def test_config_negative_rate(tmp_path, section, index, key, value):
    assert_config_error(config_file(tmp_path, setter(section, index, key, value)), key)


@pytest.mark.parametrize(
    ("section", "value"),
    [
        pytest.param("settlement", -6, id="settlement--6"),
        pytest.param("assets", -1, id="asset--1"),
    ],
)
def test_config_negative_decimals(tmp_path, section, value):
    path = config_file(tmp_path, setter(section, None if section == "settlement" else 0, "decimals", value))
    assert_config_error(path, "decimals")


@pytest.mark.parametrize("section", ["settlement", "assets"])
def test_config_decimals_above_18(tmp_path, section):
    path = config_file(tmp_path, setter(section, None if section == "settlement" else 0, "decimals", 30))
    assert_config_error(path, "decimals")


@pytest.mark.parametrize("value", [pytest.param(8.7, id="8.7"), pytest.param(True, id="true")])
def test_config_decimals_not_an_integer(tmp_path, value):
    assert_config_error(config_file(tmp_path, setter("assets", 0, "decimals", value)), "decimals")


@pytest.mark.parametrize(
    "value",
    [pytest.param(-5, id="negative"), pytest.param(1.5, id="fraction"), pytest.param(1e30, id="1e30-float")],
)
def test_config_deposit_cap_invalid(tmp_path, value):
    assert_config_error(config_file(tmp_path, setter("assets", 0, "deposit_cap", value)), "deposit_cap")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("heartbeat", -1, id="heartbeat"),
        pytest.param("feed_decimals", -8, id="feed_decimals"),
        pytest.param("initial_price", -2000, id="initial_price"),
    ],
)
def test_config_negative_price_id_setting(tmp_path, key, value):
    assert_config_error(config_file(tmp_path, setter("price_ids", 0, key, value)), key)


@pytest.mark.parametrize("value", [pytest.param(float("nan"), id="nan"), pytest.param(-3, id="negative")])
def test_config_expiry_invalid(tmp_path, value):
    assert_config_error(config_file(tmp_path, setter("markets", 1, "expiry_days", value)), "expiry_days")


@pytest.mark.parametrize("section", ["assets", "price_ids", "markets"])
def test_config_section_not_a_list(tmp_path, section):
    assert_config_error(config_file(tmp_path, lambda raw: raw.__setitem__(section, None)), section)


def test_config_duplicate_price_id(tmp_path):
    path = config_file(tmp_path, lambda raw: raw["price_ids"].append(dict(raw["price_ids"][0])))
    assert_config_error(path, "ETH")


def test_config_binary_file(tmp_path):
    assert_config_error(config_file(tmp_path, text=b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage"))


# ---------------------------------------------------------------- price CSV files
# (missing / empty / header-only files, bad timestamps, NaN, inf, zero, negative, duplicates and
# field counts are covered by test_prices.py)

HEADER = "timestamp,open,high,low,close,volume\n"


def bar(ts: str, close: str) -> str:
    return f"{ts},1,1,1,{close},0\n"


def csv_file(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "eth_edge.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def assert_price_error(path: Path, *needles: str) -> str:
    with pytest.raises(PriceDataError) as exc:
        load_price_csv(path)
    msg = one_line(exc.value, path)
    assert_needles(msg, *needles)
    return msg


@pytest.mark.parametrize("value", ["1e400", "-1e400", "1E999"])
def test_csv_overflowing_price_is_inf(tmp_path, value):
    path = csv_file(tmp_path, HEADER + bar("2020-03-12T00:00:00Z", value) + bar("2020-03-12T01:00:00Z", "5"))
    assert_price_error(path, "line 2", "must be finite")


@pytest.mark.parametrize("value", ["-0", "-0.0", "0e5"])
def test_csv_zero_and_negative_zero(tmp_path, value):
    path = csv_file(tmp_path, HEADER + bar("2020-03-12T00:00:00Z", "5") + bar("2020-03-12T01:00:00Z", value))
    assert_price_error(path, "line 3", "must be > 0")


def test_csv_header_then_blank_lines(tmp_path):
    assert_price_error(csv_file(tmp_path, HEADER + "\n\n  \n"), "no data rows")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(bytes(range(256)) * 4, id="all-bytes"),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", id="png"),
        pytest.param((HEADER + bar("2020-03-12T00:00:00Z", "5")).encode("utf-16"), id="utf-16"),
    ],
)
def test_csv_binary_garbage(tmp_path, content):
    assert_price_error(csv_file(tmp_path, content), "not a UTF-8 text file")


def test_csv_nul_byte_in_field(tmp_path):
    path = csv_file(tmp_path, b"timestamp,close\n2020-03-12T00:00:00Z,\x005\n")
    assert_price_error(path, "line 2", "is not a number")


@pytest.mark.parametrize("sep", [";", "\t", "|"], ids=["semicolon", "tab", "pipe"])
def test_csv_wrong_delimiter(tmp_path, sep):
    text = sep.join(["timestamp", "open", "close"]) + "\n" + sep.join(["2020-03-12T00:00:00Z", "1", "5"]) + "\n"
    assert_price_error(csv_file(tmp_path, text), "line 1", "missing required column(s) timestamp, close (or price)")


def test_csv_decimal_comma(tmp_path):
    path = csv_file(tmp_path, 'timestamp,close\n2020-03-12T00:00:00Z,"1,5"\n')
    assert_price_error(path, "line 2", "'1,5' is not a number")


def test_csv_path_is_a_directory(tmp_path):
    with pytest.raises(PriceDataError) as exc:
        load_price_csv(tmp_path)
    assert_needles(one_line(exc.value, tmp_path), "cannot read price file")


@pytest.mark.parametrize("value", [pytest.param("1e60", id="1e60"), pytest.param("1e305", id="1e305")])
def test_csv_absurdly_large_price(tmp_path, value):
    path = csv_file(tmp_path, HEADER + bar("2020-03-12T00:00:00Z", value) + bar("2020-03-12T01:00:00Z", "5"))
    with pytest.raises(PriceDataError):
        price_path = align({"ETH": load_price_csv(path)})
        price_path.as_wad(0)


def test_csv_price_that_rounds_to_zero(tmp_path):
    path = csv_file(tmp_path, HEADER + bar("2020-03-12T00:00:00Z", "1e-12") + bar("2020-03-12T01:00:00Z", "5"))
    with pytest.raises(PriceDataError):
        price_path = align({"ETH": load_price_csv(path)})
        assert price_path.as_wad(0)["ETH"] > 0


# ---------------------------------------------------------------- deployment manifest

ADDRESS = "0x" + "00" * 19 + "01"
BASE_MANIFEST = {
    "chain_id": 31337,
    "settlement_decimals": 6,
    "oracle": ADDRESS,
    "vault": ADDRESS,
    "engine": ADDRESS,
    "settlement_token": ADDRESS,
}
DROP = object()
BASE = object()


def manifest_file(tmp_path: Path, raw=BASE, text: str | bytes | None = None, **changes) -> Path:
    path = tmp_path / "deployment.json"
    if text is not None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path
    if raw is BASE:
        raw = dict(BASE_MANIFEST)
        for key, value in changes.items():
            if value is DROP:
                raw.pop(key)
            else:
                raw[key] = value
    path.write_text(json.dumps(raw))
    return path


def assert_manifest_error(path: Path, *needles: str) -> str:
    with pytest.raises(ManifestError) as exc:
        load_manifest(path)
    msg = one_line(exc.value, path)
    assert_needles(msg, *needles)
    return msg


def test_manifest_baseline_loads(tmp_path):
    assert load_manifest(manifest_file(tmp_path)).chain_id == 31337


def test_manifest_missing_file(tmp_path):
    assert_manifest_error(tmp_path / "deployment.json", "not found")


@pytest.mark.parametrize(
    "text", ["", "{not json", "{'single': 'quotes'}", "[1,"], ids=["empty", "brace", "quotes", "truncated"]
)
def test_manifest_not_json(tmp_path, text):
    assert_manifest_error(manifest_file(tmp_path, text=text), "not valid JSON")


@pytest.mark.parametrize("raw", [[1, 2], "deployment", None, 5, True], ids=["list", "string", "null", "number", "bool"])
def test_manifest_not_an_object(tmp_path, raw):
    assert_manifest_error(manifest_file(tmp_path, raw=raw), "must hold a JSON object")


@pytest.mark.parametrize(
    "value",
    ["0x1234", "0x" + "zz" * 20, "0x" + "11" * 21, "", 123, None, ["0x" + "11" * 20]],
    ids=["short", "not-hex", "too-long", "empty", "int", "null", "list"],
)
def test_manifest_bad_address(tmp_path, value):
    assert_manifest_error(manifest_file(tmp_path, vault=value), "vault is not an address")


@pytest.mark.parametrize("value", ["31337", -1, True, 1.0, None], ids=["string", "negative", "bool", "float", "null"])
def test_manifest_bad_chain_id(tmp_path, value):
    assert_manifest_error(manifest_file(tmp_path, chain_id=value), "chain_id must be a non-negative integer")


@pytest.mark.parametrize("value", [-6, "6", 6.5, False], ids=["negative", "string", "float", "bool"])
def test_manifest_bad_settlement_decimals(tmp_path, value):
    assert_manifest_error(
        manifest_file(tmp_path, settlement_decimals=value), "settlement_decimals must be a non-negative integer"
    )


@pytest.mark.parametrize("key", ["chain_id", "settlement_decimals", "oracle", "vault", "engine", "settlement_token"])
def test_manifest_missing_field(tmp_path, key):
    assert_manifest_error(manifest_file(tmp_path, **{key: DROP}), f"lacks {key}")


def test_manifest_missing_every_field(tmp_path):
    assert_manifest_error(
        manifest_file(tmp_path, raw={}), "lacks chain_id, settlement_decimals, oracle, vault, engine, settlement_token"
    )


def test_manifest_binary_file(tmp_path):
    assert_manifest_error(manifest_file(tmp_path, text=b"\xff\xfe\x00garbage"))


def test_manifest_bad_checksum(tmp_path):
    good = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert_manifest_error(manifest_file(tmp_path, engine=good[:-1] + "D"), "engine")


def test_manifest_settlement_decimals_above_18(tmp_path):
    assert_manifest_error(manifest_file(tmp_path, settlement_decimals=30), "settlement_decimals")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("deploy_block", "latest", id="deploy_block-string"),
        pytest.param("deploy_block", -5, id="deploy_block-negative"),
        pytest.param("asset_ids", {"WETH": "zero"}, id="asset_ids-string"),
        pytest.param("asset_ids", [0, 1], id="asset_ids-list"),
        pytest.param("tokens", {"WETH": "0x12"}, id="tokens-bad-address"),
        pytest.param("markets", "ETH-PERP", id="markets-string"),
    ],
)
def test_manifest_optional_field_wrong_type(tmp_path, key, value):
    assert_manifest_error(manifest_file(tmp_path, **{key: value}), key)


# ---------------------------------------------------------------- RPC answers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeRpc:
    """A local HTTP server answering every POST according to `mode`."""

    def __init__(self):
        self.mode = "ok"
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    rid = json.loads(body).get("id", 1)
                except ValueError:
                    rid = 1
                status, ctype, payload = fake.answer(rid)
                if payload is None:  # never answer (until the test ends)
                    fake.release.wait(30)
                    return
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, rid) -> tuple[int, str, bytes | None]:
        rpc = lambda **kw: json.dumps({"jsonrpc": "2.0", "id": rid, **kw}).encode()  # noqa: E731
        return {
            "ok": (200, "application/json", rpc(result="0x7a69")),
            "not json": (200, "application/json", b"not json"),
            "empty body": (200, "application/json", b""),
            "html page": (200, "text/html", b"<!doctype html><html><body>It works!</body></html>"),
            "http 500": (500, "text/plain", b"internal error"),
            "http 502 html": (502, "text/html", b"<html>502 Bad Gateway</html>"),
            "json-rpc error": (200, "application/json", rpc(error={"code": -32601, "message": "Method not found"})),
            "bad result": (200, "application/json", rpc(result="banana")),
            "json list": (200, "application/json", b"[]"),
            "null result": (200, "application/json", rpc(result=None)),
            "hang": (200, "", None),
        }[self.mode]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_rpc():
    server = FakeRpc()
    yield server
    server.close()


def assert_chain_error(url, *needles: str, timeout: float = 2.0, within: float = 30.0) -> str:
    start = time.monotonic()
    with pytest.raises(ChainError) as exc:
        connect(url, timeout=timeout)
    elapsed = time.monotonic() - start
    assert elapsed < within, f"took {elapsed:.1f} s"
    msg = one_line(exc.value)
    assert_needles(msg, *needles)
    return msg


def test_rpc_fake_server_baseline(fake_rpc):
    assert connect(fake_rpc.url, timeout=2).eth.chain_id == 31337


def test_rpc_closed_port():
    url = f"http://127.0.0.1:{free_port()}"
    assert_chain_error(url, "cannot reach RPC", url, within=10)


@pytest.mark.parametrize("url", ["localhost:8545", "", "ftp://example.org", "127.0.0.1"])
def test_rpc_not_an_http_url(url):
    assert_chain_error(url, "must start with http://, https://, ws:// or wss://", within=1)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:99999", "http://127.0.0.1:80 80"], ids=["port-out-of-range", "space"]
)
def test_rpc_invalid_http_url(url):
    assert_chain_error(url, "cannot reach RPC", "InvalidURL", within=10)


@pytest.mark.parametrize(
    ("mode", "needle"),
    [
        ("not json", "not valid JSON"),
        ("empty body", "not valid JSON"),
        ("html page", "not valid JSON"),
        ("http 500", "HTTP 500"),
        ("http 502 html", "HTTP 502"),
        ("json-rpc error", "JSON-RPC error (MethodUnavailable)"),
        ("bad result", "not a number"),
        ("json list", "BadResponseFormat"),
    ],
)
@pytest.mark.parametrize("many", [False, True], ids=["connect", "connect_any"])
def test_rpc_garbage_answers(fake_rpc, mode, needle, many):
    """A server that is up but answers garbage is told apart from one that cannot be reached."""
    fake_rpc.mode = mode
    start = time.monotonic()
    with pytest.raises(ChainError) as exc:
        connect_any([fake_rpc.url], timeout=2) if many else connect(fake_rpc.url, timeout=2)
    assert time.monotonic() - start < 15
    msg = one_line(exc.value)
    assert_needles(msg, f"RPC at {fake_rpc.url} answered badly", needle)
    assert "cannot reach" not in msg


def test_rpc_server_that_never_answers(fake_rpc):
    fake_rpc.mode = "hang"
    assert_chain_error(fake_rpc.url, "cannot reach RPC", "ReadTimeout", timeout=0.5, within=20)


def test_rpc_server_that_never_answers_is_bounded_by_the_timeout(fake_rpc):
    fake_rpc.mode = "hang"
    assert_chain_error(fake_rpc.url, "ReadTimeout", timeout=0.5, within=2.0)


def test_rpc_null_chain_id(fake_rpc):
    fake_rpc.mode = "null result"
    assert_chain_error(fake_rpc.url, "chain")


@pytest.mark.parametrize("url", [None, 8545], ids=["none", "int"])
def test_rpc_url_not_a_string(url):
    with pytest.raises((ChainError, TypeError)) as exc:
        connect(url, timeout=1)
    assert_needles(one_line(exc.value), "URL")


# ---------------------------------------------------------------- risk engine inputs

PCT = WAD // 100
PRICES = [2000 * WAD, 30000 * WAD]


def params(**changes) -> RiskParams:
    fields = dict(
        price_id=[0, 1],
        im_rate=[10 * PCT] * 2,
        mm_rate=[5 * PCT] * 2,
        spread_im_rate=[2 * PCT] * 2,
        spread_mm_rate=[PCT] * 2,
        asset_price_id=[0, 1],
        asset_decimals=[18, 8],
        asset_haircut=[85 * PCT] * 2,
    )
    fields.update(changes)
    return RiskParams(**fields)


def markets(**changes) -> MarketTable:
    fields = dict(underlying=[0, 0, 1, 1], settlement_price=[0] * 4, funding_index=[0] * 4)
    fields.update(changes)
    return MarketTable(**fields)


def book(**changes) -> AccountBook:
    fields = dict(
        cash=[10_000 * WAD],
        collateral=[[WAD, 0]],
        size=[[2 * WAD, 0, 0, 0]],
        entry_price=[[2000 * WAD, 0, 0, 0]],
        funding_index=[[0] * 4],
    )
    fields.update(changes)
    return AccountBook(**fields)


def assert_risk_error(kind, fn, *needles: str) -> str:
    with pytest.raises(kind) as exc:
        fn()
    msg = one_line(exc.value)
    assert_needles(msg, *needles)
    return msg


def test_margin_baseline():
    assert margin(book(), markets(), params(), PRICES).equity.tolist() == [10_000 * WAD + 1700 * WAD]


@pytest.mark.parametrize(
    ("prices", "needles"),
    [
        pytest.param([PRICES], ("prices", "expected 1 dimension", "(1, 2)"), id="2d"),
        pytest.param(2000 * WAD, ("prices", "expected 1 dimension"), id="scalar"),
        pytest.param(None, ("prices", "expected 1 dimension"), id="none"),
        pytest.param([2000 * WAD], ("price id 1", "only 1 prices"), id="too-short"),
        pytest.param([], ("only 0 prices",), id="empty"),
    ],
)
def test_margin_prices_wrong_shape(prices, needles):
    assert_risk_error(ValueError, lambda: margin(book(), markets(), params(), prices), *needles)


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        pytest.param(
            lambda: margin(book(collateral=[[1, 0, 0]]), markets(), params(), PRICES),
            ("3 collateral assets", "params 2"),
            id="assets",
        ),
        pytest.param(
            lambda: margin(
                book(),
                MarketTable(underlying=[0, 0, 1], settlement_price=[0] * 3, funding_index=[0] * 3),
                params(),
                PRICES,
            ),
            ("4 markets", "market table 3"),
            id="markets",
        ),
        pytest.param(
            lambda: margin(book(), markets(underlying=[0, 0, 1, 5]), params(), PRICES),
            ("underlying id 5",),
            id="underlying-id",
        ),
        pytest.param(
            lambda: margin(book(), markets(), params(price_id=[0, 7]), PRICES), ("price id 7",), id="price-id"
        ),
        pytest.param(lambda: book(size=[[0] * 4, [0] * 4]), ("size", "2 rows for 1 accounts"), id="rows"),
        pytest.param(lambda: book(size=[[0] * 3]), ("same (N, M) shape",), id="columns"),
        pytest.param(lambda: book(size=[[0] * 4, [0] * 2]), ("size", "expected 2 dimension"), id="ragged"),
        pytest.param(lambda: book(cash=[[1]]), ("cash", "expected 1 dimension"), id="cash-2d"),
        pytest.param(lambda: book(collateral=[1, 0]), ("collateral", "expected 2 dimension"), id="collateral-1d"),
        pytest.param(lambda: params(im_rate=[10 * PCT]), ("im_rate", "shape (1,)"), id="rates"),
        pytest.param(lambda: markets(settlement_price=[0] * 3), ("shapes",), id="market-fields"),
        pytest.param(
            lambda: AccountBook.from_states([(1, [0], [])], 2, 4),
            ("1 collateral balances, expected 2",),
            id="state-balances",
        ),
        pytest.param(
            lambda: AccountBook.from_states([(1, [0, 0], [(9, WAD, WAD, 0)])], 2, 4),
            ("market id 9",),
            id="state-market",
        ),
    ],
)
def test_margin_inputs_wrong_shape(make, needles):
    assert_risk_error(ValueError, make, *needles)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        pytest.param(lambda: margin(book(), markets(), params(), [-2000 * WAD, 30000 * WAD]), "prices", id="price"),
        pytest.param(
            lambda: margin_float(book(), markets(), params(), [-1, 30000 * WAD]), "prices", id="price-float-path"
        ),
        pytest.param(lambda: book(collateral=[[-1, 0]]), "collateral", id="collateral"),
        pytest.param(lambda: book(entry_price=[[-1, 0, 0, 0]]), "entry_price", id="entry-price"),
        pytest.param(lambda: params(im_rate=[-1, 10 * PCT]), "im_rate", id="rate"),
        pytest.param(lambda: params(asset_haircut=[-1, 0]), "asset_haircut", id="haircut"),
        pytest.param(lambda: markets(settlement_price=[-1, 0, 0, 0]), "settlement_price", id="settlement"),
        pytest.param(lambda: params(price_id=[-1, 1]), "price_id", id="price-id"),
        pytest.param(lambda: params(asset_decimals=[-1, 8]), "asset_decimals", id="decimals"),
    ],
)
def test_margin_negative_inputs(make, name):
    assert_risk_error(ValueError, make, name, "negative")


def test_margin_decimals_above_18():
    assert_risk_error(ValueError, lambda: params(asset_decimals=[19, 8]), "asset_decimals", "above 18")


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        pytest.param(
            lambda: margin(book(), markets(), params(), [2000.5e18, 30000 * WAD]), ("prices", "float"), id="price"
        ),
        pytest.param(
            lambda: margin(book(), markets(), params(), [2000e18, 30000 * WAD]), ("prices", "float"), id="whole-float"
        ),
        pytest.param(
            lambda: margin(book(), markets(), params(), [float("nan"), 30000 * WAD]), ("prices", "float"), id="nan"
        ),
        pytest.param(
            lambda: margin(book(), markets(), params(), np.array([2e21, 3e22])), ("prices", "float"), id="numpy-float"
        ),
        pytest.param(
            lambda: margin(book(), markets(), params(), ["2000", 30000 * WAD]), ("prices", "str"), id="string"
        ),
        pytest.param(lambda: margin(book(), markets(), params(), [True, 30000 * WAD]), ("prices", "bool"), id="bool"),
        pytest.param(lambda: book(cash=[1e22]), ("cash", "float"), id="cash"),
        pytest.param(lambda: book(size=[[1.5 * WAD, 0, 0, 0]]), ("size", "float"), id="size"),
        pytest.param(lambda: params(im_rate=[0.1, 10 * PCT]), ("im_rate", "float"), id="rate"),
        pytest.param(lambda: markets(settlement_price=[1.5, 0, 0, 0]), ("settlement_price", "float"), id="settlement"),
        pytest.param(lambda: params(price_id=[0.0, 1]), ("price_id", "integers"), id="price-id"),
        pytest.param(
            lambda: AccountBook.from_states([(1, [0, 0], [(0, 1.5, WAD, 0)])], 2, 4), ("size", "float"), id="state-size"
        ),
    ],
)
def test_margin_floats_instead_of_ints(make, needles):
    assert_risk_error(TypeError, make, *needles)


def test_margin_bool_id():
    assert_risk_error(TypeError, lambda: params(price_id=[True, 1]), "price_id")


def test_margin_price_above_uint256():
    assert_risk_error(ValueError, lambda: margin(book(), markets(), params(), [2**300, 30000 * WAD]), "prices")


def test_margin_book_wrong_type():
    assert_risk_error(TypeError, lambda: margin({"cash": [1]}, markets(), params(), PRICES), "book")
