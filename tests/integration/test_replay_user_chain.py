"""`keeper replay --rpc URL` (`bin/demo --rpc`) on the user's own Anvil, started as the README
starts it (default base fee 1 gwei): the driver pays EIP-1559 fees, and leaves the chain's
mining mode (automine, interval mining) as it found it, also when the replay fails."""

from __future__ import annotations

import subprocess
import sys

import pytest

from keeper.chain.anvil import Anvil
from keeper.chain.client import connect
from keeper.marketdata.prices import synthetic_path
from keeper.replay.driver import Replay, ReplayError, ReplayOptions

pytestmark = pytest.mark.anvil


def rpc(w3, method, params=()):
    return w3.provider.make_request(method, list(params)).get("result")


def mining(w3):
    return rpc(w3, "anvil_getAutomine"), rpc(w3, "anvil_getIntervalMining")


@pytest.fixture
def plain_anvil():
    with Anvil() as url:  # no --base-fee: the default 1 gwei, as `node_modules/.bin/anvil`
        yield url


def test_replay_on_a_plain_anvil_twice_and_automine_is_restored(plain_anvil, tmp_path):
    w3 = connect(plain_anvil)
    assert int(w3.eth.get_block("latest")["baseFeePerGas"]) > 0
    for run in range(2):  # the second run hung 60 s when the first left automine off
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "keeper",
                "replay",
                "--rpc",
                plain_anvil,
                "--steps",
                "6",
                "--accounts",
                "8",
                "--report",
                str(tmp_path / f"r{run}.json"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "Traceback" not in out.stderr
        assert mining(w3) == (True, None)


def test_interval_mining_is_restored(plain_anvil, tmp_path):
    w3 = connect(plain_anvil)
    rpc(w3, "evm_setIntervalMining", [7])
    Replay(ReplayOptions(path=synthetic_path(steps=4, seed=1), accounts=4, rpc=plain_anvil, workdir=tmp_path)).run()
    assert mining(w3) == (False, 7)


def test_mining_mode_is_restored_after_an_error(plain_anvil, tmp_path):
    w3 = connect(plain_anvil)
    rpc(w3, "evm_setAutomine", [False])  # a user who mines by hand

    class Failing(Replay):
        def _trade(self, users):
            raise ReplayError("trade reverted during setup")

    with pytest.raises(ReplayError):
        Failing(
            ReplayOptions(path=synthetic_path(steps=4, seed=1), accounts=4, rpc=plain_anvil, workdir=tmp_path)
        ).run()
    assert mining(w3) == (False, None)
