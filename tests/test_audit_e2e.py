"""``ledger audit`` against a real Anvil node: a clean history passes; every kind of tampering is found.

The module builds one history through the CLI (amendments, a target crossed, a closed period, a
dissolved ME, a signer change, a withdrawal) on a chain of its own. Each tampering test takes an Anvil
snapshot, damages the chain the way an attacker or a faulty client could (direct storage edits through
``anvil_setStorageAt``, transactions the CLI would never send), checks that the audit reports it with
exit code 1, and reverts the snapshot.
"""

from __future__ import annotations

import json
import time

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak

from ledger.chain import eip712
from ledger.chain.node import dev_rpc
from ledger.models import text_to_bytes32
from ledger.services.audit import EVENT_SIGNATURES, event_abi
from ledger.terms import TERMS_ABI_TYPE

from .cli_support import InProcessCLI, LedgerCLI, RpcProxy, free_port, write_csv

pytestmark = pytest.mark.http_node(
    "builds its history through `ledger chain up` and the CLI (the audit reads the node over HTTP)"
)

MNEMONIC = "test test test test test test test test test test test junk"
Account.enable_unaudited_hdwallet_features()
DEV = [Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(12)]
FINANCE, PLATFORM = DEV[2], DEV[1]
ME_IDS = {"kitchen-platform": 1, "fridge": 2, "oven": 3, "recipe-app": 4, "logistics": 5, "bakery": 6}
SIGNERS = {"kitchen-platform": 1, "fridge": 3, "oven": 4, "recipe-app": 5, "logistics": 6, "bakery": 7}
TERMS_TYPE = TERMS_ABI_TYPE


# ---------------------------------------------------------------------------------------------------
# Talking to the node directly (what the CLI would never do)
# ---------------------------------------------------------------------------------------------------


class Node:
    def __init__(self, url: str, ledger: str, token: str):
        self.url, self.ledger, self.token = url, ledger, token

    def call(self, method: str, *params):
        return dev_rpc(self.url, method, list(params), timeout=30)  # anvil_setStorageAt is hardhat_... on Hardhat

    def send(self, sender, to: str, signature: str, types: list[str], args: list) -> dict:
        data = keccak(text=signature)[:4] + abi_encode(types, args)
        tx = {"from": sender.address, "to": to, "data": "0x" + data.hex(), "gas": hex(8_000_000)}
        tx_hash = self.call("eth_sendTransaction", tx)
        deadline = time.monotonic() + 30
        while (receipt := self.call("eth_getTransactionReceipt", tx_hash)) is None:
            assert time.monotonic() < deadline, f"{signature} not mined"
            time.sleep(0.02)
        assert receipt["status"] == "0x1", receipt
        return receipt

    def storage(self, address: str, slot: int) -> int:
        return int(self.call("eth_getStorageAt", address, hex(slot), "latest"), 16)

    def set_storage(self, address: str, slot: int, value: int) -> None:
        self.call("anvil_setStorageAt", address, hex(slot), "0x" + value.to_bytes(32, "big").hex())

    def find_mapping_slot(self, address: str, key: bytes, matches) -> int:
        """The storage slot of ``mapping[key]`` for the mapping whose base slot makes ``matches`` true."""
        for base in range(20):
            slot = int.from_bytes(keccak(key.rjust(32, b"\0") + base.to_bytes(32, "big")), "big")
            if matches(self.storage(address, slot)):
                return slot
        raise AssertionError("mapping slot not found")


def sign(account, message) -> bytes:
    return bytes(account.sign_message(message).signature)


def create_agreement(node: Node, name: str, shares: dict[str, int], signers: dict[str, Account]) -> tuple:
    """createAgreement sent directly, with approvals from ``signers`` (by ME name)."""
    parties = sorted(shares, key=ME_IDS.get)
    terms = (node.token, [ME_IDS[p] for p in parties], [shares[p] for p in parties], [], 0, [], [])
    aid = text_to_bytes32(name)
    chain_id = int(node.call("eth_chainId"), 16)
    message = eip712.approval_message(chain_id, node.ledger, aid, 1, _terms_obj(terms))
    signatures = [sign(signers[p], message) for p in parties]
    node.send(PLATFORM, node.ledger, f"createAgreement(bytes32,{TERMS_TYPE},bytes[])",
              ["bytes32", TERMS_TYPE, "bytes[]"], [aid, terms, signatures])  # fmt: skip
    return aid, terms


def _terms_obj(terms):
    from ledger.models import Terms

    return Terms.from_abi(terms)


