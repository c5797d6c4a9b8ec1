# pragma version 0.4.3
# pragma evm-version cancun
# pragma nonreentrancy off
"""
@title Black-76 option prices with in-house exp, ln and normal CDF (WAD fixed point)
@notice Stateless module: `_exp_wad`, `_ln_wad`, `_norm_cdf` and `_black76` are the internal API;
        the `@external` wrappers at the end exist so the file also compiles as a contract.
@dev Units: WAD = 1e18. Prices (forward, strike, option values) are WAD USD, `sigma` is the
     annualised volatility in WAD, `tau` is seconds to expiry with a year of 365 days.
     Internally everything runs in binary fixed point with scale S = 2**96 (resolution 1.3e-29),
     so the only visible error is the final rounding to the wei plus the approximation errors
     below (measured against float64 and against a 60-digit decimal reference).

     Algorithms (sources):
     - exp: range reduction x = k ln2 + r, |r| <= ln2 / 2, then the [7/7] Pade approximant
       e^r = P(r) / P(-r), P(r) = sum_j (14 - j)! 7! / (14! j! (7 - j)!) r^j, evaluated as
       (E + O) / (E - O) from its even and odd parts (relative error <= 3e-23; the same
       reduction as Remco Bloemen's / Solady's expWad, with a textbook Pade approximant:
       Baker & Graves-Morris, "Pade Approximants", 1996).
     - ln: x = 2^n m with m in [1/sqrt2, sqrt2), ln m = 2 atanh(s), s = (m - 1) / (m + 1),
       |s| <= 0.1716, atanh series to s^23 (truncation error <= 6e-21).
     - normal CDF: N(x) = erfc(-x / sqrt2) / 2 with W. J. Cody's rational Chebyshev
       approximations ("Rational Chebyshev approximations for the error function", Math. Comp.
       23 (1969) 631-637; coefficients as in his CALERF routine, netlib specfun): erf on
       |y| <= 0.46875, erfc = exp(-y^2) R(y) on (0.46875, 4], erfc = exp(-y^2) / y (1/sqrt(pi) -
       z R(z)), z = 1 / y^2, above 4; about 18 significant digits. N(-x) = 1 - N(x) holds exactly.
     - Black-76 (Black 1976; Hull, "Options, Futures, and Other Derivatives", ch. "Futures
       options", Black's model), undiscounted: call = F N(d1) - K N(d2), put = K N(-d2) - F N(-d1),
       d1 = (ln(F / K) + v^2 / 2) / v, d2 = d1 - v, v = sigma sqrt(tau / year). Only the
       out-of-the-money option is evaluated from the formula (no cancellation against the
       intrinsic value); the other follows by put-call parity, so call - put == F - K exactly.

     Rounding: every result is rounded to the nearest wei (the in-the-money price inherits the
     out-of-the-money one's rounding through parity). A pricing routine serves both sides of a
     trade, so it cannot round in the protocol's favour; margin callers add their own buffers.

     Error bounds (asserted by tests/contracts/test_black76.py; worst seen over 2e4 samples per
     function against 60-digit decimals, and 1e5 Black-76 inputs against float64, in brackets):
     - exp_wad: |err| <= 1 wei + 1e-21 * result on [-42.2, 135.305999368893231588]
       [0.50 wei; 4.6e-22 relative]; 0 below, revert above.
     - ln_wad: |err| <= 1 wei for every x > 0 [0.503 wei].
     - norm_cdf: |err| <= 1 wei for every x [0.745 wei]; N(x) + N(-x) == 1e18 exactly.
     - black76, supported range: forward and strike in [1e-6, 1e12] USD with |ln(K / F)| <= 8,
       sigma in [0.01, 5], tau in [60 s, 4 years], sigma sqrt(tau / year) <= 10:
       relative error < 1e-8 for every price >= max(1e-12 * forward, 1e-10 USD) [4.4e-9, all of
       it the rounding to the wei: 1e-10 USD is 1e8 wei]; below that floor |err| <= 1e-12 * forward
       [4.3e-13]. Against the decimal reference the error beyond rounding is
       <= 1e-15 * price + 1e-18 * forward.
     Outside the supported range the formula stays well defined up to the hard limits (forward
     and strike <= 1e18 USD, sigma <= 100, tau <= 100 years), with parity and the no-arbitrage
     bounds still exact; inputs beyond the limits revert with one reason.
@license MIT
"""

