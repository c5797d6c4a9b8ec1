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
@custom:security Trusts the feeds it lists, within their heartbeats and circuit breakers.
     Guarantees: an index price is the median of valid feeds or none at all; a feed
     replacement is the admin's, waits FEED_DELAY and must agree with the live median; the
     expiry price does not depend on when it is asked.
@license MIT
"""

import lib.constants as constants

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
# @dev Fields of `_feeds` word 0 beyond the feed itself.
FEED_BITS: constant(uint256) = 2**252 - 1
FEED_COUNT_SHIFT: constant(uint256) = 252
BREAKER_BIT: constant(uint256) = 2**254
# @dev Bounds on a feed's heartbeat (staleness limit), seconds.
MIN_HEARTBEAT: constant(uint256) = 60
MAX_HEARTBEAT: constant(uint256) = 2 * 86400
# @dev A proposed replacement of feeds waits this long before it can be activated, and its
#      median must be within FEED_AGREEMENT (WAD fraction) of the live index.
FEED_DELAY: constant(uint256) = 2 * 86400
FEED_AGREEMENT: constant(uint256) = 5 * 10**16
# @dev Circuit-breaker bounds relative to the live index, so no breaker can refuse the price
#      it is set at: min_price <= 20% of it, max_price >= 5x it (or 0), max_jump >= 25% (or 0).
BREAKER_MIN_FLOOR: constant(uint256) = 2 * 10**17
BREAKER_MAX_CEILING: constant(uint256) = 5 * 10**18
BREAKER_MIN_JUMP: constant(uint256) = 25 * 10**16
# @dev States of a feed at an expiry (see `_expiry_answer`).
WAITING: constant(uint256) = 0
SILENT: constant(uint256) = 1
LATE: constant(uint256) = 2
TIMELY: constant(uint256) = 3


struct Feed:
    aggregator: address
    scale: uint256
    heartbeat: uint256


struct PendingFeeds:
    aggregators: DynArray[address, MAX_FEEDS]
    heartbeats: DynArray[uint256, MAX_FEEDS]
    activates_at: uint256


struct CircuitBreaker:
    min_price: uint256
    max_price: uint256
    max_jump: uint256


price_id_count: public(uint256)
price_id_name: public(HashMap[uint256, String[16]])
# @dev Each feed of a price id in one word (`_store_feeds`): aggregator (bits 0-159), scale
#      (160-219, at most 10**18), heartbeat (220-251, at most MAX_HEARTBEAT); word 0 also
#      holds the number of feeds (252-253) and whether any circuit-breaker bound is set (254).
#      An index price of one feed reads one slot, not five.
_feeds: HashMap[uint256, uint256[MAX_FEEDS]]
# @dev WAD band and largest round-to-round move (WAD fraction, 0 = unchecked) per price id.
circuit_breakers: public(HashMap[uint256, CircuitBreaker])
# @dev A proposed replacement of a price id's feeds and when it may be activated (0 = none).
pending_feeds: public(HashMap[uint256, PendingFeeds])


event PriceIdAdded:
    price_id: indexed(uint256)
    name: String[16]


event CircuitBreakerSet:
    price_id: indexed(uint256)
    min_price: uint256
    max_price: uint256
    max_jump: uint256


event FeedsProposed:
    price_id: indexed(uint256)
    aggregators: DynArray[address, MAX_FEEDS]
    heartbeats: DynArray[uint256, MAX_FEEDS]
    activates_at: uint256


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
    assert price_id < constants.MAX_PRICE_IDS, "oracle: too many price ids"
    self.price_id_count = price_id + 1
    self.price_id_name[price_id] = name
    log PriceIdAdded(price_id=price_id, name=name)
    return price_id


@internal
@view
def _feeds_of(price_id: uint256) -> DynArray[Feed, MAX_FEEDS]:
    """
    @dev The feeds of a price id, unpacked (see `_feeds`).
    """
    first: uint256 = self._feeds[price_id][0]
    out: DynArray[Feed, MAX_FEEDS] = []
    for i: uint256 in range((first >> FEED_COUNT_SHIFT) & 3, bound=MAX_FEEDS):
        word: uint256 = first
        if i != 0:
            word = self._feeds[price_id][i]
        out.append(Feed(aggregator=convert(convert(word & (2**160 - 1), uint160), address), scale=(word >> 160) & (2**60 - 1), heartbeat=(word >> 220) & (2**32 - 1)))
    return out


@internal
def _store_feeds(price_id: uint256, feeds: DynArray[Feed, MAX_FEEDS]):
    # scale <= 10**18 < 2**60 and heartbeat <= MAX_HEARTBEAT < 2**32 (`_check_feeds`); the
    # breaker flag in word 0 is kept
    words: uint256[MAX_FEEDS] = empty(uint256[MAX_FEEDS])
    for i: uint256 in range(len(feeds), bound=MAX_FEEDS):
        words[i] = convert(convert(feeds[i].aggregator, uint160), uint256) | (feeds[i].scale << 160) | (feeds[i].heartbeat << 220)
    words[0] |= (len(feeds) << FEED_COUNT_SHIFT) | (self._feeds[price_id][0] & BREAKER_BIT)
    self._feeds[price_id] = words


@internal
@view
def _check_feeds(price_id: uint256, aggregators: DynArray[address, MAX_FEEDS], heartbeats: DynArray[uint256, MAX_FEEDS]) -> DynArray[Feed, MAX_FEEDS]:
    """
    @dev The feeds of `set_feeds`, each answering validly now; once the price id has an index,
         their median must agree with it within FEED_AGREEMENT.
    """
    assert price_id < self.price_id_count, "oracle: unknown price id"
    assert len(aggregators) > 0, "oracle: no feed"
    assert len(aggregators) == len(heartbeats), "oracle: length mismatch"
    feeds: DynArray[Feed, MAX_FEEDS] = []
    answers: DynArray[uint256, MAX_FEEDS] = []
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
        ok, price, updated_at = self._read(feed, self._breaker(price_id))
        assert ok, "oracle: feed answer invalid"
        feeds.append(feed)
        answers.append(price)
    live: uint256 = 0
    oldest: uint256 = 0
    live, oldest = self._median(price_id)
    if live != 0:
        proposed: uint256 = self._median_of(answers)
        assert (max(proposed, live) - min(proposed, live)) * 10**18 <= live * FEED_AGREEMENT, "oracle: feeds disagree with the index"
    return feeds


@external
def set_feeds(price_id: uint256, aggregators: DynArray[address, MAX_FEEDS], heartbeats: DynArray[uint256, MAX_FEEDS]):
    """
    @notice Set the feeds of a price id (admin). The first feeds of a price id, or longer
            heartbeats for the same feeds, apply at once; any other change (new feeds, a
            shorter heartbeat) is only proposed and applies through `activate_feeds` after
            FEED_DELAY, so users see it coming for the timelock's delay plus two days.
    @dev Every feed must answer validly now and, once the price id has an index, their median
         must be within FEED_AGREEMENT (5%) of it, here and again on activation. Reverts
         "roles: not admin", "oracle: unknown price id", "oracle: no feed", "oracle: length
         mismatch", "oracle: heartbeat out of bounds", "oracle: feed decimals above 18",
         "oracle: duplicate feed", "oracle: feed answer invalid", "oracle: feeds disagree with
         the index".
    @param price_id An existing price id.
    @param aggregators One to three AggregatorV3 feeds, each with at most 18 decimals.
    @param heartbeats Staleness bound of each feed, seconds, within [60 s, 2 days].
    """
    roles._check_admin()
    feeds: DynArray[Feed, MAX_FEEDS] = self._check_feeds(price_id, aggregators, heartbeats)
    current: DynArray[Feed, MAX_FEEDS] = self._feeds_of(price_id)
    same: bool = len(current) == len(feeds)
    if same:
        for i: uint256 in range(len(feeds), bound=MAX_FEEDS):
            # a shorter heartbeat could make the live price stale at once: it waits too
            same = same and current[i].aggregator == feeds[i].aggregator and feeds[i].heartbeat >= current[i].heartbeat
    if len(current) == 0 or same:
        self._store_feeds(price_id, feeds)
        self.pending_feeds[price_id] = empty(PendingFeeds)
        log FeedsSet(price_id=price_id, aggregators=aggregators, heartbeats=heartbeats)
        return
    self.pending_feeds[price_id] = PendingFeeds(aggregators=aggregators, heartbeats=heartbeats, activates_at=block.timestamp + FEED_DELAY)
    log FeedsProposed(price_id=price_id, aggregators=aggregators, heartbeats=heartbeats, activates_at=block.timestamp + FEED_DELAY)


@external
def activate_feeds(price_id: uint256):
    """
    @notice Apply a proposed feed change once FEED_DELAY has passed (anyone), checked again
            against the live index.
    @dev Reverts "oracle: no proposed feeds", "oracle: feeds not yet active", and the checks of
         `set_feeds`.
    """
    pending: PendingFeeds = self.pending_feeds[price_id]
    assert pending.activates_at != 0, "oracle: no proposed feeds"
    assert block.timestamp >= pending.activates_at, "oracle: feeds not yet active"
    self._store_feeds(price_id, self._check_feeds(price_id, pending.aggregators, pending.heartbeats))
    self.pending_feeds[price_id] = empty(PendingFeeds)
    log FeedsSet(price_id=price_id, aggregators=pending.aggregators, heartbeats=pending.heartbeats)


@external
def set_circuit_breaker(price_id: uint256, min_price: uint256, max_price: uint256, max_jump: uint256):
    """
    @notice Bound a price id's answers (risk admin): feeds answering at or outside
            [min_price, max_price], or moving more than `max_jump` from their previous round,
            are ignored. The bounds are relative to the live index, so a breaker can never
            refuse the price it is set at (and so stop liquidations): min_price at most 20% of
            it, max_price at least 5x it (or 0), max_jump at least 25% (or 0). Without a live
            index (an outage) a breaker can only be loosened.
    @dev Reverts "roles: not risk admin", "oracle: unknown price id", "oracle: empty price
         band", "oracle: max_jump out of bounds", "oracle: breaker too close to the index",
         "oracle: breaker can only be loosened without an index".
    @param min_price WAD; an answer <= it is refused (a feed pinned at its floor).
    @param max_price WAD, > min_price; an answer >= it is refused; 0 = no ceiling.
    @param max_jump WAD fraction of the previous round's answer, 0 = unchecked, else in
           [25%, 100%].
    """
    roles._check_risk_admin()
    assert price_id < self.price_id_count, "oracle: unknown price id"
    assert max_price == 0 or max_price > min_price, "oracle: empty price band"
    assert max_jump <= 10**18 and (max_jump == 0 or max_jump >= BREAKER_MIN_JUMP), "oracle: max_jump out of bounds"
    live: uint256 = 0
    oldest: uint256 = 0
    live, oldest = self._median(price_id)
    if live != 0:
        assert min_price * 10**18 <= live * BREAKER_MIN_FLOOR and (max_price == 0 or max_price * 10**18 >= live * BREAKER_MAX_CEILING), "oracle: breaker too close to the index"
    else:
        old: CircuitBreaker = self.circuit_breakers[price_id]
        looser: bool = min_price <= old.min_price and (max_price == 0 or (old.max_price != 0 and max_price >= old.max_price))
        assert looser and (max_jump == 0 or (old.max_jump != 0 and max_jump >= old.max_jump)), "oracle: breaker can only be loosened without an index"
    self.circuit_breakers[price_id] = CircuitBreaker(min_price=min_price, max_price=max_price, max_jump=max_jump)
    first: uint256 = self._feeds[price_id][0] & (FEED_BITS | (3 << FEED_COUNT_SHIFT))
    if min_price != 0 or max_price != 0 or max_jump != 0:
        first |= BREAKER_BIT
    self._feeds[price_id][0] = first
    log CircuitBreakerSet(price_id=price_id, min_price=min_price, max_price=max_price, max_jump=max_jump)


@internal
@view
def _breaker(price_id: uint256) -> CircuitBreaker:
    # the flag shares the first feed's slot: no read of its own, and not three without a breaker
    if self._feeds[price_id][0] & BREAKER_BIT == 0:
        return empty(CircuitBreaker)
    return self.circuit_breakers[price_id]


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
    breaker: CircuitBreaker = self._breaker(price_id)
    feeds: DynArray[Feed, MAX_FEEDS] = self._feeds_of(price_id)
    for feed: Feed in feeds:
        ok: bool = False
        price: uint256 = 0
        updated_at: uint256 = 0
        ok, price, updated_at = self._read(feed, breaker)
        if ok:
            prices.append(price)
            oldest = min(oldest, updated_at)
    if len(prices) == 0:
        return 0, 0
    return self._median_of(prices), oldest


@internal
@pure
def _median_of(values: DynArray[uint256, MAX_FEEDS]) -> uint256:
    """
    @dev Median of at most three values (floor of the mean of the middle two for an even
         count); 0 for none.
    """
    prices: DynArray[uint256, MAX_FEEDS] = values
    n: uint256 = len(prices)
    if n == 0:
        return 0
    # insertion sort: at most three elements
    for i: uint256 in range(1, MAX_FEEDS):
        if i >= n:
            break
        j: uint256 = i
        for k: uint256 in range(MAX_FEEDS):
            if j == 0 or prices[j - 1] <= prices[j]:
                break
            tmp: uint256 = prices[j - 1]
            prices[j - 1] = prices[j]
            prices[j] = tmp
            j -= 1
    if n % 2 == 1:
        return prices[n // 2]
    return (prices[n // 2 - 1] + prices[n // 2]) // 2


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


@internal
@view
def _expiry_answer(feed: Feed, breaker: CircuitBreaker, expiry: uint256) -> (uint256, uint256):
    """
    @dev One feed at `expiry`: (state, WAD answer of its first round with updatedAt >= expiry).
         The round is found by binary search over the round ids of the latest round's phase
         (a round that cannot be read counts as before expiry). States: WAITING (no such round yet, within a heartbeat of
         expiry), SILENT (none, a heartbeat has passed, or its answer is invalid), LATE (first
         published more than a heartbeat after expiry), TIMELY.
    """
    ok: bool = False
    round_id: uint80 = 0
    answer: int256 = 0
    updated_at: uint256 = 0
    ok, round_id, answer, updated_at = self._round(feed.aggregator, method_id("latestRoundData()"))
    if not ok or updated_at < expiry or updated_at > block.timestamp:
        if block.timestamp > expiry + feed.heartbeat:
            return SILENT, 0
        return WAITING, 0
    # binary search for the first round at or after expiry among the rounds of the latest's
    # phase (Chainlink round ids are phase << 64 | n, n from 1; times grow with n)
    lo: uint256 = (convert(round_id, uint256) >> 64 << 64) | 1
    hi: uint256 = convert(round_id, uint256)
    for i: uint256 in range(64):
        if lo >= hi:
            break
        mid: uint256 = (lo + hi) // 2
        mid_ok: bool = False
        mid_round: uint80 = 0
        mid_answer: int256 = 0
        mid_time: uint256 = 0
        mid_ok, mid_round, mid_answer, mid_time = self._round(
            feed.aggregator, abi_encode(convert(mid, uint80), method_id=method_id("getRoundData(uint80)"))
        )
        if mid_ok and mid_time >= expiry:
            hi = mid
            answer = mid_answer
            updated_at = mid_time
        else:
            lo = mid + 1
    if answer <= 0 or convert(answer, uint256) > max_value(uint256) // feed.scale // 10**36:
        return SILENT, 0
    price: uint256 = convert(answer, uint256) * feed.scale
    if price <= breaker.min_price or (breaker.max_price != 0 and price >= breaker.max_price):
        return SILENT, 0
    if updated_at > expiry + feed.heartbeat:
        return LATE, price
    return TIMELY, price


@external
@view
def expiry_price(price_id: uint256, expiry: uint256) -> uint256:
    """
    @notice The settlement price of an underlying at `expiry`: the median of each feed's first
            valid round published at or after expiry. It does not depend on when it is asked,
            so nobody can choose a settlement price by choosing when to settle (the rule of
            Opyn's Chainlink pricer and of CME's final settlement at a fixed time).
    @dev Feeds whose first round came within their heartbeat of expiry count; once every feed
         is decided (published since expiry, or silent for a heartbeat), their median is the
         price. If none was timely, every feed's first round counts once each has one. 0
         while undecided or before expiry. Never reverts but for "oracle: unknown price id",
         so settling inside a liquidation cannot block it.
    @param price_id The underlying's price id.
    @param expiry Unix seconds.
    @return WAD USD per unit, or 0.
    """
    assert price_id < self.price_id_count, "oracle: unknown price id"
    if block.timestamp < expiry:
        return 0
    timely: DynArray[uint256, MAX_FEEDS] = []
    late: DynArray[uint256, MAX_FEEDS] = []
    all_published: bool = True
    breaker: CircuitBreaker = self._breaker(price_id)
    feeds: DynArray[Feed, MAX_FEEDS] = self._feeds_of(price_id)
    for feed: Feed in feeds:
        state: uint256 = 0
        price: uint256 = 0
        state, price = self._expiry_answer(feed, breaker, expiry)
        if state == WAITING:
            return 0
        if state == TIMELY:
            timely.append(price)
        elif state == LATE:
            late.append(price)
        else:
            all_published = False
    if len(timely) != 0:
        return self._median_of(timely)
    if not all_published:
        return 0
    return self._median_of(late)


@external
@view
def index_price_with_time(price_id: uint256) -> (uint256, uint256):
    """
    @notice Index price and the oldest `updatedAt` of the feeds that formed it.
    @dev Used by expiry settlement to refuse a price published before expiry.
    @return (WAD price, unix seconds).
    """
    return self._index_price(price_id)


@internal
@view
def _index_prices(mask: uint256) -> DynArray[uint256, constants.MAX_PRICE_IDS]:
    out: DynArray[uint256, constants.MAX_PRICE_IDS] = []
    for price_id: uint256 in range(self.price_id_count, bound=constants.MAX_PRICE_IDS):
        price: uint256 = 0
        if mask & (1 << price_id) != 0:
            updated_at: uint256 = 0
            price, updated_at = self._median(price_id)
        out.append(price)
    return out


@external
@view
def index_prices() -> DynArray[uint256, constants.MAX_PRICE_IDS]:
    """
    @notice Index prices of every price id, in id order, with 0 for an id that has no valid
            feed now. Never reverts, so one broken underlying cannot freeze accounts that do
            not use it; users of a price must reject 0.
    @return WAD prices, one per price id (0 = unavailable).
    """
    return self._index_prices(max_value(uint256))


@external
@view
def index_prices_of(mask: uint256) -> DynArray[uint256, constants.MAX_PRICE_IDS]:
    """
    @notice As `index_prices`, reading only the price ids whose bit is set in `mask` (bit i =
            price id i); the others are 0, like an unavailable price, so a user that reads a
            price it did not ask for rejects it rather than misvalue with it.
    @custom:security A margin check reads only the prices of what the account holds (about 17k
            gas per feed not read), without trusting the mask: a price left out is 0, which
            every valuation rejects ("no valid price"), never counts.
    @return WAD prices, one per price id (0 = unavailable or not asked for).
    """
    return self._index_prices(mask)


@external
@view
def feeds(price_id: uint256) -> DynArray[Feed, MAX_FEEDS]:
    """
    @notice The configured feeds of a price id (aggregator, 10**(18 - decimals), heartbeat).
    """
    return self._feeds_of(price_id)