def settle_direct(node: Node, aid: bytes, version: int, first_seq: int, terms: tuple, events: list[tuple]) -> None:
    """A settlement batch sent straight to the contract by the finance account (no client checks)."""
    refs = [text_to_bytes32(ref) for ref, _, _ in events]
    entries = [(amount << 32) | period for _, amount, period in events]
    node.send(FINANCE, node.token, "approve(address,uint256)", ["address", "uint256"], [node.ledger, 2**255])
    node.send(FINANCE, node.ledger, f"settle(bytes32,uint32,uint64,{TERMS_TYPE},bytes32[],uint256[])",
              ["bytes32", "uint32", "uint64", TERMS_TYPE, "bytes32[]", "uint256[]"],
              [aid, version, first_seq, terms, refs, entries])  # fmt: skip


def next_seq(node: Node, aid: bytes) -> int:
    data = keccak(text="agreementOf(bytes32)")[:4] + aid
    raw = bytes.fromhex(node.call("eth_call", {"to": node.ledger, "data": "0x" + data.hex()}, "latest")[2:])
    return int.from_bytes(raw[4 * 32 : 5 * 32], "big")  # (token, status, activeVersion, latestVersion, nextSeq)


# ---------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sh(tmp_path_factory):
    ledger = LedgerCLI(tmp_path_factory.mktemp("audit-data"), free_port())
    ledger.run("chain", "up")
    try:
        yield ledger
    finally:
        ledger.run("chain", "down", ok=False)


@pytest.fixture(scope="module")
def history(sh, tmp_path_factory):
    """A varied, honest history built with the CLI; returns (cli, node)."""
    tmp = tmp_path_factory.mktemp("audit-files")
    cli = InProcessCLI(sh.data_dir, sh.port)
    record = json.loads(cli.run("deploy", "--json").out)
    cli.run("me", "register", "kitchen-platform", "--signer", "dev1")
    for name in ("fridge", "oven", "recipe-app", "logistics", "bakery"):
        cli.run("me", "register", name, "--signer", f"dev{SIGNERS[name]}", "--parent", "kitchen-platform")
    cli.run("token", "mint", "10000000")
    node = Node(f"http://127.0.0.1:{sh.port}", record["ledger"], record["token"])

    # kitchen v1: a 1,000 target per period, crossed inside the second event.
    cli.run("alliance", "propose", "kitchen", "--party", "fridge=4000", "--party", "oven=3000",
            "--party", "recipe-app=1500", "--party", "logistics=1500", "--target", "1000",
            "--excess", "fridge=2500", "--excess", "oven=2500", "--excess", "recipe-app=4000",
            "--excess", "logistics=1000")  # fmt: skip
    cli.run("alliance", "sign", "kitchen", *[a for n in ("fridge", "oven", "recipe-app", "logistics")
                                             for a in ("--account", f"dev{SIGNERS[n]}")])  # fmt: skip
    cli.run("alliance", "submit", "kitchen")
    rows = [("K-1", "kitchen", "600.00", 202611), ("K-2", "kitchen", "500.000001", 202611),
            ("K-3", "kitchen", "0.000003", 202611), ("K-4", "kitchen", "300", 202612)]  # fmt: skip
    cli.run("settle", str(write_csv(tmp / "a.csv", rows)))
    # kitchen v2: equal shares, no tier.
    cli.run("alliance", "amend", "kitchen", *[a for n in ("fridge", "oven", "recipe-app", "logistics")
                                              for a in ("--party", f"{n}=2500")])  # fmt: skip
    cli.run("alliance", "sign", "kitchen", *[a for n in ("fridge", "oven", "recipe-app", "logistics")
                                             for a in ("--account", f"dev{SIGNERS[n]}")])  # fmt: skip
    cli.run("alliance", "submit", "kitchen")
    rows = [(f"K2-{i}", "kitchen", f"{i}.{i:06d}", 202612) for i in range(1, 41)]
    cli.run("settle", str(write_csv(tmp / "b.csv", rows)))
    # bread: fridge and bakery; then the bakery ME is dissolved.
    cli.run("alliance", "propose", "bread", "--party", "fridge=5000", "--party", "bakery=5000")
    cli.run("alliance", "sign", "bread", "--account", "dev3", "--account", "dev7")
    cli.run("alliance", "submit", "bread")
    cli.run("settle", str(write_csv(tmp / "c.csv", [("B-1", "bread", "77.77", 202611)])))
    cli.run("me", "dissolve", "bakery")
    cli.run("period", "close", "kitchen", "202611")
    cli.run("withdraw", "fridge", "--account", "dev3")
    # oven hands its signing key over (dev4 -> dev8), with dev4's consent.
    chain_id = int(node.call("eth_chainId"), 16)
    consent = sign(DEV[4], eip712.me_update_message(chain_id, node.ledger, 3, DEV[4].address, DEV[8].address, 0))
    node.send(PLATFORM, node.ledger, "updateME(uint32,address,address,bytes)",
              ["uint32", "address", "address", "bytes"], [3, DEV[4].address, DEV[8].address, consent])  # fmt: skip
    return cli, node