from . import constants


# Binary fixed point used internally: S = 2**96.
ONE_U: constant(uint256) = 2**96
ONE_S: constant(int256) = 2**96

YEAR: constant(uint256) = 365 * 86400

# round(c * 2**96) for the constants c named (computed with 80-digit decimal arithmetic).
LN2: constant(int256) = 54916777467707473351141471128
HALF_LN2: constant(int256) = 27458388733853736675570735564
SQRT2: constant(uint256) = 112045541949572279837463876455
INV_SQRT2: constant(uint256) = 56022770974786139918731938227
INV_SQRT_PI: constant(uint256) = 44699704014176752299205233279
# 18 ln 10, i.e. ln(1e18)
LN_WAD: constant(int256) = 3283732547111784853622338894909

# [7/7] Pade approximant of e^r: p_j = (14 - j)! 7! / (14! j! (7 - j)!), times 2**96.
PADE1: constant(uint256) = 39614081257132168796771975168  # 1/2
PADE2: constant(uint256) = 9141711059338192799255071193  # 3/26
PADE3: constant(uint256) = 1269682091574748999896537666  # 5/312
PADE4: constant(uint256) = 115425644688613545445139788  # 5/3432
PADE5: constant(uint256) = 6925538681316812726708387  # 1/11440
PADE6: constant(uint256) = 256501432641363434322533  # 1/308880
PADE7: constant(uint256) = 4580382725738632755760  # 1/17297280

# 2 / (2j + 1) times 2**96: ln m = s * sum_j ATANH_j * (s^2)^j.
ATANH0: constant(int256) = 158456325028528675187087900672
ATANH1: constant(int256) = 52818775009509558395695966891
ATANH2: constant(int256) = 31691265005705735037417580134
ATANH3: constant(int256) = 22636617861218382169583985810
ATANH4: constant(int256) = 17606258336503186131898655630
ATANH5: constant(int256) = 14405120457138970471553445516
ATANH6: constant(int256) = 12188948079117590399006761590
ATANH7: constant(int256) = 10563755001901911679139193378
ATANH8: constant(int256) = 9320960295795804422769876510
ATANH9: constant(int256) = 8339806580448877641425678983
ATANH10: constant(int256) = 7545539287072794056527995270
ATANH11: constant(int256) = 6889405436022985877699473942

