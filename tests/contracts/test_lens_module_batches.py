"""MarginLens's batched option / attestation views equal the per-account calls they replace
(OptionMarket.option_states, HealthAttestor.attestation, MarginLens.position_version), and are
empty while the engine has no module wired."""

from __future__ import annotations

import boa
import pytest
from web3.exceptions import ContractLogicError

from keeper.chain.attestations import sign_attestation
from keeper.chain.client import ProtocolClient
from tests.boa_protocol import WAD, ZERO_ADDRESS, OptionsKit

ETH, DAY = 0, 86400
ATM, SKEW = 8 * WAD // 10, -WAD // 5


def holders(kit: OptionsKit):
    """A long call + short put holder, an account without options, an attested account and the
    counterparty (short the call, long the put)."""
    p = kit.p
    t = boa.env.evm.patch.timestamp
    expiry = t + 30 * DAY
    call, put = kit.list(ETH, 2100 * WAD, expiry, True), kit.list(ETH, 1900 * WAD, expiry, False)
    kit.set_vol(ETH, expiry, ATM, SKEW)
    users = [p.new_user() for _ in range(3)]
    rich = p.new_user()
    p.deposit_usd(rich, 10_000_000)
    for u in users:
        p.deposit_usd(u, 50_000)
    marks = kit.market.series_states()
    kit.trade(users[0], rich, call, 2 * WAD, marks[call].mark)
    kit.trade(rich, users[0], put, WAD, marks[put].mark)
    kit.trade(users[2], rich, call, WAD, marks[call].mark)
    if kit.attestor is not None:
        boa.env.time_travel(seconds=1)
        a = users[2].address
        att = kit.attestation(a, 400 * WAD, 300 * WAD)
        kit.attestor.submit_attestation(
            *sign_attestation(att, [kit.signer.key], boa.env.evm.patch.chain_id, kit.attestor.address)
        )
    return [u.address for u in users] + [rich.address]


def test_batches_equal_the_per_account_calls(protocol):
    kit = OptionsKit.deploy(protocol, attestor=True)
    accounts = holders(kit)
    lens, market, attestor = protocol.lens, kit.market, kit.attestor
    batch = lens.option_states_of(accounts)
    assert batch == [market.option_states(a) if market.has_positions(a) else [] for a in accounts]
    assert [len(row) for row in batch] == [2, 0, 1, 2]  # not vacuous: positions are there
    assert lens.attestations_of(accounts) == [attestor.attestation(a) for a in accounts]
    assert [s.issued_at > 0 for s in lens.attestations_of(accounts)] == [False, False, True, False]
    assert lens.position_versions_of(accounts) == [protocol.engine.position_version(a) for a in accounts]
    assert lens.option_states_of([]) == [] and lens.attestations_of([]) == []


def test_full_batch_of_200_in_order(protocol):
    kit = OptionsKit.deploy(protocol, attestor=True)
    accounts = holders(kit)
    many = (accounts * 50)[:200]
    assert lens_rows(protocol.lens, many) == lens_rows(protocol.lens, accounts) * 50
    with pytest.raises(boa.BoaError):  # DynArray bound: 201 accounts do not encode
        protocol.lens.option_states_of(many + many[:1])


def lens_rows(lens, accounts):
    return [len(row) for row in lens.option_states_of(accounts)]


def test_empty_while_modules_are_unwired(protocol):
    kit = OptionsKit.deploy(protocol, attestor=True)
    accounts = holders(kit)
    with boa.env.prank(protocol.admin):
        protocol.engine.set_portfolio_modules(ZERO_ADDRESS, ZERO_ADDRESS)
    lens = protocol.lens
    assert lens.option_states_of(accounts) == [[] for _ in accounts]
    zero = lens.attestations_of(accounts)
    assert len(zero) == len(accounts) and all(tuple(s) == (0, [], 0, 0, 0, 0, 0) for s in zero)
    # without the market's counter the version is the engine's fills + the vault's withdrawals
    assert lens.position_versions_of(accounts) == [protocol.engine.position_version(a) for a in accounts]


class _Call:
    def __init__(self, fn):
        self.fn = fn

    def call(self, block_identifier=None):
        return self.fn(block_identifier)


def test_client_falls_back_to_per_account_reads_on_an_older_lens():
    """A lens without `position_versions_of` reverts with no data: the client reads each account."""

    def missing(_block):
        raise ContractLogicError("execution reverted", data="0x")

    client = ProtocolClient.__new__(ProtocolClient)
    client._lens_batches = True
    client.lens = type("Lens", (), {"address": "0xLENS"})()
    client.lens.functions = type("F", (), {"position_versions_of": lambda _s, accounts: _Call(missing)})()
    versions = {"0xA": 3, "0xB": 7}
    seen = []
    one = lambda a, b: seen.append(b) or versions[a]  # noqa: E731
    assert client._batched("position_versions_of", ["0xA", "0xB"], 12, one) == [3, 7]
    assert seen == [12, 12] and client._lens_batches is False

    def reason(_block):
        raise ContractLogicError("execution reverted: options: no valid price", data="0x08c379a0")

    client._lens_batches = True
    client.lens.functions = type("F", (), {"option_states_of": lambda _s, accounts: _Call(reason)})()
    with pytest.raises(ContractLogicError, match="no valid price"):  # a real revert is not hidden
        client._batched("option_states_of", ["0xA"], 12, one)