@pytest.fixture
def chain(history):
    """The history, restored after the test (an Anvil snapshot). An audit first: this machine's checkpoint
    is then at the snapshot's block, so what the test does lies after it (see :func:`audit`). The
    previous test's checkpoint lies on blocks the snapshot's revert removed: it is dropped."""
    cli, node = history
    snapshot = node.call("evm_snapshot")
    first = cli.run("audit", "--format", "json")
    assert json.loads(first.out)["result"] == "clean", first.text
    try:
        yield cli, node
    finally:
        assert node.call("evm_revert", snapshot) is True


def audit(cli, *args: str, code: int = 0) -> dict:
    """The audit's report, checked three ways with the same findings: incremental (resumed from this
    machine's checkpoint, the test's changes after it), ``--full``, and incremental again (the changes
    now before the checkpoint, kept in its state)."""
    reports = []
    for extra in ((), ("--full",), ()):
        result = cli.run("audit", "--format", "json", *args, *extra, ok=False)
        assert result.code == code, result.text
        assert "Traceback" not in result.text
        reports.append(json.loads(result.out))
    incremental, full, again = reports
    if not args:
        assert incremental["checkpoint"]["resumed_from_block"] is not None
        assert full["checkpoint"]["resumed_from_block"] is None
        assert again["checkpoint"]["resumed_from_block"] == full["blocks"]["to"]
    for report in (incremental, again):
        assert report["findings"] == full["findings"]
        assert report["checked"]["events"] == full["checked"]["events"]
        assert report["tokens"] == full["tokens"]
    return full


def kinds(report: dict) -> dict[str, int]:
    return report["findings_by_kind"]


# ---------------------------------------------------------------------------------------------------
# The clean history
# ---------------------------------------------------------------------------------------------------


def test_event_signatures_match_the_compiled_contract():
    from ledger.chain.writer import project

    compiled = project().AllianceLedger.contract_type.model_dump(mode="json")["abi"]
    from ledger.chain.codec import EventSpec

    ours = {e["name"]: EventSpec.from_abi(e).topic0 for e in event_abi()}
    theirs = {e["name"]: EventSpec.from_abi(e).topic0 for e in compiled if e["type"] == "event"}
    assert len(ours) == len(EVENT_SIGNATURES)
    assert {name: theirs.get(name) for name in ours} == ours
    # Not read: neither moves money nor changes who holds a role.
    assert set(theirs) - set(ours) == {"RoleAdminChanged", "EIP712DomainChanged"}


def test_a_clean_history_passes(chain):
    cli, _ = chain
    report = audit(cli)
    assert report["result"] == "clean" and report["findings"] == []
    checked = report["checked"]
    assert checked["mes"] == 6 and checked["mes_dissolved"] == 1
    assert checked["me_updates"] == 1 and checked["consents"] == 1
    assert checked["agreements"] == 2 and checked["versions"] == 3 and checked["activations"] == 3
    assert checked["signatures"] == 4 + 4 + 2
    assert checked["events"] == 4 + 40 + 1
    assert checked["periods_closed"] == 1 and checked["withdrawals"] == 1
    (token,) = report["tokens"]
    total = 600_000_000 + 500_000_001 + 3 + 300_000_000 + sum(i * 10**6 + i for i in range(1, 41)) + 77_770_000
    assert token["base_units"]["settled"] == token["base_units"]["credited"] == str(total)
    owed = int(token["base_units"]["owed"])
    assert owed == int(token["base_units"]["held"]) == int(token["base_units"]["balances"])
    assert owed == total - int(token["base_units"]["withdrawn"]) and int(token["base_units"]["withdrawn"]) > 0
    assert report["roles"]["finance"] == [FINANCE.address]

    text = cli.run("audit").out
    assert "result: clean, every check passed" in text
    assert "45 in" in text and "ATD" in text


