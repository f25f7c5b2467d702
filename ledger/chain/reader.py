"""The read side of the chain layer: a deployment's views, batched views, logs and code, straight over
JSON-RPC (:class:`ledger.chain.rpc.HttpRpc`) and decoded with :mod:`ledger.chain.codec`. No Ape: a report
that only reads starts in a fraction of a second, and the audit runs with nothing but a node's URL.

- :func:`eth_calls`: the one ``eth_call`` encoder (many calls per JSON-RPC batch, at one block), used by
  :class:`LedgerReader`, :class:`BatchViews` and the audit's conservation checks.
- :class:`LogReader`: paged ``eth_getLogs`` of a contract's events. Decoding through per-event objects
  (web3's or Ape's) is 5-20x slower; the reports and the audit read every settlement log. Ranges are
  fetched in pages of at most ``page_size`` blocks, so providers that cap ``eth_getLogs`` ranges work; a
  page the node refuses (a JSON-RPC error, as providers answer "range too large" or "too many results")
  is halved and retried, down to a single block.
- :class:`LedgerReader`: one deployment's ledger read as domain objects (MEs, agreements, terms,
  balances, periods, roles), and the calldata of its settlement functions. Sending is
  :class:`ledger.chain.writer.LedgerWriter`'s, which is a reader too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any

from ledger.chain.codec import (
    ERC20,
    ERC20_ABI,
    ContractAbi,
    EventSpec,
    Function,
    Log,
    compiled_abi,
    hex_to_bytes,
    refusal,
)
from ledger.chain.rpc import HttpRpc, RpcError
from ledger.errors import KNOWN_NAMES, ROLE_WORDS, ContractRevert, LedgerError, NotFoundError, describe_revert, named
from ledger.models import ME, Agreement, AgreementStatus, MEStatus, Terms, bytes32_to_text, text_to_bytes32

DEFAULT_PAGE_SIZE = 50_000
FIRST_PAGE = 128  # blocks of the first page when pages are sized by what they hold (``weight``)
AUDIT_PAGE_WEIGHT = 200_000  # about 100 settlement batches of 1,000 events (some 25 MB of JSON) per page


def eth_calls(rpc: HttpRpc, calls: Sequence[tuple[str, Function, Sequence[Any]]], block: str = "latest") -> list[str]:
    """The raw results of many view calls ``(address, Function, args)`` at ``block``, in batched JSON-RPC
    round trips (a refused call raises :class:`ledger.chain.rpc.RpcError`)."""
    requests = [("eth_call", [{"to": to, "data": "0x" + fn.encode(*args).hex()}, block]) for to, fn, args in calls]
    return rpc.batch(requests) if requests else []


def inner_tuples(inner: Sequence[tuple[bytes, int, Terms]]) -> list[tuple]:
    """``(agreement id, version, terms)`` of nested agreements as ``settleNested`` takes them."""
    return [(bytes(aid), int(version), terms.as_tuple()) for aid, version, terms in inner]


class BatchViews:
    """Calls view functions of contracts whose ABIs it was given, many per request, at one block."""

    def __init__(self, rpc, abi: list[dict]):
        self.rpc = rpc
        self.specs = dict(ContractAbi(abi).functions)
        self.specs.update({f"erc20.{name}": fn for name, fn in ContractAbi(ERC20_ABI).functions.items()})

    def call(self, calls: Sequence[tuple[str, str, Sequence[Any]]], *, block: int | str = "latest") -> list[Any]:
        """``[(address, function name, args), ...]`` -> the decoded results, in order (a reverted call raises
        :class:`ledger.chain.rpc.RpcError`)."""
        tag = hex(block) if isinstance(block, int) else block
        results = eth_calls(self.rpc, [(to, self.specs[name], args) for to, name, args in calls], tag)
        return [self.specs[name].decode_values(raw) for (_, name, _), raw in zip(calls, results, strict=True)]

    def block_timestamps(self, blocks: Sequence[int]) -> dict[int, int]:
        """Unix time of each block, one batch for all of them."""
        wanted = sorted(set(blocks))
        replies = self.rpc.batch([("eth_getBlockByNumber", [hex(b), False]) for b in wanted]) if wanted else []
        return {b: int(reply["timestamp"], 16) for b, reply in zip(wanted, replies, strict=True) if reply}


class LogReader:
    """Reads a contract's events by name with raw RPC calls."""

    def __init__(self, request: Callable[[str, list], Any], address: str, abi: list[dict]):
        self._request = request
        self.address = address
        self.pages = 0  # eth_getLogs requests answered
        self.refused = 0  # pages the node refused (then halved)
        self.specs = {item["name"]: EventSpec.from_abi(item) for item in abi if item.get("type") == "event"}
        self._by_topic = {spec.topic0: spec for spec in self.specs.values()}

    def topic(self, name: str) -> bytes:
        return self.specs[name].topic0

    def read(
        self,
        names: list[str],
        from_block: int,
        to_block: int,
        *,
        topic1: list[bytes] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        weight: int | None = None,
    ) -> Iterator[Log]:
        """Every log of the named events in ``[from_block, to_block]``, in chain order.

        ``weight``: bound each response by what it holds, not only by blocks: pages start at
        ``FIRST_PAGE`` blocks and are resized after each so that one holds about ``weight`` units (50
        per log plus one per array item: a settlement batch of 1,000 events is about 2,050), never more
        than ``page_size`` blocks. Without it, pages are ``page_size`` blocks (halved when refused)."""
        topics: list[Any] = [["0x" + self.specs[n].topic0.hex() for n in names]]
        if topic1:
            topics.append(["0x" + t.hex() for t in topic1])
        start = from_block
        page = max(1, page_size if weight is None else min(page_size, FIRST_PAGE))
        while start <= to_block:
            end = min(to_block, start + page - 1)
            try:
                raw = self._request(
                    "eth_getLogs",
                    [{"address": self.address, "fromBlock": hex(start), "toBlock": hex(end), "topics": topics}],
                )
            except RpcError:
                if end == start:
                    raise
                self.refused += 1
                page = max(1, (end - start + 1) // 2)
                continue
            self.pages += 1
            held = 0
            for item in raw:
                log = None if item.get("removed") else self.decode(item)
                if log is not None:
                    if weight is not None:
                        held += 50 + sum(len(v) for v in log.args.values() if isinstance(v, tuple | list))
                    yield log
            start = end + 1
            if weight is not None:
                if held > weight:
                    page = max(1, page * weight // held)
                elif held < weight // 4:
                    page = min(max(1, page_size), page * 2)

    def decode(self, item: dict) -> Log | None:
        """One raw log (from ``eth_getLogs`` or a receipt) of this contract's known events, or None."""
        if not item.get("topics") or item.get("address", self.address).lower() != self.address.lower():
            return None
        topic_bytes = [hex_to_bytes(t) for t in item["topics"]]
        spec = self._by_topic.get(topic_bytes[0])
        if spec is None:
            return None
        return Log(
            event=spec.name,
            block=int(item["blockNumber"], 16) if isinstance(item["blockNumber"], str) else item["blockNumber"],
            tx=item["transactionHash"]
            if isinstance(item["transactionHash"], str)
            else "0x" + bytes(item["transactionHash"]).hex(),
            index=int(item["logIndex"], 16) if isinstance(item["logIndex"], str) else item["logIndex"],
            args=spec.decode(topic_bytes, hex_to_bytes(item["data"])),
        )


def simulate_call(rpc: HttpRpc, call: dict) -> None:
    """Run ``call`` (``{"from", "to", "data"}``) with ``eth_call`` without sending it; a revert raises
    :class:`ContractRevert` with the contract's custom error when it is one of ours."""
    try:
        rpc.request("eth_call", [call, "latest"])
    except RpcError as err:
        raise refusal(err) or ContractRevert("Reverted", {}, f"the contract refused the transaction: {err}") from None


class LedgerReader:
    """One deployment's ledger, read over JSON-RPC: ``address`` through ``rpc``, decoded with ``abi``
    (its JSON ABI)."""

    index = None  # a ledger.index.LedgerIndex brought up to date by the caller: log reads come from it

    def __init__(self, address: str, rpc: HttpRpc, abi: list[dict]):
        self._address = address
        self._rpc = rpc
        self._abi = abi

    @classmethod
    def over_rpc(cls, address: str, url: str, abi: list | None = None) -> LedgerReader:
        """The ledger at ``address`` read through the node at ``url`` (the compiled ABI unless given)."""
        return cls(address, HttpRpc(url), abi if abi is not None else compiled_abi("AllianceLedger"))

    @property
    def address(self) -> str:
        return self._address

    @property
    def rpc(self) -> HttpRpc:
        """Raw JSON-RPC to the node."""
        return self._rpc

    @property
    def abi_json(self) -> list:
        """The ledger's JSON ABI."""
        return self._abi

    @cached_property
    def abi(self) -> ContractAbi:
        return ContractAbi(self.abi_json)

    @cached_property
    def chain_id(self) -> int:
        return self.rpc.chain_id()

    @property
    def deployment_block(self) -> int:
        """The block the ledger was deployed in, where its logs start (0 when unknown)."""
        return 0

    def head(self) -> int:
        """The newest block's number."""
        return int(self.rpc.request("eth_blockNumber"), 16)

    def has_code(self, address: str) -> bool:
        """Whether a contract is deployed at ``address``."""
        return self.rpc.has_code(address)

    # -- ME registry --------------------------------------------------------------------------------

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

    @staticmethod
    def batch_args(
        agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int], *extra,
    ) -> tuple:  # fmt: skip
        """The arguments of a settlement batch as the contract takes them: ``settle``; ``settleNested``
        with ``extra`` the inner agreements (:func:`inner_tuples`); ``settleReversals`` with ``extra`` the
        refs of the original events."""
        return (agreement_id, version, first_seq, terms.as_tuple(), list(refs), list(entries), *extra)

    def settle_data(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int],
    ) -> bytes:  # fmt: skip
        """The calldata of ``settle`` (for :class:`ledger.chain.transact.Pipeline`)."""
        return self.abi["settle"].encode(*self.batch_args(agreement_id, version, first_seq, terms, refs, entries))

    def settle_nested_data(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int], inner: Sequence[tuple[bytes, int, Terms]],
    ) -> bytes:  # fmt: skip
        """The calldata of ``settleNested``."""
        args = self.batch_args(agreement_id, version, first_seq, terms, refs, entries, inner_tuples(inner))
        return self.abi["settleNested"].encode(*args)

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

    def reverse_data(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: Sequence[bytes],
        entries: Sequence[int], originals: Sequence[bytes],
    ) -> bytes:  # fmt: skip
        """The calldata of ``settleReversals``."""
        args = self.batch_args(agreement_id, version, first_seq, terms, refs, entries, list(originals))
        return self.abi["settleReversals"].encode(*args)

    def payout_data(self, token: str, me_ids: Sequence[int]) -> bytes:
        """The calldata of ``payout`` (for :class:`ledger.chain.transact.Pipeline`)."""
        return self.abi["payout"].encode(token, list(me_ids))

    def debt_of(self, me_id: int, token: str) -> int:
        return self.view("debtOf", me_id, token)

    def total_debt(self, token: str) -> int:
        return self.view("totalDebt", token)

    def simulate(self, sender: str, data: bytes) -> None:
        """Run a call to the ledger without sending it; a revert raises :class:`ContractRevert`."""
        simulate_call(self.rpc, {"from": sender, "to": self.address, "data": "0x" + data.hex()})

    def estimate_gas(self, sender: str, data: bytes) -> int:
        """``eth_estimateGas`` of a call to the ledger; a revert raises :class:`ContractRevert`."""
        call = {"from": sender, "to": self.address, "data": "0x" + data.hex()}
        try:
            return int(self.rpc.request("eth_estimateGas", [call]), 16)
        except RpcError as err:
            raise refusal(err) or err from None

    def block_gas_limit(self) -> int:
        return int(self.rpc.request("eth_getBlockByNumber", ["latest", False])["gasLimit"], 16)

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

    # -- tokens -------------------------------------------------------------------------------------

    def token_balance(self, token: str, holder: str) -> int:
        return int(self.call(token, ERC20["balanceOf"], holder))

    def allowance(self, token: str, owner: str) -> int:
        return int(self.call(token, ERC20["allowance"], owner, self.address))

    # -- raw view calls -----------------------------------------------------------------------------

    def call(self, to: str, function, *args, block: str = "latest"):
        return self.calls([(to, function, args)], block=block)[0]

    def calls(self, calls: Sequence[tuple[str, object, tuple]], *, block: str = "latest") -> list:
        """Many view calls in batched JSON-RPC round trips (``(address, codec.Function, args)`` each)."""
        try:
            replies = eth_calls(self.rpc, calls, block)
        except RpcError as err:
            raise refusal(err) or err from None
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

    def batch_views(self) -> BatchViews:
        """Read-only calls of the ledger's and its tokens' views, many per JSON-RPC batch."""
        return BatchViews(self.rpc, self.abi_json)

    # -- logs ---------------------------------------------------------------------------------------

    @cached_property
    def log_reader(self) -> LogReader:
        # Raw JSON-RPC, not Ape's provider: no web3 request stack per page, and a page the node refuses
        # comes back as RpcError, which LogReader answers by halving the page.
        return LogReader(lambda method, params: self.rpc.request(method, params), self.address, self.abi_json)

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
        index = self.index
        if index is not None and "RevenueSettled" not in names:
            return index.read(self.log_reader, names, from_block, last, topic1=topic1, page_size=page_size)
        return self.log_reader.read(names, from_block, last, topic1=topic1, page_size=page_size)

    def event_args(self, logs: Sequence[dict], name: str) -> dict | None:
        """The arguments of the ledger's first ``name`` event among a receipt's raw ``logs``, or None."""
        for item in logs:
            log = self.log_reader.decode(item)
            if log is not None and log.event == name:
                return log.args
        return None
