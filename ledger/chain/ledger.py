"""The AllianceLedger contract (and its settlement token) through Ape.

This module and its siblings in ``ledger.chain`` are the only code that talks to Ape or web3. Every
state-changing call goes through :class:`LedgerChain`; contract reverts come out as
:class:`ledger.errors.ContractRevert` with the custom error decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from eth_utils import keccak

from ledger.chain.abi import ERC20_ABI, ContractAbi
from ledger.chain.logs import DEFAULT_PAGE_SIZE, Log, LogReader
from ledger.chain.rpc import HttpRpc, RpcError, revert_data
from ledger.chain.transact import Receipt, Transactor, TxPolicy
from ledger.errors import KNOWN_NAMES, ROLE_WORDS, ContractRevert, LedgerError, NotFoundError, describe_revert, named
from ledger.models import (
    ME,
    Agreement,
    AgreementStatus,
    MEStatus,
    Terms,
    bytes32_to_text,
    text_to_bytes32,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAX_UINT256 = 2**256 - 1
ERC20 = ContractAbi(ERC20_ABI)


def project():
    """The Ape project of this repository (compiled contracts), wherever the command runs from."""
    import ape

    return ape.Project(PROJECT_ROOT)


def _error_registry() -> dict[bytes, dict]:
    """Custom errors of every compiled contract by selector, to decode reverts that bubble up."""
    registry: dict[bytes, dict] = {}
    proj = project()
    for name in ("AllianceLedger", "LedgerTestToken"):
        for item in proj.get_contract(name).contract_type.model_dump(mode="json")["abi"]:
            if item.get("type") == "error":
                types = ",".join(i["type"] for i in item["inputs"])
                registry[keccak(text=f"{item['name']}({types})")[:4]] = item
    return registry


_ERRORS: dict[bytes, dict] | None = None
# The empty ``Terms`` tuple: what a proposal passes as the current terms when it has none to show.
EMPTY_TERMS = ("0x" + "00" * 20, [], [], [], 0, [], [])
_LEADING_HEX = re.compile(r"0x([0-9a-fA-F]*)")


def _inner_tuples(inner: Sequence[tuple[bytes, int, Terms]]) -> list[tuple]:
    return [(bytes(aid), int(version), terms.as_tuple()) for aid, version, terms in inner]


def _decode_revert_data(data: bytes) -> tuple[str, dict] | None:
    global _ERRORS
    if len(data) < 4:
        return None
    if _ERRORS is None:
        _ERRORS = _error_registry()
    item = _ERRORS.get(bytes(data[:4]))
    if item is None:
        return None
    from eth_abi import decode

    from ledger.chain.logs import _checksummed

    types = [i["type"] for i in item["inputs"]]
    values = [_checksummed(kind, value) for kind, value in zip(types, decode(types, bytes(data[4:])), strict=True)]
    return item["name"], dict(zip((i["name"] for i in item["inputs"]), values, strict=True))


@contextmanager
def contract_errors() -> Iterator[None]:
    """Turn Ape's contract reverts into :class:`ContractRevert` with the custom error's name."""
    from ape.exceptions import ContractLogicError, CustomError

    try:
        yield
    except CustomError as err:
        raise ContractRevert(err.name, dict(err.inputs)) from None
    except ContractLogicError as err:
        data = getattr(err, "revert_data", None) or _revert_data_of(err)
        decoded = _decode_revert_data(data) if data else None
        if decoded:
            raise ContractRevert(*decoded) from None
        raise ContractRevert("Reverted", {}, f"the contract refused the transaction: {err}") from None


def _revert_data_of(err: Exception) -> bytes | None:
    """The revert data a provider left in the error's message: the whole message on Anvil; on Hardhat 2
    (a custom error surfaces as ContractLogicError) the hex leads the message, followed by the rest of
    the node's error text (``0x8ead4fcd...)', 'txHash': ...``)."""
    message = str(getattr(err, "message", "") or err)
    match = _LEADING_HEX.match(message)
    if match and len(match.group(1)) % 2 == 0:
        return bytes.fromhex(match.group(1))
    return None


def _simulate_deployment(container, args: tuple, sender) -> None:
    """Run a deployment as a call first: a constructor that refuses (``LedgerZeroAddress``) is reported
    as words and nothing is mined (Ape would send it, print its call trace, and mine the revert)."""
    import ape

    uri = getattr(ape.chain.provider, "http_uri", None)
    if not uri:  # pragma: no cover - every provider the project uses speaks HTTP
        return
    data = "0x" + bytes(container(*args).data).hex()
    Transactor(HttpRpc(uri), TxPolicy(), _decode_revert_data)._simulate({"from": sender.address, "data": data})


def compiled_abi(name: str) -> list:
    """A contract's ABI from the project's compiled artifacts, read without starting Ape."""
    import json

    manifest = PROJECT_ROOT / ".build" / "__local__.json"
    try:
        return json.loads(manifest.read_text())["contractTypes"][name]["abi"]
    except (OSError, ValueError, KeyError):
        return project().get_contract(name).contract_type.model_dump(mode="json")["abi"]


def connected_chain_id() -> int:
    import ape

    return int(ape.chain.chain_id)


def has_code(address: str) -> bool:
    import ape

    return len(ape.chain.provider.get_code(address)) > 0


class LedgerChain:
    """One deployment: the ledger contract and its settlement token."""

    def __init__(self, ledger, token=None, policy: TxPolicy | None = None):
        self.contract = ledger
        self.token = token
        self.policy = policy or TxPolicy()  # how settlement transactions are sent and confirmed
        self._fixed: tuple[str, HttpRpc, list] | None = None  # (address, rpc, abi) of a read-only chain

    @classmethod
    def over_rpc(cls, address: str, url: str, abi: list | None = None) -> LedgerChain:
        """A read-only view of the ledger at ``address`` straight over JSON-RPC, without Ape: reports
        start in a fraction of a second. Only reads (views and logs) work on it."""
        chain = cls(None)
        chain._fixed = (address, HttpRpc(url), abi if abi is not None else compiled_abi("AllianceLedger"))
        return chain

    def head(self) -> int:
        """The newest block's number."""
        return int(self.rpc.request("eth_blockNumber"), 16)

    # -- deployment ---------------------------------------------------------------------------------

    @classmethod
    def deploy(cls, *, admin, platform, finance, sender, token_decimals: int | None = 6) -> LedgerChain:
        """Deploy the ledger (and, when ``token_decimals`` is given, a test token finance can mint)."""
        proj = project()
        with contract_errors():
            ledger_args = (admin, platform, finance)
            _simulate_deployment(proj.AllianceLedger, ledger_args, sender)
            ledger = proj.AllianceLedger.deploy(*ledger_args, sender=sender)
            token = None
            if token_decimals is not None:
                token_args = ("Alliance Test Dollar", "ATD", token_decimals, admin, finance)
                _simulate_deployment(proj.LedgerTestToken, token_args, sender)
                token = proj.LedgerTestToken.deploy(*token_args, sender=sender)
        return cls(ledger, token)

    @classmethod
    def at(cls, ledger_address: str, token_address: str | None = None) -> LedgerChain:
        proj = project()
        ledger = proj.AllianceLedger.at(ledger_address)
        token = proj.LedgerTestToken.at(token_address) if token_address else None
        return cls(ledger, token)

    @property
    def address(self) -> str:
        return self._fixed[0] if self._fixed else self.contract.address

    @cached_property
    def deployment_block(self) -> int:
        """The block the ledger was deployed in, where its logs start (0 when unknown)."""
        import ape

        txn_hash = getattr(self.contract, "txn_hash", None)
        return int(ape.chain.provider.get_receipt(txn_hash).block_number) if txn_hash else 0

    @cached_property
    def chain_id(self) -> int:
        return int(self.rpc.request("eth_chainId"), 16) if self._fixed else connected_chain_id()

    def token_at(self, address: str):
        """An ERC-20 settlement token by address (the ABI is the test token's ERC-20 surface)."""
        return project().LedgerTestToken.at(address)

    # -- ME registry --------------------------------------------------------------------------------

    def register_me(self, name: str, payout: str, signer: str, parent: int = 0, *, sender) -> int:
        receipt = self.transact(self._method("registerME"), name, payout, signer, parent, sender=sender)
        return int(self._event_args(receipt, "MERegistered")["meId"])

    def update_me(self, me_id: int, payout: str, signer: str, consent: bytes, *, sender) -> None:
        self.transact(self._method("updateME"), me_id, payout, signer, consent, sender=sender)

    def sign_me_update(self, account, me_id: int, payout: str, signer: str) -> bytes:
        nonce = self.me(me_id).nonce
        from ledger.chain import eip712  # eth-account: imported by the commands that sign only

        message = eip712.me_update_message(self.chain_id, self.address, me_id, payout, signer, nonce)
        return eip712.sign(account, message)

    def dissolve_me(self, me_id: int, *, sender) -> None:
        self.transact(self._method("dissolveME"), me_id, sender=sender)

    def me_count(self) -> int:
        return int(self.view("meCount"))

    def me(self, me_id: int) -> ME:
        return self.mes_by_id([me_id])[0]

    def mes_by_id(self, me_ids: Sequence[int]) -> list[ME]:
        """Several MEs in one batched round trip; raises NotFoundError for an id with no ME."""
        found = []
        for me_id, raw in zip(me_ids, self.views([("meOf", (i,)) for i in me_ids]), strict=True):
            status = MEStatus(int(raw["status"]))
            if status == MEStatus.NONE:
                raise NotFoundError(f"no ME with id {me_id}")
            found.append(
                ME(
                    id=me_id,
                    name=raw["name"],
                    payout=raw["payout"],
                    signer=raw["signer"],
                    status=status,
                    parent=int(raw["parent"]),
                    nonce=int(raw["nonce"]),
                )
            )
        return found

    def me_id_by_name(self, name: str) -> int:
        me_id = int(self.view("meIdByName", name))
        if me_id == 0:
            raise NotFoundError(f"no ME named {name!r}")
        return me_id

    def mes(self) -> list[ME]:
        return self.mes_by_id(range(1, self.me_count() + 1))

    # -- agreements ---------------------------------------------------------------------------------

    @staticmethod
    def agreement_id(name: str) -> bytes:
        try:
            return text_to_bytes32(name, "alliance name")
        except ValueError as err:
            raise LedgerError(str(err)) from None

    def agreement(self, name_or_id: str | bytes) -> Agreement:
        agreement_id = name_or_id if isinstance(name_or_id, bytes) else self.agreement_id(name_or_id)
        found = self.agreements([agreement_id])[0]
        if found is None:
            raise NotFoundError(f"no alliance named {bytes32_to_text(agreement_id)!r}")
        return found

    def agreements(self, agreement_ids: Sequence[bytes]) -> list[Agreement | None]:
        """Several agreements in one batched round trip (None where there is none)."""
        found: list[Agreement | None] = []
        for agreement_id, raw in zip(agreement_ids, self.views([("agreementOf", (a,)) for a in agreement_ids]),
                                     strict=True):  # fmt: skip
            status = AgreementStatus(int(raw["status"]))
            found.append(
                None
                if status == AgreementStatus.NONE
                else Agreement(
                    id=agreement_id,
                    name=bytes32_to_text(agreement_id),
                    token=raw["token"],
                    status=status,
                    active_version=int(raw["activeVersion"]),
                    latest_version=int(raw["latestVersion"]),
                    next_seq=int(raw["nextSeq"]),
                    recouped=int(raw.get("recouped", 0)),
                )
            )
        return found

    def terms_hash(self, agreement_id: bytes, version: int) -> bytes:
        return bytes(self.view("termsHashOf", agreement_id, version))

    def hash_terms(self, terms: Terms) -> bytes:
        return bytes(self.view("hashTerms", terms.as_tuple()))

    def propose(self, agreement_id: bytes, terms: Terms, *, sender, current: Terms | None = None) -> int:
        """Propose ``terms`` as the next version. ``current``: the terms of the agreement's current version
        (whose parties' signers may propose), read from the chain when not given."""
        if current is None:
            current = self.current_terms(agreement_id)
        shown = current.as_tuple() if current is not None else EMPTY_TERMS
        receipt = self.transact(self._method("proposeAgreement"), agreement_id, terms.as_tuple(), shown, sender=sender)
        return int(self._event_args(receipt, "AgreementProposed")["version"])

    def current_terms(self, agreement_id: bytes) -> Terms | None:
        """The terms of the version that speaks for an agreement (see :meth:`Agreement.current_version`),
        or None when it does not exist or has ended."""
        found = self.agreements([agreement_id])[0]
        if found is None or found.current_version is None:
            return None
        return self.terms_of(agreement_id, found.current_version)

    def approval_message(self, agreement_id: bytes, version: int, terms: Terms):
        from ledger.chain import eip712

        return eip712.approval_message(self.chain_id, self.address, agreement_id, version, terms)

    def termination_message(self, agreement_id: bytes, version: int):
        from ledger.chain import eip712

        return eip712.termination_message(self.chain_id, self.address, agreement_id, version)

    def activate(self, agreement_id: bytes, version: int, terms: Terms, signatures: Sequence[bytes], *, sender):
        args = (agreement_id, version, terms.as_tuple(), list(signatures))
        return self.transact(self._method("activateAgreement"), *args, sender=sender)

    def create(self, agreement_id: bytes, terms: Terms, signatures: Sequence[bytes], *, sender):
        args = (agreement_id, terms.as_tuple(), list(signatures))
        return self.transact(self._method("createAgreement"), *args, sender=sender)

    def terminate(self, agreement_id: bytes, terms: Terms, signatures: Sequence[bytes], *, sender):
        args = (agreement_id, terms.as_tuple(), list(signatures))
        return self.transact(self._method("terminateAgreement"), *args, sender=sender)

    def terms_of(self, agreement_id: bytes, version: int) -> Terms:
        """A version's full terms, from its ``AgreementProposed`` log, checked against the commitment."""
        return self.terms_of_many([(agreement_id, version)])[(agreement_id, version)]

    def terms_of_many(
        self, keys: Sequence[tuple[bytes, int]], *, from_block: int = 0
    ) -> dict[tuple[bytes, int], Terms]:
        """The terms of several (agreement, version) pairs: one batch of commitments and one log scan
        (in bounded pages) for all of them."""
        keys = list(dict.fromkeys(keys))
        expected = dict(zip(keys, (bytes(h) for h in self.views([("termsHashOf", k) for k in keys])), strict=True))
        for (agreement_id, version), commitment in expected.items():
            if commitment == b"\0" * 32:
                raise NotFoundError(f"alliance {bytes32_to_text(agreement_id)!r} has no version {version}")
        found: dict[tuple[bytes, int], Terms] = {}
        topic1 = list(dict.fromkeys(a for a, _ in keys))
        for start in range(0, len(topic1), 100):  # nodes cap the topics of one filter
            for log in self.logs(["AgreementProposed"], from_block=from_block, topic1=topic1[start : start + 100]):
                key = (log.args["agreementId"], log.args["version"])
                if key in expected and key not in found and log.args["termsHash"] == expected[key]:
                    found[key] = Terms.from_abi(log.args["terms"])
        for agreement_id, version in keys:
            if (agreement_id, version) not in found:
                raise LedgerError(f"the terms of version {version} are missing from the chain's logs")
        return found

    # -- settlement and balances --------------------------------------------------------------------

    def settle(
        self,
        agreement_id: bytes,
        version: int,
        first_seq: int,
        terms: Terms,
        refs: Sequence[bytes],
        entries: Sequence[int],
        *,
        sender,
        confirm: bool = True,
        **tx_args,
    ) -> Receipt:
        args = (agreement_id, version, first_seq, terms.as_tuple(), list(refs), list(entries))
        return self.transact(self._method("settle"), *args, sender=sender, confirm=confirm, **tx_args)

    def settle_data(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int],
    ) -> bytes:  # fmt: skip
        """The calldata of ``settle`` (for :class:`ledger.chain.transact.Pipeline`)."""
        return self.abi["settle"].encode(agreement_id, version, first_seq, terms.as_tuple(), list(refs), list(entries))

    def settle_nested(
        self,
        agreement_id: bytes,
        version: int,
        first_seq: int,
        terms: Terms,
        refs: Sequence[bytes],
        entries: Sequence[int],
        inner: Sequence[tuple[bytes, int, Terms]],
        *,
        sender,
        confirm: bool = True,
        **tx_args,
    ) -> Receipt:
        """``settleNested``: a batch of an agreement with nested parties, with the active version and terms
        of every agreement reachable through its nesting (``inner``: (id, version, terms))."""
        args = (agreement_id, version, first_seq, terms.as_tuple(), list(refs), list(entries), _inner_tuples(inner))
        return self.transact(self._method("settleNested"), *args, sender=sender, confirm=confirm, **tx_args)

    def settle_nested_data(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int], inner: Sequence[tuple[bytes, int, Terms]],
    ) -> bytes:  # fmt: skip
        """The calldata of ``settleNested``."""
        return self.abi["settleNested"].encode(
            agreement_id, version, first_seq, terms.as_tuple(), list(refs), list(entries), _inner_tuples(inner)
        )

    def inner_terms(self, terms: Terms) -> list[tuple[bytes, int, Terms]]:
        """The active version and terms of every agreement reachable through ``terms.nested`` (what
        ``settleNested`` needs), walked breadth-first; an inner alliance with no version in force is
        included with version 0 so the contract names it in its error."""
        found: dict[bytes, tuple[bytes, int, Terms]] = {}
        frontier = list(dict.fromkeys(terms.nested_parties.values()))
        while frontier:
            agreements = self.agreements(frontier)
            wanted = [(a.id, a.active_version) for a in agreements if a is not None and a.active_version]
            terms_of = self.terms_of_many(wanted) if wanted else {}
            next_frontier = []
            for inner_id, agreement in zip(frontier, agreements, strict=True):
                if inner_id in found or agreement is None or not agreement.active_version:
                    continue
                inner = terms_of[(inner_id, agreement.active_version)]
                found[inner_id] = (inner_id, agreement.active_version, inner)
                next_frontier += [x for x in inner.nested_parties.values() if x not in found]
            frontier = list(dict.fromkeys(next_frontier))
        return list(found.values())

    def reverse(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int], originals: Sequence[bytes], *, sender, confirm: bool = True, **tx_args,
    ) -> Receipt:  # fmt: skip
        args = (agreement_id, version, first_seq, terms.as_tuple(), list(refs), list(entries), list(originals))
        return self.transact(self.contract.settleReversals, *args, sender=sender, confirm=confirm, **tx_args)

    def reverse_data(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int], originals: Sequence[bytes],
    ) -> bytes:  # fmt: skip
        """The calldata of ``settleReversals``."""
        return self.abi["settleReversals"].encode(
            agreement_id, version, first_seq, terms.as_tuple(), list(refs), list(entries), list(originals)
        )

    def debt_of(self, me_id: int, token: str) -> int:
        return self.view("debtOf", me_id, token)

    def total_debt(self, token: str) -> int:
        return self.view("totalDebt", token)

    def simulate(self, sender: str, data: bytes) -> None:
        """Run a call to the ledger without sending it; a revert raises :class:`ContractRevert`."""
        self.transactor._simulate({"from": sender, "to": self.address, "data": "0x" + data.hex()})

    def pipeline(self, sender, window: int | None = None):
        """Send many transactions from ``sender`` without waiting for each (see ``Pipeline``)."""
        from ledger.chain.transact import Pipeline, Signer

        return Pipeline(self.transactor, Signer(sender), self.chain_id, window=window)

    def block_gas_limit(self) -> int:
        return int(self.rpc.request("eth_getBlockByNumber", ["latest", False])["gasLimit"], 16)

    def close_period(self, agreement_id: bytes, period: int, *, sender):
        return self.transact(self._method("closePeriod"), agreement_id, period, sender=sender)

    def withdraw(self, me_id: int, token: str, *, sender) -> int:
        receipt = self.transact(self._method("withdraw"), me_id, token, sender=sender)
        return int(self._event_args(receipt, "Withdrawn")["amount"])

    def payout(self, token: str, me_ids: Sequence[int], *, sender) -> Receipt:
        """Pay the listed MEs' balances in ``token`` to their payout addresses (anyone may send)."""
        return self.transact(self.contract.payout, token, list(me_ids), sender=sender)

    def payout_data(self, token: str, me_ids: Sequence[int]) -> bytes:
        """The calldata of ``payout`` (for :class:`ledger.chain.transact.Pipeline`)."""
        return self.abi["payout"].encode(token, list(me_ids))

    def estimate_gas(self, sender: str, data: bytes) -> int:
        """``eth_estimateGas`` of a call to the ledger; a revert raises :class:`ContractRevert`."""
        call = {"from": sender, "to": self.address, "data": "0x" + data.hex()}
        try:
            return int(self.rpc.request("eth_estimateGas", [call]), 16)
        except RpcError as err:
            data = revert_data(err.data)
            decoded = _decode_revert_data(data) if data else None
            if decoded:
                raise ContractRevert(*decoded) from None
            raise

    def balance_of(self, me_id: int, token: str) -> int:
        return int(self.view("balanceOf", me_id, token))

    def balances_of(self, me_ids: Sequence[int], token: str) -> list[int]:
        return [int(v) for v in self.views([("balanceOf", (me_id, token)) for me_id in me_ids])]

    def total_owed(self, token: str) -> int:
        return int(self.view("totalOwed", token))

    def period(self, agreement_id: bytes, period: int) -> tuple[int, bool]:
        return self.periods([(agreement_id, period)])[0]

    def periods(self, keys: Sequence[tuple[bytes, int]]) -> list[tuple[int, bool]]:
        """(revenue, closed) of several (agreement, period) pairs in one batched round trip."""
        return [(int(raw["revenue"]), bool(raw["closed"])) for raw in self.views([("periodOf", k) for k in keys])]

    def period_states(self, keys: Sequence[tuple[bytes, int]]) -> list[tuple[int, bool, int]]:
        """(revenue, closed, recouped) of several (agreement, period) pairs: ``recouped`` is the part of the
        period's revenue that went by the recoup table (its banded revenue is ``revenue - recouped``)."""
        return [
            (int(raw["revenue"]), bool(raw["closed"]), int(raw.get("recouped", 0)))
            for raw in self.views([("periodOf", k) for k in keys])
        ]

    def has_role(self, role: str, account: str) -> bool:
        """Whether ``account`` holds the ledger's ``role`` (``PLATFORM_ROLE``, ``FINANCE_ROLE``,
        ``DEFAULT_ADMIN_ROLE``)."""
        return bool(self.view("hasRole", self.role_id(role), account))

    def role_id(self, role: str) -> bytes:
        return b"\0" * 32 if role == "DEFAULT_ADMIN_ROLE" else bytes(self.view(role))

    def require_role(self, role: str, account: str, doing: str) -> None:
        """Refuse, before anything is sent, when ``account`` lacks ``role``: the error the contract would
        give (``AccessControlUnauthorizedAccount``), saying which role ``doing`` needs."""
        if not self.has_role(role, account):
            raise ContractRevert(
                "AccessControlUnauthorizedAccount",
                {"account": account, "neededRole": self.role_id(role)},
                f"account {named(account)} lacks {ROLE_WORDS[role]}, which {doing} needs; nothing was sent "
                f"(give --account with an account that holds it)",
            )

    def grant_role(self, role: str, account: str, *, sender) -> None:
        self.transact(self.contract.grantRole, getattr(self.contract, role)(), account, sender=sender)

    # -- tokens -------------------------------------------------------------------------------------

    def token_balance(self, token: str, holder: str) -> int:
        return int(self.call(token, ERC20["balanceOf"], holder))

    def allowance(self, token: str, owner: str) -> int:
        return int(self.call(token, ERC20["allowance"], owner, self.address))

    def mint(self, recipient: str, amount: int, *, sender) -> None:
        """Mint the local test token (its minter role): simulated first like every other transaction."""
        if self.token is None:
            raise LedgerError("this deployment has no test token (only the local chain gets one)")
        self.transact(self.token.mint, recipient, amount, sender=sender)

    def ensure_allowance(self, token: str, owner, amount: int) -> None:
        if self.allowance(token, owner.address) >= amount:
            return
        if hasattr(owner, "execute"):  # a Safe approves through one Safe transaction its owners sign
            owner.execute(token, ERC20["approve"].encode(self.address, amount))
            return
        if self.transactor is None:  # pragma: no cover - every provider the project uses speaks HTTP
            self.transact(self.token_at(token).approve, self.address, amount, sender=owner)
            return
        # Raw calldata signed by the account (no Ape contract object for the token: about 1 s less).
        self.transactor.send(self._raw_call(token, ERC20["approve"].encode(self.address, amount), owner))

    # -- raw view calls -----------------------------------------------------------------------------

    @cached_property
    def abi(self) -> ContractAbi:
        return ContractAbi(self._abi_json)

    @property
    def _abi_json(self) -> list:
        return self._fixed[2] if self._fixed else self.contract.contract_type.model_dump(mode="json")["abi"]

    @property
    def rpc(self) -> HttpRpc:
        """Raw JSON-RPC to the connected node: the provider's HTTP endpoint, or the provider itself when
        the node runs in process (py-evm, Ape's ``ethereum:local:test``)."""
        if self._fixed:
            return self._fixed[1]
        import ape

        provider = ape.chain.provider
        uri = getattr(provider, "http_uri", None)
        current = self.__dict__.get("_rpc")
        if uri:
            if current is None or current.url != uri:
                current = self.__dict__["_rpc"] = HttpRpc(uri)
        elif current is None or getattr(current._transport, "provider", None) is not provider:
            current = self.__dict__["_rpc"] = HttpRpc.over_provider(provider)
        return current

    def call(self, to: str, function, *args, block: str = "latest"):
        return self.calls([(to, function, args)], block=block)[0]

    def calls(self, calls: Sequence[tuple[str, object, tuple]], *, block: str = "latest") -> list:
        """Many view calls in batched JSON-RPC round trips (``(address, abi.Function, args)`` each)."""
        requests = [("eth_call", [{"to": to, "data": "0x" + fn.encode(*args).hex()}, block]) for to, fn, args in calls]
        try:
            replies = self.rpc.batch(requests)
        except RpcError as err:
            data = revert_data(err.data)
            decoded = _decode_revert_data(data) if data else None
            if decoded:
                raise ContractRevert(*decoded) from None
            raise
        results = []
        for (to, fn, _), reply in zip(calls, replies, strict=True):
            try:
                results.append(fn.decode(reply))
            except Exception:  # noqa: BLE001 - no code at `to`, or another contract's answer
                raise LedgerError(f"the contract at {to} does not answer {fn.name}()") from None
        return results

    def view(self, name: str, *args):
        """One view function of the ledger."""
        return self.call(self.address, self.abi[name], *args)

    def views(self, calls: Sequence[tuple[str, tuple]]) -> list:
        """Many view functions of the ledger, batched: ``[(name, args), ...]``."""
        return self.calls([(self.address, self.abi[name], tuple(args)) for name, args in calls])

    # -- sending ------------------------------------------------------------------------------------

    @property
    def transactor(self) -> Transactor | None:
        """Sends with simulation, bounded waits and re-sending (see ``ledger.chain.transact``), over the
        node's JSON-RPC (HTTP or in process)."""
        rpc = self.rpc
        current = self.__dict__.get("_transactor")
        if current is None or current.rpc is not rpc or current.policy != self.policy:
            current = self.__dict__["_transactor"] = Transactor(rpc, self.policy, _decode_revert_data)
        return current

    def _method(self, name: str):
        """The ledger's function ``name`` to :meth:`transact`: Ape's handler, or on a chain read over
        JSON-RPC (:meth:`over_rpc`, with Ape connected for its accounts) the name, sent as raw calldata."""
        return name if self._fixed else getattr(self.contract, name)

    def _raw_transaction(self, name: str, args: tuple, sender):
        """A builder of the signed call of ``name`` for :meth:`Transactor.send`: nonce, gas estimate and
        fees read over JSON-RPC, signed by the Ape account (:class:`ledger.chain.transact.Signer`)."""
        return self._raw_call(self.address, self.abi[name].encode(*args), sender)

    def _raw_call(self, to: str, data: bytes, sender):
        """A builder of the signed transaction of ``data`` to ``to`` (see :meth:`_raw_transaction`)."""
        from ledger.chain.transact import SignedCall, Signer

        signer = Signer(sender)
        rpc = self.rpc
        fees = self.pipeline(sender, 1)._fee_fields

        def build():
            call = {"from": signer.address, "to": to, "data": "0x" + data.hex()}
            try:
                gas = int(rpc.request("eth_estimateGas", [call]), 16)
            except RpcError:
                self.transactor._simulate(call)  # the reason it reverts
                raise
            nonce = int(rpc.request("eth_getTransactionCount", [signer.address, "pending"]), 16)
            tx = {"chainId": self.chain_id, "nonce": nonce, "to": to, "data": data, "gas": gas * 5 // 4 + 20_000,
                  "value": 0, **fees()}  # fmt: skip
            if "maxFeePerGas" in tx:
                tx["type"] = 2
            raw, tx_hash = signer.sign(tx)
            return SignedCall(signer.address, to, data, raw, tx_hash)

        return build

    def transact(self, handler, *args, sender, confirm: bool = True, **tx_args) -> Receipt:
        """One state-changing call that lands once (or raises), waited for per the policy. A ``sender``
        that acts through a Safe (:class:`ledger.services.safes.SafeActor`) sends it as one Safe
        transaction its owners sign."""
        if hasattr(sender, "execute"):
            if isinstance(handler, str):  # the ledger's function by name (a chain read over JSON-RPC)
                return sender.execute(self.address, self.abi[handler].encode(*args))
            return sender.execute(str(handler.contract.address), bytes(handler.encode_input(*args)))
        transactor = self.transactor
        if isinstance(handler, str):
            return transactor.send(self._raw_transaction(handler, args, sender), confirm=confirm)
        if transactor is None:  # pragma: no cover - every provider the project uses speaks HTTP
            with contract_errors():
                receipt = handler(*args, sender=sender, **tx_args)
            return Receipt(str(receipt.txn_hash), int(receipt.block_number), "", int(receipt.gas_used))
        fees = {}
        if self.policy.max_fee is not None:
            fees["max_fee"] = self.policy.max_fee
        if self.policy.priority_fee is not None:
            fees["max_priority_fee"] = self.policy.priority_fee

        def build():
            with contract_errors():  # where the gas is estimated, a refusal surfaces here
                return handler.as_transaction(*args, sender=sender, **{**fees, **tx_args})

        def sign(tx):
            signed = sender.sign_transaction(tx)
            if signed is None or not getattr(signed, "signature", None):
                raise LedgerError(f"account {named(sender.address)} did not sign the transaction; nothing was sent")
            return signed

        try:
            return transactor.send(build, confirm=confirm, sign=sign)
        except ContractRevert as err:
            raise self.explain(err) from None

    def explain(self, err: ContractRevert) -> ContractRevert:
        """The revert again, with the names of the MEs its arguments refer to (``ME 3 (fridge)``)."""
        me_ids = [int(v) for k, v in err.args_.items() if k.lower().endswith("meid") and isinstance(v, int)]
        if not me_ids or err.name in ("MEUnknown",):
            return err
        try:
            mes = self.mes_by_id(me_ids)
        except LedgerError:
            return err
        labels = {f"me:{me.id}": me.name for me in mes}
        for me in mes:  # an address in the error that is one of these MEs' (unless an alias names it)
            labels.setdefault(me.payout.lower(), f"payout of {me.name}")
            labels.setdefault(me.signer.lower(), f"signer of {me.name}")
        labels = {k: v for k, v in labels.items() if k not in KNOWN_NAMES}
        return ContractRevert(err.name, err.args_, describe_revert(err.name, err.args_, labels))

    # -- bulk reads -----------------------------------------------------------------------------------

    def batch_views(self):
        """Read-only calls of the ledger's and its tokens' views, many per JSON-RPC batch
        (:class:`ledger.chain.views.BatchViews`)."""
        from ledger.chain.views import BatchViews

        return BatchViews(self.rpc, self._abi_json)

    # -- logs ---------------------------------------------------------------------------------------

    @cached_property
    def _reader(self) -> LogReader:
        # Raw JSON-RPC, not Ape's provider: no web3 request stack per page, and a page the node refuses
        # comes back as RpcError, which LogReader answers by halving the page.
        return LogReader(lambda method, params: self.rpc.request(method, params), self.address, self._abi_json)

    def logs(
        self,
        names: list[str],
        *,
        from_block: int = 0,
        to_block: int | None = None,
        topic1: list[bytes] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[Log]:
        last = self.head() if to_block is None else to_block
        index = getattr(self, "index", None)  # a ledger.index.LedgerIndex brought up to date by the caller
        if index is not None and "RevenueSettled" not in names:
            return index.read(self._reader, names, from_block, last, topic1=topic1, page_size=page_size)
        return self._reader.read(names, from_block, last, topic1=topic1, page_size=page_size)

    def _event_args(self, receipt, name: str) -> dict:
        """The arguments of the ledger's ``name`` event in ``receipt`` (decoded from its raw logs)."""
        if isinstance(receipt, Receipt) and receipt.logs:
            for item in receipt.logs:
                log = self._reader.decode(item)
                if log is not None and log.event == name:
                    return log.args
            raise LedgerError(f"transaction {receipt.tx_hash} has no {name} event")  # pragma: no cover
        if isinstance(receipt, Receipt):  # pragma: no cover - Ape's own send (no HTTP endpoint)
            import ape

            receipt = ape.chain.provider.get_receipt(receipt.tx_hash)
        for log in receipt.decode_logs():
            if log.event_name == name:
                return dict(log.event_arguments)
        raise LedgerError(f"transaction {receipt.txn_hash} has no {name} event")  # pragma: no cover