def test_a_statement_written_by_payouts_reconciles(chain, tmp_path):
    cli, _ = chain
    statement = tmp_path / "statement.csv"
    cli.run("payouts", "--format", "csv", "-o", str(statement))
    report = audit(cli, "--statement", str(statement))
    assert report["result"] == "clean"
    lines = len(statement.read_text().splitlines()) - 1
    assert report["checked"]["statement_lines"] == report["checked"]["statement_lines_matching"] == lines > 10


def test_a_small_page_size_gives_the_same_report(chain):
    cli, _ = chain
    big, small = audit(cli), audit(cli, "--page-size", "3")
    assert small["checked"]["log_pages"] > 5 * big["checked"]["log_pages"]
    for report in (big, small):
        for key in ("log_pages", "log_pages_refused"):
            report["checked"].pop(key)
        report.pop("seconds")
    assert small == big


class CappingProxy(RpcProxy):
    """Refuses ``eth_getLogs`` over more than ``limit`` blocks the way hosted providers do (a JSON-RPC
    error)."""

    limit = 4
    refused = 0

    def answer(self, request):
        calls = request if isinstance(request, list) else [request]
        wide = [
            c for c in calls
            if c["method"] == "eth_getLogs"
            and int(c["params"][0]["toBlock"], 16) - int(c["params"][0]["fromBlock"], 16) + 1 > self.limit
        ]  # fmt: skip
        if not wide:
            return None
        type(self).refused += 1
        error = {"code": -32005, "message": f"query exceeds {self.limit} blocks"}
        return json.dumps({"jsonrpc": "2.0", "id": calls[0]["id"], "error": error}).encode()


def test_a_provider_that_refuses_wide_log_ranges_still_audits_correctly(chain):
    cli, node = chain
    CappingProxy.refused = 0
    with CappingProxy.serving(node.url) as proxy:
        report = audit(cli, "--rpc", proxy)
    assert report["result"] == "clean"
    assert CappingProxy.refused > 0 and report["checked"]["log_pages_refused"] == CappingProxy.refused
    direct = audit(cli)
    assert report["checked"]["events"] == direct["checked"]["events"] == 45
    assert report["tokens"] == direct["tokens"]


# ---------------------------------------------------------------------------------------------------
# Tampering
# ---------------------------------------------------------------------------------------------------


def test_an_edited_statement_is_reported_line_by_line(chain, tmp_path):
    cli, _ = chain
    statement = tmp_path / "statement.csv"
    cli.run("payouts", "--format", "csv", "-o", str(statement))
    header, *lines = statement.read_text().splitlines()
    changed = lines[0].split(",")
    changed[-2] = "999.000000"
    changed[-1] = "999000000"
    removed = lines[1]
    edited = [header, ",".join(changed), *lines[2:], "bread,202611,2,fridge,excess,x,ATD,5.000000,5000000"]
    statement.write_text("\n".join(edited) + "\n")
    report = audit(cli, "--statement", str(statement), code=1)
    found = kinds(report)
    assert found == {"statement-differs": 1, "statement-missing": 1, "statement-extra": 1}, report["findings"]
    by_kind = {f["kind"]: f for f in report["findings"]}
    assert by_kind["statement-differs"]["values"]["line"] == 2
    assert "999.000000 ATD stated" in by_kind["statement-differs"]["message"]
    alliance, period, _, me, tier = removed.split(",")[:5]
    assert f"no line for {alliance} {period} {me} {tier}" in by_kind["statement-missing"]["message"]
    assert by_kind["statement-extra"]["values"]["line"] == len(edited)
    assert "bread 202611 fridge excess: the chain credited nothing" in by_kind["statement-extra"]["message"]

    text = cli.run("audit", "--statement", str(statement), ok=False)
    assert text.code == 1 and "result: 3 findings" in text.out and "[statement-missing]" in text.out


def test_an_agreement_activated_with_a_key_that_is_not_the_partys_signer(chain):
    cli, node = chain
    attacker = DEV[11]
    # The attacker writes its own address into fridge's signer slot (no MEUpdated event: no consent).
    slot = node.find_mapping_slot(node.ledger, (2).to_bytes(32, "big"),
                                  lambda v: v & (2**160 - 1) == int(DEV[3].address, 16))  # fmt: skip
    value = node.storage(node.ledger, slot)
    node.set_storage(node.ledger, slot, (value >> 160 << 160) | int(attacker.address, 16))
    signers = {"fridge": attacker, "logistics": DEV[6]}
    _, _ = create_agreement(node, "stolen", {"fridge": 9000, "logistics": 1000}, signers)
    report = audit(cli, code=1)
    (finding,) = [f for f in report["findings"] if f["kind"] == "signature"]
    assert finding["values"]["recovered"] == attacker.address and finding["values"]["signer"] == DEV[3].address
    assert "alliance 'stolen' version 1: the approval of ME 'fridge' was signed by" in finding["message"]
    assert finding["block"] is not None and finding["tx"].startswith("0x")


