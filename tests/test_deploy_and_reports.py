"""Deployment records per chain id, settings, and payout reports rebuilt from the chain's logs."""

from __future__ import annotations

import pytest

from ledger.chain.deployment import DeploymentStore
from ledger.chain.open import open_deployment
from ledger.config import Settings
from ledger.errors import ChainUnavailable, LedgerError
from ledger.models import RevenueEvent
from ledger.services.deploy import deploy_or_reuse
from ledger.services.reports import payouts
from ledger.services.settlement import Settler

PERIOD = 202611


def test_a_deployment_is_recorded_per_chain_id_and_reused(tmp_path, admin, platform, finance):
    store = DeploymentStore(tmp_path)
    first, record, reused = deploy_or_reuse(store, admin=admin, platform=platform, finance=finance, sender=admin)
    assert not reused
    assert store.path(record.chain_id).name == f"{record.chain_id}.json"
    assert (record.ledger, record.token, record.finance) == (first.address, first.token.address, finance.address)
    assert record.block > 0
    again, same, reused = deploy_or_reuse(store, admin=admin, platform=platform, finance=finance, sender=admin)
    assert reused and same == record and again.address == first.address
    opened, _ = open_deployment(store)
    assert opened.address == first.address and opened.token.address == first.token.address


def test_a_record_whose_contract_is_gone_is_replaced(tmp_path, admin, platform, finance, accounts):
    store = DeploymentStore(tmp_path)
    _, record, _ = deploy_or_reuse(store, admin=admin, platform=platform, finance=finance, sender=admin)
    store.save(record.model_copy(update={"ledger": accounts[18].address}))  # an address without code
    with pytest.raises(ChainUnavailable, match="has no contract at"):
        open_deployment(store)
    _, fresh, reused = deploy_or_reuse(store, admin=admin, platform=platform, finance=finance, sender=admin)
    assert not reused and fresh.ledger != accounts[18].address


def test_missing_and_corrupt_records_say_what_to_do(tmp_path):
    store = DeploymentStore(tmp_path)
    with pytest.raises(ChainUnavailable, match="deploy first"):
        open_deployment(store)
    store.folder.mkdir(exist_ok=True)
    store.path(31337).write_text("{not json")
    with pytest.raises(LedgerError, match="unreadable"):
        store.load(31337)


def test_settings_come_from_the_environment():
    settings = Settings.from_env({"LEDGER_DATA_DIR": "/tmp/x", "LEDGER_BATCH_GAS": "5000000"})
    assert str(settings.deployments_dir) == "/tmp/x/deployments" and settings.batch_gas == 5_000_000
    with pytest.raises(ValueError):
        Settings.from_env({"LEDGER_BATCH_GAS": "12"})


def test_payouts_are_rebuilt_per_me_alliance_period_and_tier(ledger, funded, make_alliance, kitchen, token):
    make_alliance("kitchen", {"fridge": 5000, "oven": 5000}, target=1_000, excess={"fridge": 9000, "oven": 1000})
    make_alliance("delivery", {"oven": 2000, "logistics": 8000})
    events = [
        RevenueEvent(reference="k1", alliance="kitchen", amount=800, period=PERIOD, row=2),
        RevenueEvent(reference="k2", alliance="kitchen", amount=400, period=PERIOD, row=3),
        RevenueEvent(reference="k3", alliance="kitchen", amount=100, period=PERIOD + 1, row=4),
        RevenueEvent(reference="d1", alliance="delivery", amount=1_000, period=PERIOD, row=5),
    ]
    Settler(ledger, funded).run(events)
    lines = payouts(ledger)
    table = {(line.alliance, line.period, line.me, line.tier): line.amount for line in lines}
    assert table == {
        ("delivery", PERIOD, "oven", "base"): 200,
        ("delivery", PERIOD, "logistics", "base"): 800,
        ("kitchen", PERIOD, "fridge", "base"): 500,
        ("kitchen", PERIOD, "oven", "base"): 500,
        ("kitchen", PERIOD, "fridge", "excess"): 180,
        ("kitchen", PERIOD, "oven", "excess"): 20,
        ("kitchen", PERIOD + 1, "fridge", "base"): 50,
        ("kitchen", PERIOD + 1, "oven", "base"): 50,
    }
    # The report agrees with the balances, and the filters narrow it.
    for name in ("fridge", "oven", "logistics"):
        assert sum(line.amount for line in lines if line.me == name) == ledger.balance_of(kitchen[name], token)
    assert {line.alliance for line in payouts(ledger, alliance="delivery")} == {"delivery"}
    assert {line.me for line in payouts(ledger, me="oven")} == {"oven"}
    assert {line.period for line in payouts(ledger, period=PERIOD + 1)} == {PERIOD + 1}
    assert payouts(ledger, page_size=1) == lines  # one block per eth_getLogs request