# Cody (1969) / CALERF coefficients times 2**96 (same letters and numbering as CALERF).
# erf(y) = y * (((( A5 z + A1) z + A2) z + A3) z + A4) / ((((z + B1) z + B2) z + B3) z + B4), z = y^2
CODY_A1: constant(uint256) = 250450025707076886581247306537
CODY_A2: constant(uint256) = 9021247709628648039832258185568
CODY_A3: constant(uint256) = 29907461758066809248288739643583
CODY_A4: constant(uint256) = 254273089201900539567074195561367
CODY_A5: constant(uint256) = 14718826297120989522267759699
CODY_B1: constant(uint256) = 1869886915118756548372537195370
CODY_B2: constant(uint256) = 19333623671754657102261355670280
CODY_B3: constant(uint256) = 101619350571539213703861705930579
CODY_B4: constant(uint256) = 225343658068775198134754514534820
# erfc(y) = exp(-y^2) * (C9 y^8 + C1 y^7 + ... + C8) / (y^8 + D1 y^7 + ... + D8)
CODY_C1: constant(uint256) = 44699617928096889657622007068
CODY_C2: constant(uint256) = 703795635548356084646586573679
CODY_C3: constant(uint256) = 5238501981111082014200872273705
CODY_C4: constant(uint256) = 23660313261573407084931655127250
CODY_C5: constant(uint256) = 69875453914359297475165683179393
CODY_C6: constant(uint256) = 135642386485930422071542593601050
CODY_C7: constant(uint256) = 162503171047897661573903448657807
CODY_C8: constant(uint256) = 97477526349630856709014805599722
CODY_C9: constant(uint256) = 1705873732376185893130
CODY_D1: constant(uint256) = 1247441564674402715388308782874
CODY_D2: constant(uint256) = 9324675468162752757284751900729
CODY_D3: constant(uint256) = 42559871637914902192057554356857
CODY_D4: constant(uint256) = 128459716712703645722747745966674
CODY_D5: constant(uint256) = 260723976650507417503908363478143
CODY_D6: constant(uint256) = 345642294261701205763986324339402
CODY_D7: constant(uint256) = 272494781033366128060994607876358
CODY_D8: constant(uint256) = 97477526350086590568584481494497
# erfc(y) = exp(-y^2) / y * (1/sqrt(pi) - z * (P6 z^5 + P1 z^4 + ... + P5) / (z^5 + Q1 z^4 + ... + Q5)), z = 1/y^2
CODY_P1: constant(uint256) = 24190468254641979548075677148
CODY_P2: constant(uint256) = 28549464294409429239309166502
CODY_P3: constant(uint256) = 9965455037665156781189731045
CODY_P4: constant(uint256) = 1274288743609064302228435833
CODY_P5: constant(uint256) = 52191485625821358484252609
CODY_P6: constant(uint256) = 1292638143597308606185134227
CODY_Q1: constant(uint256) = 203499135215907536926559700119
CODY_Q2: constant(uint256) = 148390612775290470427584872687
CODY_Q3: constant(uint256) = 41824951288745216438906699708
CODY_Q4: constant(uint256) = 4794756980595818152451134389
CODY_Q5: constant(uint256) = 185013999363934713685846035

# Region bounds of y = |x| / sqrt2 (times 2**96): 0.46875 and 4.
ERF_SMALL: constant(uint256) = 15 * 2**91
ERF_MID: constant(uint256) = 4 * 2**96
# |x| >= 12: N(-x) < 2e-33, below the internal resolution; also keeps y^2 small.
CDF_CUTOFF: constant(uint256) = 12 * 2**96
CDF_CUTOFF_WAD: constant(int256) = 12 * 10**18

# exp_wad domain: below EXP_MIN the result rounds to 0; at EXP_MAX it is just below 2**255.
EXP_MIN_WAD: constant(int256) = -42_200_000_000_000_000_000
EXP_MAX_WAD: constant(int256) = 135_305_999_368_893_231_588

# Hard input limits of _black76 (beyond them it reverts).
MAX_PRICE: constant(uint256) = 10**36  # 1e18 USD
MAX_SIGMA: constant(uint256) = 100 * 10**18  # 10,000% a year
MAX_TAU: constant(uint256) = 100 * YEAR


@internal
@pure
def _exp_parts(x: int256) -> (uint256, int256):
    """
    @dev e^(x / 2**96) = m * 2**(k - 96) with m in [2**96 / sqrt2, 2**96 * sqrt2].
         Callers keep |x| <= 2**104 (|x / 2**96| <= 256), so no product below can overflow.
    @param x Exponent times 2**96.
    @return m Mantissa e^r times 2**96; k Power of two, k = round(x / ln2).
    """
    k: int256 = 0
    if x >= 0:
        k = unsafe_div(unsafe_add(x, HALF_LN2), LN2)
    else:
        k = -unsafe_div(unsafe_sub(HALF_LN2, x), LN2)
    # |r| <= ln2 / 2 (+1 ulp per unit of k from rounding LN2).
    r: int256 = unsafe_sub(x, unsafe_mul(k, LN2))
    neg: bool = r < 0
    a: uint256 = convert(-r if neg else r, uint256)
    # a < 2**95, so every product below is < 2**192.
    a2: uint256 = unsafe_mul(a, a) >> 96
    e: uint256 = unsafe_add(
        ONE_U, unsafe_mul(a2, unsafe_add(PADE2, unsafe_mul(a2, unsafe_add(PADE4, unsafe_mul(a2, PADE6) >> 96)) >> 96)) >> 96
    )
    o: uint256 = unsafe_mul(
        a,
        unsafe_add(
            PADE1,
            unsafe_mul(a2, unsafe_add(PADE3, unsafe_mul(a2, unsafe_add(PADE5, unsafe_mul(a2, PADE7) >> 96)) >> 96)) >> 96,
        ),
    ) >> 96
    # e^r = (E + O) / (E - O); E - O > 0.7 * 2**96 for |r| <= ln2 / 2.
    if neg:
        return unsafe_div(unsafe_sub(e, o) << 96, unsafe_add(e, o)), k
    return unsafe_div(unsafe_add(e, o) << 96, unsafe_sub(e, o)), k