def test_a_credit_that_does_not_match_the_terms(chain, tmp_path):
    cli, node = chain
    # Someone edits kitchen's 202612 revenue in storage: later events are split as if it were higher.
    aid = text_to_bytes32("kitchen")
    revenue_202612 = 300_000_000 + sum(i * 10**6 + i for i in range(1, 41))
    inner = None
    for base in range(20):
        outer = keccak(aid + base.to_bytes(32, "big"))
        candidate = int.from_bytes(keccak((202612).to_bytes(32, "big") + outer), "big")
        if node.storage(node.ledger, candidate) & (2**128 - 1) == revenue_202612:
            inner = candidate
            break
    assert inner is not None
    node.set_storage(node.ledger, inner, 10**12)
    # kitchen v3 has a tier, so the edited revenue changes the split; the CLI settles honestly.
    cli.run("alliance", "amend", "kitchen", "--party", "fridge=2500", "--party", "oven=2500",
            "--party", "recipe-app=2500", "--party", "logistics=2500", "--target", "2000",
            "--excess", "fridge=7000", "--excess", "oven=1000", "--excess", "recipe-app=1000",
            "--excess", "logistics=1000")  # fmt: skip
    cli.run("alliance", "sign", "kitchen", "--account", "dev3", "--account", "dev8", "--account", "dev5",
            "--account", "dev6")  # fmt: skip
    cli.run("alliance", "submit", "kitchen")
    cli.run("settle", str(write_csv(tmp_path / "d.csv", [("K3-1", "kitchen", "100", 202612)])))
    report = audit(cli, code=1)
    credit = [f for f in report["findings"] if f["kind"] == "credit"]
    assert len(credit) == 1, report["findings"]
    values = credit[0]["values"]
    assert values["recomputed_base"] == [25_000_000] * 4 and values["recomputed_excess"] == [0] * 4
    assert values["credited_excess"] == [70_000_000, 10_000_000, 10_000_000, 10_000_000]
    assert "credited fridge" in credit[0]["message"]


def test_tokens_removed_from_the_ledgers_holdings(chain):
    cli, node = chain
    data = keccak(text="balanceOf(address)")[:4] + abi_encode(["address"], [node.ledger])
    held = int(node.call("eth_call", {"to": node.token, "data": "0x" + data.hex()}, "latest"), 16)
    key = bytes.fromhex(node.ledger[2:])
    slot = node.find_mapping_slot(node.token, key, lambda v: v == held)
    node.set_storage(node.token, slot, held - 1_234_567)
    report = audit(cli, code=1)
    (finding,) = report["findings"]
    assert finding["kind"] == "conservation"
    assert "1.234567 ATD missing" in finding["message"]
    assert int(finding["values"]["held"]) == held - 1_234_567


def test_a_balance_edited_in_the_ledgers_storage(chain):
    cli, node = chain
    owed_oven = None
    token_key = bytes.fromhex(node.token[2:]).rjust(32, b"\0")
    for base in range(20):
        outer = keccak((3).to_bytes(32, "big") + base.to_bytes(32, "big"))
        slot = int.from_bytes(keccak(token_key + outer), "big")
        value = node.storage(node.ledger, slot)
        if value:
            owed_oven = (slot, value)
            break
    assert owed_oven is not None
    node.set_storage(node.ledger, owed_oven[0], owed_oven[1] + 5)
    report = audit(cli, code=1)
    messages = [f["message"] for f in report["findings"]]
    assert kinds(report) == {"conservation": 2}, messages
    assert any("ME 'oven': the ledger reports a balance of" in m for m in messages)
    assert any("the MEs' balances sum to" in m for m in messages)


def test_a_reference_credited_twice(chain):
    cli, node = chain
    aid, terms = create_agreement(node, "twice", {"fridge": 5000, "logistics": 5000},
                                  {"fridge": DEV[3], "logistics": DEV[6]})  # fmt: skip
    settle_direct(node, aid, 1, 0, terms, [("T-1", 1_000_000, 202611), ("T-2", 2_000_000, 202611)])
    # A faulty finance client settles T-1 again, under a new sequence number: the contract accepts it.
    settle_direct(node, aid, 1, next_seq(node, aid), terms, [("T-1", 1_000_000, 202611)])
    # And a reference of another alliance ("K-1" of kitchen) reused here.
    settle_direct(node, aid, 1, next_seq(node, aid), terms, [("K-1", 600_000_000, 202611)])
    report = audit(cli, code=1)
    assert kinds(report) == {"duplicate": 2}, report["findings"]
    first, second = report["findings"]
    assert "reference 'T-1' credited twice: alliance 'twice' sequence 0" in first["message"]
    assert "sequence 2" in first["message"] and first["values"]["reference"] == "T-1"
    assert "reference 'K-1' credited twice: alliance 'kitchen' sequence 0" in second["message"]


