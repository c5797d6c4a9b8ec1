# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Oracle router: index prices from Chainlink-compatible feeds
@notice Each price id (an underlying such as ETH or BTC) has one to three AggregatorV3 feeds,
        each with its own staleness bound (heartbeat). The index price is the median of the
        feeds whose latest answer is valid; a feed that reverts, answers zero or a negative
        number, has a zero round id, a zero or future `updatedAt`, or is older than its
        heartbeat is ignored. So is an answer outside the price id's circuit-breaker band
        [min_price, max_price] (a feed pinned at its floor, as Chainlink's minAnswer did in the
        LUNA crash), or one that moved more than `max_jump` from the feed's previous round.
        With no valid feed the price reverts. Prices are WAD (1e18 = 1 USD per whole unit of
        the underlying).
@dev Validity rules follow Chainlink's `latestRoundData` guidance (staleness from `updatedAt`,
     reject non-positive answers). Median of an even count is the floor of the mean of the two
     middle values.
"""

import lib.roles as roles

initializes: roles

exports: (
    roles.admin,
    roles.pending_admin,
    roles.risk_admin,
    roles.propose_admin,
    roles.accept_admin,
    roles.set_risk_admin,
)

interface AggregatorV3:
    def decimals() -> uint8: view
    def latestRoundData() -> (uint80, int256, uint256, uint256, uint80): view
    def getRoundData(round_id: uint80) -> (uint80, int256, uint256, uint256, uint80): view


MAX_FEEDS: constant(uint256) = 3
MAX_PRICE_IDS: constant(uint256) = 8
# @dev Bounds on a feed's heartbeat (staleness limit), seconds.
MIN_HEARTBEAT: constant(uint256) = 60
MAX_HEARTBEAT: constant(uint256) = 2 * 86400


struct Feed:
    aggregator: address
    scale: uint256
    heartbeat: uint256


struct CircuitBreaker:
    min_price: uint256
    max_price: uint256
    max_jump: uint256


price_id_count: public(uint256)
price_id_name: public(HashMap[uint256, String[16]])
_feeds: HashMap[uint256, DynArray[Feed, MAX_FEEDS]]
# @dev WAD band and largest round-to-round move (WAD fraction, 0 = unchecked) per price id.
circuit_breakers: public(HashMap[uint256, CircuitBreaker])


event PriceIdAdded:
    price_id: indexed(uint256)
    name: String[16]


event CircuitBreakerSet:
    price_id: indexed(uint256)
    min_price: uint256
    max_price: uint256
    max_jump: uint256


event FeedsSet:
    price_id: indexed(uint256)
    aggregators: DynArray[address, MAX_FEEDS]
    heartbeats: DynArray[uint256, MAX_FEEDS]


@deploy
def __init__(admin_: address):
    roles.__init__(admin_)


@external
def add_price_id(name: String[16]) -> uint256:
    """
    @notice Register a new underlying to be priced (admin).
    @param name Its symbol, e.g. "ETH".
    @return The new price id (0-based, sequential).
    """
    roles._check_admin()
    price_id: uint256 = self.price_id_count
    assert price_id < MAX_PRICE_IDS, "oracle: too many price ids"
    self.price_id_count = price_id + 1
    self.price_id_name[price_id] = name
    log PriceIdAdded(price_id=price_id, name=name)
    return price_id


@external
def set_feeds(price_id: uint256, aggregators: DynArray[address, MAX_FEEDS], heartbeats: DynArray[uint256, MAX_FEEDS]):
    """
    @notice Replace the feeds of a price id (risk admin). Every feed must answer validly now.
    @param price_id An existing price id.
    @param aggregators One to three AggregatorV3 feeds, each with at most 18 decimals.
    @param heartbeats Staleness bound of each feed, seconds, within [60 s, 2 days].
    """
    roles._check_risk_admin()
    assert price_id < self.price_id_count, "oracle: unknown price id"
    assert len(aggregators) > 0, "oracle: no feed"
    assert len(aggregators) == len(heartbeats), "oracle: length mismatch"
    feeds: DynArray[Feed, MAX_FEEDS] = []
    for i: uint256 in range(len(aggregators), bound=MAX_FEEDS):
        assert heartbeats[i] >= MIN_HEARTBEAT and heartbeats[i] <= MAX_HEARTBEAT, "oracle: heartbeat out of bounds"
        decimals: uint256 = convert(staticcall AggregatorV3(aggregators[i]).decimals(), uint256)
        assert decimals <= 18, "oracle: feed decimals above 18"
        for j: uint256 in range(i, bound=MAX_FEEDS):
            assert aggregators[j] != aggregators[i], "oracle: duplicate feed"
        feed: Feed = Feed(aggregator=aggregators[i], scale=10 ** (18 - decimals), heartbeat=heartbeats[i])
        ok: bool = False
        price: uint256 = 0
        updated_at: uint256 = 0
        ok, price, updated_at = self._read(feed, self.circuit_breakers[price_id])
        assert ok, "oracle: feed answer invalid"
        feeds.append(feed)
    self._feeds[price_id] = feeds
    log FeedsSet(price_id=price_id, aggregators=aggregators, heartbeats=heartbeats)


@external
def set_circuit_breaker(price_id: uint256, min_price: uint256, max_price: uint256, max_jump: uint256):
    """
    @notice Bound a price id's answers (risk admin): feeds answering at or outside
            [min_price, max_price], or moving more than `max_jump` from their previous round,
            are ignored.
    @param min_price WAD; an answer <= it is refused (a feed pinned at its floor).
    @param max_price WAD, > min_price; an answer >= it is refused; 0 = no ceiling.
    @param max_jump WAD fraction of the previous round's answer, 0 = unchecked, else in (0, 1].
    """
    roles._check_risk_admin()
    assert price_id < self.price_id_count, "oracle: unknown price id"
    assert max_price == 0 or max_price > min_price, "oracle: empty price band"
    assert max_jump <= 10**18, "oracle: max_jump out of bounds"
    self.circuit_breakers[price_id] = CircuitBreaker(min_price=min_price, max_price=max_price, max_jump=max_jump)
    log CircuitBreakerSet(price_id=price_id, min_price=min_price, max_price=max_price, max_jump=max_jump)


@internal
@view
def _round(aggregator: address, call: Bytes[36]) -> (bool, uint80, int256, uint256):
    """
    @dev (ok, round id, answer, updatedAt) of a latestRoundData / getRoundData call; a feed that
         reverts or answers malformed data is not ok rather than fatal.
    """
    success: bool = False
    response: Bytes[160] = b""
    success, response = raw_call(aggregator, call, max_outsize=160, is_static_call=True, revert_on_failure=False)
    if not success or len(response) != 160:
        return False, 0, 0, 0
    round_id: uint80 = 0
    answer: int256 = 0
    started_at: uint256 = 0
    updated_at: uint256 = 0
    answered_in: uint80 = 0
    round_id, answer, started_at, updated_at, answered_in = abi_decode(
        response, (uint80, int256, uint256, uint256, uint80)
    )
    return True, round_id, answer, updated_at


@internal
@view
def _read(feed: Feed, breaker: CircuitBreaker) -> (bool, uint256, uint256):
    """
    @dev One feed's answer as (valid, WAD price, updatedAt). A reverting or malformed feed is
         invalid rather than fatal, so one broken feed cannot block the others.
    """
    ok: bool = False
    round_id: uint80 = 0
    answer: int256 = 0
    updated_at: uint256 = 0
    ok, round_id, answer, updated_at = self._round(feed.aggregator, method_id("latestRoundData()"))
    if not ok:
        return False, 0, 0
    if round_id == 0 or answer <= 0 or updated_at == 0 or updated_at > block.timestamp:
        return False, 0, 0
    if block.timestamp - updated_at > feed.heartbeat:
        return False, 0, 0
    if convert(answer, uint256) > max_value(uint256) // feed.scale // 10**36:
        # absurdly large: would overflow the margin maths downstream
        return False, 0, 0
    price: uint256 = convert(answer, uint256) * feed.scale
    if price <= breaker.min_price or (breaker.max_price != 0 and price >= breaker.max_price):
        return False, 0, 0
    if breaker.max_jump != 0 and round_id > 1:
        prev_ok: bool = False
        prev_round: uint80 = 0
        prev: int256 = 0
        prev_time: uint256 = 0
        prev_ok, prev_round, prev, prev_time = self._round(
            feed.aggregator, abi_encode(round_id - 1, method_id=method_id("getRoundData(uint80)"))
        )
        # no readable previous round: the jump cannot be judged, so the answer is not trusted
        if not prev_ok or prev <= 0:
            return False, 0, 0
        before: uint256 = convert(prev, uint256) * feed.scale
        if (max(price, before) - min(price, before)) * 10**18 > before * breaker.max_jump:
            return False, 0, 0
    return True, price, updated_at


@internal
@view
def _median(price_id: uint256) -> (uint256, uint256):
    """
    @dev Median of valid feeds and the oldest `updatedAt` among them; (0, 0) if none is valid.
    """
    prices: DynArray[uint256, MAX_FEEDS] = []
    oldest: uint256 = max_value(uint256)
    breaker: CircuitBreaker = self.circuit_breakers[price_id]
    for feed: Feed in self._feeds[price_id]:
        ok: bool = False
        price: uint256 = 0
        updated_at: uint256 = 0
        ok, price, updated_at = self._read(feed, breaker)
        if ok:
            # insertion sort: at most three elements
            prices.append(price)
            j: uint256 = len(prices) - 1
            for k: uint256 in range(MAX_FEEDS):
                if j == 0 or prices[j - 1] <= prices[j]:
                    break
                tmp: uint256 = prices[j - 1]
                prices[j - 1] = prices[j]
                prices[j] = tmp
                j -= 1
            oldest = min(oldest, updated_at)
    n: uint256 = len(prices)
    if n == 0:
        return 0, 0
    if n % 2 == 1:
        return prices[n // 2], oldest
    return (prices[n // 2 - 1] + prices[n // 2]) // 2, oldest


@internal
@view
def _index_price(price_id: uint256) -> (uint256, uint256):
    assert price_id < self.price_id_count, "oracle: unknown price id"
    price: uint256 = 0
    updated_at: uint256 = 0
    price, updated_at = self._median(price_id)
    assert price != 0, "oracle: no valid price"
    return price, updated_at


@external
@view
def index_price(price_id: uint256) -> uint256:
    """
    @notice Index price of an underlying: median of its valid feeds.
    @param price_id The underlying's price id.
    @return WAD USD per whole unit. Reverts "oracle: no valid price" when no feed is valid.
    """
    price: uint256 = 0
    updated_at: uint256 = 0
    price, updated_at = self._index_price(price_id)
    return price


@external
@view
def index_price_with_time(price_id: uint256) -> (uint256, uint256):
    """
    @notice Index price and the oldest `updatedAt` of the feeds that formed it.
    @dev Used by expiry settlement to refuse a price published before expiry.
    @return (WAD price, unix seconds).
    """
    return self._index_price(price_id)


@external
@view
def index_prices() -> DynArray[uint256, MAX_PRICE_IDS]:
    """
    @notice Index prices of every price id, in id order, with 0 for an id that has no valid
            feed now. Never reverts, so one broken underlying cannot freeze accounts that do
            not use it; users of a price must reject 0.
    @return WAD prices, one per price id (0 = unavailable).
    """
    out: DynArray[uint256, MAX_PRICE_IDS] = []
    for price_id: uint256 in range(self.price_id_count, bound=MAX_PRICE_IDS):
        price: uint256 = 0
        updated_at: uint256 = 0
        price, updated_at = self._median(price_id)
        out.append(price)
    return out


@external
@view
def feeds(price_id: uint256) -> DynArray[Feed, MAX_FEEDS]:
    """
    @notice The configured feeds of a price id (aggregator, 10**(18 - decimals), heartbeat).
    """
    return self._feeds[price_id]