@internal
@pure
def _exp_wad(x: int256) -> uint256:
    """
    @dev e^x in WAD, rounded to the nearest wei. Reverts above EXP_MAX_WAD (result would
         exceed 2**255); returns 0 below EXP_MIN_WAD (e^x < 0.5e-18).
    @param x Exponent, WAD.
    @return e^x, WAD.
    """
    if x < EXP_MIN_WAD:
        return 0
    assert x <= EXP_MAX_WAD, "black76: exp argument above 135.305999368893231588"
    m: uint256 = 0
    k: int256 = 0
    # |x| < 136e18, so x * 2**96 < 2**164.
    m, k = self._exp_parts(unsafe_div(unsafe_mul(x, ONE_S), constants.IWAD))
    v: uint256 = unsafe_mul(m, constants.WAD)  # < 2**158
    sh: int256 = k - 96
    if sh >= 0:
        # v * 2**sh ~ e^x * 1e18 < 2**255 by the domain check.
        return v << convert(sh, uint256)
    s: uint256 = convert(-sh, uint256)  # <= 157
    return unsafe_add(v, 1 << unsafe_sub(s, 1)) >> s


@internal
@pure
def _ln_parts(x: uint256) -> int256:
    """
    @dev ln(x) times 2**96 for an integer x >= 1 (absolute error < 1e-20).
    """
    # n = floor(log2 x) by binary search (no loop).
    n: uint256 = 0
    t: uint256 = x
    if t >= 2**128:
        t = t >> 128
        n = 128
    if t >= 2**64:
        t = t >> 64
        n = unsafe_add(n, 64)
    if t >= 2**32:
        t = t >> 32
        n = unsafe_add(n, 32)
    if t >= 2**16:
        t = t >> 16
        n = unsafe_add(n, 16)
    if t >= 2**8:
        t = t >> 8
        n = unsafe_add(n, 8)
    if t >= 2**4:
        t = t >> 4
        n = unsafe_add(n, 4)
    if t >= 2**2:
        t = t >> 2
        n = unsafe_add(n, 2)
    if t >= 2:
        n = unsafe_add(n, 1)
    # m = x / 2^n in [1, 2), times 2**96.
    m: uint256 = 0
    if n >= 96:
        m = x >> unsafe_sub(n, 96)
    else:
        m = x << unsafe_sub(96, n)
    e: int256 = convert(n, int256)
    if m > SQRT2:
        m = m >> 1
        e = unsafe_add(e, 1)
    # s = (m - 1) / (m + 1), |s| <= 0.1716; ln m = 2 atanh(s). m < 2**97, all products < 2**194.
    mi: int256 = convert(m, int256)
    s: int256 = unsafe_div(unsafe_mul(unsafe_sub(mi, ONE_S), ONE_S), unsafe_add(mi, ONE_S))
    z: int256 = unsafe_mul(s, s) >> 96
    p: int256 = unsafe_add(ATANH10, unsafe_mul(z, ATANH11) >> 96)
    p = unsafe_add(ATANH9, unsafe_mul(z, p) >> 96)
    p = unsafe_add(ATANH8, unsafe_mul(z, p) >> 96)
    p = unsafe_add(ATANH7, unsafe_mul(z, p) >> 96)
    p = unsafe_add(ATANH6, unsafe_mul(z, p) >> 96)
    p = unsafe_add(ATANH5, unsafe_mul(z, p) >> 96)
    p = unsafe_add(ATANH4, unsafe_mul(z, p) >> 96)
    p = unsafe_add(ATANH3, unsafe_mul(z, p) >> 96)
    p = unsafe_add(ATANH2, unsafe_mul(z, p) >> 96)
    p = unsafe_add(ATANH1, unsafe_mul(z, p) >> 96)
    p = unsafe_add(ATANH0, unsafe_mul(z, p) >> 96)
    # e <= 256, so e * LN2 < 2**105.
    return unsafe_add(unsafe_mul(e, LN2), unsafe_mul(s, p) >> 96)