def test_revenue_settled_into_a_closed_period_is_impossible_and_a_closed_period_stays_closed(chain):
    cli, node = chain
    # The contract refuses it; edit the closed flag away in storage, then settle: the audit knows better.
    aid = text_to_bytes32("kitchen")
    closed_slot = None
    for base in range(20):
        outer = keccak(aid + base.to_bytes(32, "big"))
        candidate = int.from_bytes(keccak((202611).to_bytes(32, "big") + outer), "big")
        if node.storage(node.ledger, candidate) >> 128 == 1:
            closed_slot = candidate
            break
    assert closed_slot is not None
    node.set_storage(node.ledger, closed_slot, node.storage(node.ledger, closed_slot) & (2**128 - 1))
    terms = (node.token, [2, 3, 4, 5], [2500] * 4, [], 0, [], [])
    settle_direct(node, aid, 2, next_seq(node, aid), terms, [("LATE-1", 5_000_000, 202611)])
    report = audit(cli, code=1)
    assert kinds(report) == {"closed-period": 1}, report["findings"]
    assert "revenue settled into period 202611, closed at block" in report["findings"][0]["message"]


def test_the_audit_cannot_run(history, tmp_path):
    cli, node = history
    out = cli.run("audit", "--ledger", "0x" + "00" * 19 + "01", ok=False)
    assert out.code == 2 and "has no contract at 0x0000000000000000000000000000000000000001" in out.err
    out = cli.run("audit", "--rpc", f"http://127.0.0.1:{free_port()}", ok=False)
    assert out.code == 2 and "no JSON-RPC node answers at" in out.err
    out = cli.run("audit", "--statement", str(tmp_path / "missing.csv"), ok=False)
    assert out.code == 2 and "statement" in out.err
    (tmp_path / "bad.csv").write_text("reference,alliance,amount,period\nK-1,kitchen,1,202611\n")
    out = cli.run("audit", "--statement", str(tmp_path / "bad.csv"), ok=False)
    assert out.code == 2 and "the header lacks tier, me" in out.err
    out = cli.run("audit", "--ledger", "not-an-address", ok=False)
    assert out.code == 2 and "is not an address" in out.err
    out = cli.run("audit", "--from-block", "100000000", ok=False)
    assert out.code == 2 and "past the chain's head" in out.err
    # Starting after the deployment misses registrations: refused rather than misreported.
    out = cli.run("audit", "--from-block", "8", ok=False)
    assert out.code == 2 and "start the audit at the ledger's deployment block" in out.err


# ---------------------------------------------------------------------------------------------------
# Reversals and debts
# ---------------------------------------------------------------------------------------------------


def kitchen_v2(node: Node) -> tuple:
    return (node.token, [2, 3, 4, 5], [2500] * 4, [], 0, [], [])


def reverse_direct(node: Node, aid: bytes, version: int, first_seq: int, terms: tuple, items: list[tuple]) -> dict:
    """A reversal batch sent straight to the contract by finance (no client link checks).
    items: (reference, amount, period, original reference)."""
    refs = [text_to_bytes32(ref) for ref, *_ in items]
    entries = [(amount << 32) | period for _, amount, period, _ in items]
    originals = [text_to_bytes32(original) for *_, original in items]
    return node.send(FINANCE, node.ledger,
                     f"settleReversals(bytes32,uint32,uint64,{TERMS_TYPE},bytes32[],uint256[],bytes32[])",
                     ["bytes32", "uint32", "uint64", TERMS_TYPE, "bytes32[]", "uint256[]", "bytes32[]"],
                     [aid, version, first_seq, terms, refs, entries, originals])  # fmt: skip


def account_slot(node: Node, me_id: int, matches) -> int:
    """The storage slot of ME ``me_id``'s account (balance in the low 128 bits, debt in the high)."""
    token_key = bytes.fromhex(node.token[2:]).rjust(32, b"\0")
    for base in range(20):
        outer = keccak(me_id.to_bytes(32, "big") + base.to_bytes(32, "big"))
        slot = int.from_bytes(keccak(token_key + outer), "big")
        if matches(node.storage(node.ledger, slot)):
            return slot
    raise AssertionError("account slot not found")


