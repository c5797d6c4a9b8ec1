"""FallbackProvider against local HTTP servers that answer, refuse, rate-limit or fail."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from web3 import Web3

from keeper.chain.anvil import free_port
from keeper.chain.rpc import EndpointError, FallbackProvider


def serve(behaviour: str):
    """An HTTP JSON-RPC server: ok (chain id 0x7a69), http429, rpc32005, http500, revert."""
    calls = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(request["method"])
            status, body = 200, {"jsonrpc": "2.0", "id": request["id"], "result": "0x7a69"}
            if behaviour == "http429":
                status, body = 429, {"error": "too many requests"}
            elif behaviour == "http500":
                status, body = 500, {}
            elif behaviour == "rpc32005":
                body = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32005, "message": "limit exceeded"}}
            elif behaviour == "revert":
                body = {
                    "jsonrpc": "2.0",
                    "id": request["id"],
                    "error": {"code": 3, "message": "execution reverted: engine: account not liquidatable"},
                }
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}", calls


@pytest.fixture
def servers():
    made = []

    def make(behaviour):
        server, url, calls = serve(behaviour)
        made.append(server)
        return url, calls

    yield make
    for s in made:
        s.shutdown()
        s.server_close()


def provider(urls, **kw):
    sleeps = []
    return FallbackProvider(urls, timeout=2, sleep=sleeps.append, **kw), sleeps


@pytest.mark.parametrize("failure", ["http429", "rpc32005", "http500", "down"])
def test_fails_over_to_the_next_endpoint(servers, failure):
    bad, bad_calls = servers(failure) if failure != "down" else (f"http://127.0.0.1:{free_port()}", [])
    good, good_calls = servers("ok")
    p, sleeps = provider([bad, good])
    assert Web3(p).eth.chain_id == 31337
    assert p.active_url == good and p.failovers == 1
    assert len(bad_calls) == (0 if failure == "down" else 1) and good_calls == ["eth_chainId"]
    assert len(sleeps) == 1  # one backoff between the two attempts
    # later requests stay on the working endpoint
    assert Web3(p).eth.chain_id > 0
    assert len(bad_calls) == (0 if failure == "down" else 1)


def test_backoff_grows_and_the_last_error_is_raised(servers):
    url, calls = servers("http429")
    p, sleeps = provider([url], max_attempts=4, backoff_initial=0.1, backoff_max=0.3)
    with pytest.raises(EndpointError, match="HTTP 429"):
        p.make_request("eth_chainId", [])
    assert len(calls) == 4 and len(sleeps) == 3
    # exponential with jitter in [0, 0.1]: 0.1, 0.2, then capped at 0.3
    for wait, base in zip(sleeps, (0.1, 0.2, 0.3)):
        assert base <= wait <= min(base + 0.1, 0.3) + 1e-9


def test_an_answer_that_is_an_error_is_not_retried(servers):
    url, calls = servers("revert")
    good, good_calls = servers("ok")
    p, sleeps = provider([url, good])
    response = p.make_request("eth_call", [])
    assert response["error"]["code"] == 3
    assert calls == ["eth_call"] and good_calls == [] and sleeps == []


def test_returns_to_the_primary_after_a_while(servers):
    primary, primary_calls = servers("ok")
    secondary, _ = servers("ok")
    p, _ = provider([primary, secondary], primary_retry_seconds=0.0)
    p._active, p._failed_over_at = 1, 0.0  # as after a failover long ago
    p.make_request("eth_chainId", [])
    assert p.active_url == primary and primary_calls == ["eth_chainId"]


def test_url_is_redacted_in_errors(servers):
    p, _ = provider([f"http://127.0.0.1:{free_port()}/v3/SECRETKEY"], max_attempts=1)
    with pytest.raises(EndpointError) as e:
        p.make_request("eth_chainId", [])
    assert "SECRETKEY" not in str(e.value) and "unreachable" in str(e.value)