@internal
@pure
def _ln_wad(x: uint256) -> int256:
    """
    @dev Natural logarithm, rounded to the nearest wei.
    @param x Argument, WAD, > 0.
    @return ln(x / 1e18) times 1e18.
    """
    assert x > 0, "black76: ln of zero"
    r: int256 = unsafe_sub(self._ln_parts(x), LN_WAD)  # |r| < 2**105
    return unsafe_add(unsafe_mul(r, constants.IWAD), 2**95) >> 96


@internal
@pure
def _upper_tail(ax: uint256) -> uint256:
    """
    @dev Q(x) = 1 - N(x) = erfc(x / sqrt2) / 2 for x >= 0, times 2**96 (Cody 1969).
    @param ax x times 2**96, x >= 0.
    """
    if ax >= CDF_CUTOFF:
        return 0
    y: uint256 = unsafe_mul(ax, INV_SQRT2) >> 96  # y < 8.5 * 2**96
    if y <= ERF_SMALL:
        z: uint256 = unsafe_mul(y, y) >> 96
        num: uint256 = unsafe_add(unsafe_mul(CODY_A5, z) >> 96, CODY_A1)
        num = unsafe_add(unsafe_mul(num, z) >> 96, CODY_A2)
        num = unsafe_add(unsafe_mul(num, z) >> 96, CODY_A3)
        num = unsafe_add(unsafe_mul(num, z) >> 96, CODY_A4)
        den: uint256 = unsafe_add(z, CODY_B1)
        den = unsafe_add(unsafe_mul(den, z) >> 96, CODY_B2)
        den = unsafe_add(unsafe_mul(den, z) >> 96, CODY_B3)
        den = unsafe_add(unsafe_mul(den, z) >> 96, CODY_B4)
        erf: uint256 = unsafe_div(unsafe_mul(y, num), den)  # < 0.5 * 2**96
        return unsafe_sub(ONE_U, erf) >> 1
    # ex = e^(-y^2) times 2**96 (y^2 < 73, so k in [-106, 0]).
    m: uint256 = 0
    k: int256 = 0
    m, k = self._exp_parts(-convert(unsafe_mul(y, y) >> 96, int256))
    ex: uint256 = m >> convert(-k, uint256)
    if y <= ERF_MID:
        # y <= 4 * 2**96: num, den < 2**113, products < 2**211.
        num: uint256 = unsafe_add(unsafe_mul(CODY_C9, y) >> 96, CODY_C1)
        num = unsafe_add(unsafe_mul(num, y) >> 96, CODY_C2)
        num = unsafe_add(unsafe_mul(num, y) >> 96, CODY_C3)
        num = unsafe_add(unsafe_mul(num, y) >> 96, CODY_C4)
        num = unsafe_add(unsafe_mul(num, y) >> 96, CODY_C5)
        num = unsafe_add(unsafe_mul(num, y) >> 96, CODY_C6)
        num = unsafe_add(unsafe_mul(num, y) >> 96, CODY_C7)
        num = unsafe_add(unsafe_mul(num, y) >> 96, CODY_C8)
        den: uint256 = unsafe_add(y, CODY_D1)
        den = unsafe_add(unsafe_mul(den, y) >> 96, CODY_D2)
        den = unsafe_add(unsafe_mul(den, y) >> 96, CODY_D3)
        den = unsafe_add(unsafe_mul(den, y) >> 96, CODY_D4)
        den = unsafe_add(unsafe_mul(den, y) >> 96, CODY_D5)
        den = unsafe_add(unsafe_mul(den, y) >> 96, CODY_D6)
        den = unsafe_add(unsafe_mul(den, y) >> 96, CODY_D7)
        den = unsafe_add(unsafe_mul(den, y) >> 96, CODY_D8)
        # num / den < 1, ex <= 2**96: erfc / 2 = ex * num / den / 2.
        return unsafe_div(unsafe_mul(ex, num), den) >> 1
    # y > 4: z = 1 / y^2 < 1/16.
    z: uint256 = unsafe_div(2**192, unsafe_mul(y, y) >> 96)
    num: uint256 = unsafe_add(unsafe_mul(CODY_P6, z) >> 96, CODY_P1)
    num = unsafe_add(unsafe_mul(num, z) >> 96, CODY_P2)
    num = unsafe_add(unsafe_mul(num, z) >> 96, CODY_P3)
    num = unsafe_add(unsafe_mul(num, z) >> 96, CODY_P4)
    num = unsafe_add(unsafe_mul(num, z) >> 96, CODY_P5)
    den: uint256 = unsafe_add(z, CODY_Q1)
    den = unsafe_add(unsafe_mul(den, z) >> 96, CODY_Q2)
    den = unsafe_add(unsafe_mul(den, z) >> 96, CODY_Q3)
    den = unsafe_add(unsafe_mul(den, z) >> 96, CODY_Q4)
    den = unsafe_add(unsafe_mul(den, z) >> 96, CODY_Q5)
    # z * num / den < 0.03 < 1/sqrt(pi), so the bracket stays positive.
    bracket: uint256 = unsafe_sub(INV_SQRT_PI, unsafe_div(unsafe_mul(z, num), den))
    return unsafe_div(unsafe_mul(ex, bracket), y) >> 1