def test_reversals_with_a_debt_netted_later_audit_clean_and_show_in_reports(chain, tmp_path):
    cli, node = chain
    # fridge withdrew everything: its part of a return becomes a debt, repaid from its next credits.
    header = "reference,alliance,amount,period,reverses"
    cli.run("settle", str(write_csv(tmp_path / "r.csv", [("KR-1", "kitchen", "100", 202612, "K-4"),
                                                          ("KR-2", "kitchen", "0.000002", 202612, "K-3")],
                                    header)))  # fmt: skip
    balance = json.loads(cli.run("balance", "--json").out)
    fridge = next(r for r in balance["balances"] if r["me"] == "fridge")
    assert fridge["balance_base_units"] == "0" and int(fridge["debt_base_units"]) > 0
    assert "debt" in cli.run("balance").out
    cli.run("settle", str(write_csv(tmp_path / "s.csv", [("K5-1", "kitchen", "40", 202612)])))
    report = audit(cli)
    assert report["result"] == "clean", report["findings"]
    (token,) = report["tokens"]
    units = token["base_units"]
    assert units["reversed"] == units["debited"] == str(100_000_002)
    assert int(units["netted"]) > 0 and int(units["returned"]) > 0
    assert units["debt"] == units["debts"] == str(int(units["incurred"]) - int(units["netted"]))
    assert report["checked"]["reversals"] == 2
    payouts = json.loads(cli.run("payouts", "--format", "json", "--period", "202612").out)["payouts"]
    reversal_lines = [p for p in payouts if p["tier"] == "reversal"]
    assert len(reversal_lines) == 4 and all(p["amount_base_units"].startswith("-") for p in reversal_lines)
    statement = tmp_path / "statement.csv"
    cli.run("payouts", "--format", "csv", "-o", str(statement))
    assert audit(cli, "--statement", str(statement))["result"] == "clean"


def test_reversals_the_client_would_refuse_sent_directly_are_findings(chain):
    cli, node = chain
    aid = text_to_bytes32("kitchen")
    reverse_direct(node, aid, 2, next_seq(node, aid), kitchen_v2(node), [
        ("X-1", 1_000_000, 202612, "NEVER"),  # never settled
        ("X-2", 1_000_000, 202612, "B-1"),  # bread's
        ("X-3", 300_000_000, 202612, "K-4"),  # K-4 is 300: fine alone...
        ("X-4", 1, 202612, "K-4"),  # ... one unit more is beyond it
    ])  # fmt: skip
    report = audit(cli, code=1)
    assert kinds(report) == {"reversal": 3}, report["findings"]
    messages = [f["message"] for f in report["findings"]]
    assert "reverses 'NEVER', never settled" in messages[0]
    assert "reverses 'B-1' of alliance 'bread'" in messages[1]
    assert "the reversals of 'K-4' total 300000001, more than its 300000000" in messages[2]


def test_reversals_on_both_sides_of_the_checkpoint_are_added_up_from_the_checkpoint(chain):
    cli, node = chain
    aid = text_to_bytes32("kitchen")
    reverse_direct(node, aid, 2, next_seq(node, aid), kitchen_v2(node), [("Y-1", 200_000_000, 202612, "K-4")])
    assert audit(cli)["result"] == "clean"  # the checkpoint now holds K-4 reversed by 200
    reverse_direct(node, aid, 2, next_seq(node, aid), kitchen_v2(node), [
        ("Y-2", 100_000_001, 202612, "K-4"),  # 200 before the checkpoint + 100.000001 after: beyond K-4's 300
        ("Y-3", 1, 202612, "Y-1"),  # a reversal settled before the checkpoint, reversed
    ])  # fmt: skip
    report = audit(cli, code=1)
    assert kinds(report) == {"reversal": 2}, report["findings"]
    messages = [f["message"] for f in report["findings"]]
    assert "the reversals of 'K-4' total 300000001, more than its 300000000" in messages[0]
    assert "reverses 'Y-1', itself a reversal" in messages[1]


