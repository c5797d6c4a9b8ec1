"""A JSON-RPC provider that falls back across several endpoints, over HTTP or WebSocket.

Each request goes to the active endpoint. A connection error, a timeout, an HTTP 429/5xx
answer or a JSON-RPC rate-limit error (code -32005 "limit exceeded", or code 429, as Infura,
Alchemy and QuickNode answer) makes it try the next endpoint, with exponential backoff and
jitter between attempts (tenacity). After `max_attempts` failures in a row the last error is
raised to the caller, whose loop keeps its own, longer backoff. Every `primary_retry_seconds`
the provider goes back to the first (preferred) endpoint.

Errors the node returns for the request itself (a revert, a bad nonce) are not retried: they
are the answer.

An endpoint is http://, https://, ws:// or wss:// (URLs of both kinds may be mixed). A WebSocket
endpoint is one persistent connection through web3's synchronous WebSocket provider
(`LegacyWebSocketProvider`, web3 7), one request at a time; a dropped connection is opened again
at the next request, and its failures fail over like an HTTP endpoint's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable, Sequence

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter
from web3 import Web3
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from keeper.errors import KeeperError

log = logging.getLogger("keeper.rpc")

# JSON-RPC error codes providers use for "slow down" (EIP-1474 -32005 limit exceeded)
RATE_LIMIT_CODES = {-32005, 429}
RETRY_HTTP_STATUS = {429, 500, 502, 503, 504}
SCHEMES = ("http://", "https://", "ws://", "wss://")
WS_MAX_MESSAGE = 64 * 2**20  # bytes: a batch of 200 accounts' states is well above websockets' 1 MiB default


def is_websocket(url: str) -> bool:
    return url.startswith(("ws://", "wss://"))


class EndpointError(KeeperError, ConnectionError):
    """An endpoint failed in a way another endpoint (or a later attempt) may not: unreachable,
    timed out, rate limited or a server error. Subclasses ConnectionError so callers that
    catch OSError treat it as an RPC outage."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def _redact(url: str) -> str:
    """The URL without a path (providers put API keys in the path or query)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


class FallbackProvider(JSONBaseProvider):
    """A web3 provider over `urls` (first = preferred), failing over on outages and rate limits.

    Parameters
    ----------
    urls : endpoints, http://, https://, ws:// or wss://, at least one.
    timeout : seconds per request (WebSocket: also to open the connection).
    max_attempts : attempts per request across endpoints before raising EndpointError.
    backoff_initial, backoff_max : seconds; the wait before attempt n is about
        min(backoff_max, backoff_initial * 2**n) plus up to `backoff_initial` of jitter.
    primary_retry_seconds : after failing over, return to urls[0] after this long.
    """

    def __init__(
        self,
        urls: Sequence[str],
        timeout: float = 10.0,
        max_attempts: int | None = None,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        primary_retry_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__()
        if not urls:
            raise ValueError("FallbackProvider needs at least one URL")
        self.urls = tuple(urls)
        self.timeout = timeout
        self.max_attempts = max_attempts or max(3, 2 * len(self.urls))
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.primary_retry_seconds = primary_retry_seconds
        self._sleep = sleep
        self._session = requests.Session()
        # one synchronous WebSocket provider per ws:// or wss:// URL (its connection opens at the
        # first request); imported only then: web3 warns that it builds on websockets.legacy
        self.websockets: dict[str, Any] = {}
        for url in self.urls:
            if is_websocket(url):
                from web3.providers.legacy_websocket import LegacyWebSocketProvider

                self.websockets[url] = LegacyWebSocketProvider(
                    url,
                    websocket_timeout=timeout,
                    websocket_kwargs={"open_timeout": timeout, "max_size": WS_MAX_MESSAGE},
                )
        self._ws_lock = threading.Lock()  # a persistent connection carries one request at a time
        self._active = 0
        self._failed_over_at = 0.0
        self._lock = threading.Lock()
        self.failovers = 0  # how many times the active endpoint changed because of an error

    def __str__(self) -> str:
        return f"FallbackProvider({', '.join(_redact(u) for u in self.urls)})"

    @property
    def active_url(self) -> str:
        return self.urls[self._active]

    def _ws_request(self, url: str, payload: bytes) -> Any:
        import websockets

        provider = self.websockets[url]
        with self._ws_lock:
            future = asyncio.run_coroutine_threadsafe(provider.coro_make_request(payload), provider._loop)
            try:
                # the provider's own timeouts (open, send, receive) end the request first
                return future.result(timeout=3 * self.timeout + 1)
            except (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError):
                future.cancel()
                raise EndpointError(_redact(url), "timed out") from None
            except ValueError:  # json.JSONDecodeError; an invalid URI is a WebSocketException
                raise EndpointError(_redact(url), "answered with something other than JSON") from None
            except (OSError, websockets.exceptions.WebSocketException) as e:
                raise EndpointError(_redact(url), f"unreachable ({e.__class__.__name__})") from None

    def _post(self, url: str, payload: bytes) -> Any:
        if url in self.websockets:
            return self._ws_request(url, payload)
        try:
            response = self._session.post(
                url, data=payload, headers={"Content-Type": "application/json"}, timeout=self.timeout
            )
        except requests.Timeout:
            raise EndpointError(_redact(url), "timed out") from None
        except requests.RequestException as e:
            raise EndpointError(_redact(url), f"unreachable ({e.__class__.__name__})") from None
        if response.status_code in RETRY_HTTP_STATUS:
            raise EndpointError(_redact(url), f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise EndpointError(_redact(url), f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise EndpointError(_redact(url), "answered with something other than JSON") from None

    @staticmethod
    def _rate_limited(answer: Any) -> bool:
        items = answer if isinstance(answer, list) else [answer]
        for item in items:
            error = item.get("error") if isinstance(item, dict) else None
            if isinstance(error, dict):
                message = str(error.get("message", "")).lower()
                if error.get("code") in RATE_LIMIT_CODES or "rate limit" in message or "too many requests" in message:
                    return True
        return False

    def _pick(self) -> int:
        with self._lock:
            if self._active and time.monotonic() - self._failed_over_at > self.primary_retry_seconds:
                log.info("RPC: back to the primary endpoint %s", _redact(self.urls[0]))
                self._active = 0
            return self._active

    def _fail_over(self, index: int, error: EndpointError) -> None:
        with self._lock:
            if self._active != index or len(self.urls) == 1:
                return
            self._active = (index + 1) % len(self.urls)
            self._failed_over_at = time.monotonic()
            self.failovers += 1
        log.warning(
            "RPC endpoint %s failed (%s); switching to %s", error.url, error.reason, _redact(self.urls[self._active])
        )

    def _request(self, payload: bytes) -> Any:
        def attempt() -> Any:
            index = self._pick()
            url = self.urls[index]
            try:
                answer = self._post(url, payload)
                if self._rate_limited(answer):
                    raise EndpointError(_redact(url), "rate limited")
            except EndpointError as e:
                self._fail_over(index, e)
                raise
            return answer

        def before_sleep(state: RetryCallState) -> None:
            log.debug("RPC attempt %d failed: %s", state.attempt_number, state.outcome.exception())

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.backoff_initial
            ),
            retry=retry_if_exception_type(EndpointError),
            reraise=True,
            sleep=self._sleep,
            before_sleep=before_sleep,
        )
        return retrying(attempt)

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        return self._request(self.encode_rpc_request(method, params))

    def make_batch_request(self, batch_requests):  # web3's batch API
        answer = self._request(self.encode_batch_rpc_request(batch_requests))
        if isinstance(answer, list):
            return sorted(answer, key=lambda r: r.get("id", 0))
        return answer

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            return "result" in self.make_request(RPCEndpoint("web3_clientVersion"), [])
        except EndpointError:
            if show_traceback:
                raise
            return False


def fallback_web3(urls: Sequence[str], timeout: float = 10.0, **kwargs) -> Web3:
    """A Web3 over FallbackProvider(urls). Does not touch the network."""
    return Web3(FallbackProvider(urls, timeout=timeout, **kwargs))