@internal
@pure
def _cdf(x: int256) -> uint256:
    """
    @dev N(x) times 2**96 for x times 2**96 (any int256); N(-x) == 2**96 - N(x) exactly.
    """
    # callers pass |x| < 2**201, so abs() cannot meet min_value(int256).
    q: uint256 = self._upper_tail(convert(abs(x), uint256))
    if x < 0:
        return q
    return unsafe_sub(ONE_U, q)


@internal
@pure
def _norm_cdf(x: int256) -> uint256:
    """
    @dev Standard normal cumulative distribution function, rounded to the nearest wei.
    @param x Argument, WAD (any value; |x| >= 12 saturates).
    @return N(x), WAD in [0, 1e18]; N(x) + N(-x) == 1e18 exactly.
    """
    q: uint256 = 0
    if x < CDF_CUTOFF_WAD and x > -CDF_CUTOFF_WAD:
        # |x| < 12e18: |x| * 2**96 < 2**160.
        ax: uint256 = unsafe_div(unsafe_mul(convert(abs(x), uint256), ONE_U), constants.WAD)
        q = unsafe_add(unsafe_mul(self._upper_tail(ax), constants.WAD), 2**95) >> 96
    if x < 0:
        return q
    return unsafe_sub(constants.WAD, q)


@internal
@pure
def _black76(forward: uint256, strike: uint256, sigma: uint256, tau: uint256) -> (uint256, uint256):
    """
    @dev Undiscounted Black-76 call and put on a forward (multiply by the discount factor
         yourself). tau == 0 or sigma == 0 gives the intrinsic values. Always
         call - put == forward - strike, max(F - K, 0) <= call <= F and max(K - F, 0) <= put <= K.
    @param forward Forward price F, WAD USD, in (0, 1e36].
    @param strike Strike K, WAD USD, in (0, 1e36].
    @param sigma Annualised volatility, WAD (1e18 = 100%), <= 100e18.
    @param tau Seconds to expiry, <= 100 years of 365 days.
    @return call Call value per unit of underlying, WAD USD; put Put value, WAD USD.
    """
    assert forward > 0, "black76: zero forward"
    assert strike > 0, "black76: zero strike"
    assert forward <= MAX_PRICE and strike <= MAX_PRICE, "black76: price above 1e18 USD"
    assert sigma <= MAX_SIGMA, "black76: sigma above 100 (10,000%)"
    assert tau <= MAX_TAU, "black76: tau above 100 years"
    call_otm: bool = forward < strike
    # sqrt(tau / year) times 2**96; tau * 2**192 < 2**224.
    sqrt_t: uint256 = isqrt(unsafe_div(unsafe_mul(tau, 2**192), YEAR))
    # v = sigma sqrt(tau / year) times 2**96; sigma * sqrt_t < 2**67 * 2**100.
    v: int256 = convert(unsafe_div(unsafe_mul(sigma, sqrt_t), constants.WAD), int256)
    if v == 0:
        if call_otm:
            return 0, unsafe_sub(strike, forward)
        return unsafe_sub(forward, strike), 0
    # ln(F / K) times 2**96; F * 2**128 < 2**248 and F * 2**128 / K >= 2**128 / 1e36 > 0.
    k: int256 = unsafe_sub(self._ln_parts(unsafe_div(forward << 128, strike)), unsafe_mul(128, LN2))
    # d1 = k / v + v / 2; |k| < 2**104, |k * 2**96| < 2**200.
    d1: int256 = unsafe_add(unsafe_div(unsafe_mul(k, ONE_S), v), v >> 1)
    d2: int256 = unsafe_sub(d1, v)
    # F, K <= 1e36 < 2**120 and N <= 2**96: products < 2**216.
    if call_otm:
        a: uint256 = unsafe_mul(forward, self._cdf(d1))
        b: uint256 = unsafe_mul(strike, self._cdf(d2))
        c: uint256 = 0
        if a > b:
            c = unsafe_add(unsafe_sub(a, b), 2**95) >> 96
        # c <= round(F * N(d1)) <= F < K, so put = c + K - F <= K.
        return c, unsafe_sub(unsafe_add(c, strike), forward)
    a: uint256 = unsafe_mul(strike, self._cdf(-d2))
    b: uint256 = unsafe_mul(forward, self._cdf(-d1))
    p: uint256 = 0
    if a > b:
        p = unsafe_add(unsafe_sub(a, b), 2**95) >> 96
    # p <= round(K * N(-d2)) <= K <= F, so call = p + F - K <= F.
    return unsafe_sub(unsafe_add(p, forward), strike), p