def test_a_reversal_debited_wrongly(chain):
    cli, node = chain
    # A tiered alliance: 150 settled against a target of 100; someone lowers the period's revenue in
    # storage to 60, so the contract debits a reversal by the base table where the rule says excess.
    parties = ["logistics", "recipe-app"]
    ids = [ME_IDS[p] for p in sorted(parties, key=ME_IDS.get)]
    terms = (node.token, ids, [5000, 5000], [(100_000_000, [9000, 1000])], 0, [], [])  # one band
    aid = text_to_bytes32("tiered")
    chain_id = int(node.call("eth_chainId"), 16)
    message = eip712.approval_message(chain_id, node.ledger, aid, 1, _terms_obj(terms))
    signatures = [sign(DEV[SIGNERS["recipe-app"]], message), sign(DEV[SIGNERS["logistics"]], message)]
    node.send(PLATFORM, node.ledger, f"createAgreement(bytes32,{TERMS_TYPE},bytes[])",
              ["bytes32", TERMS_TYPE, "bytes[]"], [aid, terms, signatures])  # fmt: skip
    settle_direct(node, aid, 1, 0, terms, [("TR-1", 150_000_000, 202612)])
    slot = None
    for base in range(20):
        outer = keccak(aid + base.to_bytes(32, "big"))
        candidate = int.from_bytes(keccak((202612).to_bytes(32, "big") + outer), "big")
        if node.storage(node.ledger, candidate) & (2**128 - 1) == 150_000_000:
            slot = candidate
            break
    assert slot is not None
    node.set_storage(node.ledger, slot, 60_000_000)
    reverse_direct(node, aid, 1, 1, terms, [("TR-R1", 40_000_000, 202612, "TR-1")])
    report = audit(cli, code=1)
    assert kinds(report) == {"debit": 1}, report["findings"]
    values = report["findings"][0]["values"]
    assert values["debited_base"] == [20_000_000, 20_000_000] and values["debited_excess"] == [0, 0]
    assert values["recomputed_excess"] == [36_000_000, 4_000_000] and values["recomputed_base"] == [0, 0]


def test_a_debt_netted_wrongly(chain):
    cli, node = chain
    aid = text_to_bytes32("kitchen")
    # fridge (ME 2) withdrew everything: a reversal of 100 leaves it a debt of 25.
    reverse_direct(node, aid, 2, next_seq(node, aid), kitchen_v2(node), [("KR-9", 100_000_000, 202612, "K-4")])
    slot = account_slot(node, 2, lambda v: v >> 128 == 25_000_000)
    node.set_storage(node.ledger, slot, 0)  # the debt erased in storage: the next credit is not netted
    settle_direct(node, aid, 2, next_seq(node, aid), kitchen_v2(node), [("K6-1", 40_000_000, 202612)])
    report = audit(cli, code=1)
    found = kinds(report)
    assert found.get("debt") == 1, report["findings"]
    debt = next(f for f in report["findings"] if f["kind"] == "debt")
    assert "ME 'fridge': debt netted 0 base units, the rule gives 10000000" in debt["message"]
    assert "conservation" in found  # fridge's balance and debt, and totalDebt, disagree with the replay


def test_a_file_with_bad_reversals_is_refused_by_row_and_nothing_is_mined(chain, tmp_path):
    cli, node = chain
    header = "reference,alliance,amount,period,reverses"
    rows = [("KX-1", "kitchen", "1", 202612, "NEVER"), ("KX-2", "kitchen", "1", 202612, "B-1"),
            ("KX-3", "kitchen", "300.000001", 202612, "K-4"), ("KX-4", "kitchen", "1", 202611, "K-1"),
            ("K2-1", "kitchen", "1", 202612, "K-1")]  # fmt: skip
    path = write_csv(tmp_path / "bad.csv", rows, header)
    block = int(node.call("eth_blockNumber"), 16)
    result = cli.run("settle", str(path), ok=False)
    assert result.code == 1 and "Traceback" not in result.text
    assert "row 2: reverses 'NEVER', which was never settled for alliance 'kitchen'" in result.err
    assert "row 3: reverses 'B-1', which was settled for another alliance, not 'kitchen'" in result.err
    assert "row 4: reversals of 'K-4' would total 300000001 base units, more than its 300000000" in result.err
    assert "row 5: period 202611 of alliance 'kitchen' is closed" in result.err
    assert "row 6: reference 'K2-1' was already settled (seq" in result.err
    assert int(node.call("eth_blockNumber"), 16) == block
    # The dry run of a good one: a reversals column, negative, and nothing sent.
    good = write_csv(tmp_path / "good.csv", [("KG-1", "kitchen", "4", 202612, "K-4")], header)
    out = cli.run("settle", str(good), "--dry-run").out
    assert "reversals" in out and "-1.000000" in out
    assert int(node.call("eth_blockNumber"), 16) == block