@external
@pure
def exp_wad(x: int256) -> uint256:
    """
    @notice e^x in WAD (see `_exp_wad`).
    @param x Exponent, WAD, <= 135.305999368893231588e18.
    @return e^x, WAD, rounded to the nearest wei.
    """
    return self._exp_wad(x)


@external
@pure
def ln_wad(x: uint256) -> int256:
    """
    @notice Natural logarithm in WAD (see `_ln_wad`).
    @param x Argument, WAD, > 0.
    @return ln(x), WAD, rounded to the nearest wei.
    """
    return self._ln_wad(x)


@external
@pure
def norm_cdf(x: int256) -> uint256:
    """
    @notice Standard normal CDF (see `_norm_cdf`).
    @param x Argument, WAD.
    @return N(x), WAD in [0, 1e18].
    """
    return self._norm_cdf(x)


@external
@pure
def black76(forward: uint256, strike: uint256, sigma: uint256, tau: uint256) -> (uint256, uint256):
    """
    @notice Undiscounted Black-76 call and put prices (see `_black76`).
    @param forward Forward price, WAD USD.
    @param strike Strike, WAD USD.
    @param sigma Annualised volatility, WAD.
    @param tau Seconds to expiry (year = 365 days).
    @return call Call price, WAD USD; put Put price, WAD USD.
    """
    return self._black76(forward, strike, sigma, tau)
