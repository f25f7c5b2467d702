"""The audit's replay state machine: :class:`Auditor` reads the ledger's logs in chain order, replays
every event against the state it rebuilt (signers, agreements and their versions, periods, references,
balances and debts), compares what was logged with what :mod:`ledger.services.audit.recompute` gives,
and ends with :mod:`ledger.services.audit.conservation`. :func:`audit` is the one-call entry point."""

from __future__ import annotations

import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field

from eth_abi import decode as abi_decode
from eth_utils import to_checksum_address

from ledger.chain import eip712
from ledger.chain.codec import Log
from ledger.chain.reader import AUDIT_PAGE_WEIGHT, DEFAULT_PAGE_SIZE, LogReader
from ledger.errors import ChainUnavailable
from ledger.models import bytes32_to_text
from ledger.money import MAX_EVENT_AMOUNT
from ledger.services.audit.conservation import ConservationChecks
from ledger.services.audit.events import ROLE_NAMES, UPDATE_ME_SELECTOR, _through_safe, event_abi
from ledger.services.audit.findings import AuditReport, Finding, TokenTotals, _jsonable
from ledger.services.audit.recompute import (
    _RecomputedRun,
    _Terms,
    recompute_batch,
    terms_hash,
    validate_terms,
)
from ledger.terms import credit_run, nested_credit, nested_reference

# ---------------------------------------------------------------------------------------------------
# Replay state
# ---------------------------------------------------------------------------------------------------


@dataclass
class _ME:
    name: str
    signer: str
    payout: str
    active: bool = True
    nonce: int = 0


@dataclass
class _Agreement:
    name: str
    token: str
    status: str = "proposed"  # proposed | active | terminated
    active: int = 0
    latest: int = 0
    next_seq: int = 0
    versions: dict[int, _Terms] = field(default_factory=dict)
    recouped: int = 0  # revenue split by a recoup table, all periods and versions (Agreement.recouped)


# ---------------------------------------------------------------------------------------------------
# The auditor
# ---------------------------------------------------------------------------------------------------


class Auditor(ConservationChecks):
    """Reads and replays one ledger's history; :meth:`run` returns the report."""

    def __init__(
        self, rpc, ledger: str, *, from_block: int = 0, page_size: int = DEFAULT_PAGE_SIZE, confirmations: int = 0,
        checkpoint=None, full: bool = False, spill: bool = True,
    ):  # fmt: skip
        # checkpoint: a ledger.services.audit.checkpoint.Checkpoint to resume from (unless ``full``) and save to.
        # spill: the references of the duplicate check in a temporary SQLite file (bounded memory).
        self.checkpoint = checkpoint
        self.full = full
        self.spill = spill
        self.resumed_from: int | None = None  # the checkpoint's block, when the audit resumed from one
        self.dropped: str | None = None  # why a checkpoint was not used
        self.consent_findings: list[Finding] = []
        self.rpc = rpc
        self.confirmations = confirmations  # blocks at the head left out (not yet final)
        self.ledger = to_checksum_address(ledger)
        self.from_block = from_block
        self.page_size = page_size
        self.reader = LogReader(rpc.request, self.ledger, event_abi())
        self.findings: list[Finding] = []
        self.mes: dict[int, _ME] = {}
        self.agreements: dict[bytes, _Agreement] = {}
        self.periods: dict[tuple[bytes, int], list] = {}  # (aid, period) -> [revenue, closed block or None]
        self.period_recouped: dict[tuple[bytes, int], int] = {}  # (aid, period) -> the part that went by recoup
        # Within one transaction: batches by (agreement, first seq), nested credits owed and logged.
        self.tx_batches: dict[tuple[bytes, int], tuple[list, list]] = {}
        self.nested_owed: dict[tuple[bytes, int, int], tuple[int, int, bytes, str]] = {}
        self.nested_logged: list[tuple[Log, object]] = []
        self.references = None  # ledger.services.audit.checkpoint references: ref -> (aid, seq, tx, block)
        self.tokens: dict[str, TokenTotals] = {}
        self.credited: dict[tuple[int, str], int] = defaultdict(int)  # (me, token) -> credited
        self.withdrawn: dict[tuple[int, str], int] = defaultdict(int)
        self.accounts: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])  # -> [balance, debt]
        self.logged_debt: dict[tuple[str, int, str], int] = defaultdict(int)  # (kind, me, token) -> logged
        self.expected_debt: dict[tuple[str, int, str], int] = defaultdict(int)  # (kind, me, token) -> by the rule
        self.payouts: dict[tuple[str, int, int, str], int] = defaultdict(int)
        self.roles: dict[str, set[str]] = defaultdict(set)
        self.consents: list[tuple[Log, int, str, str, int, str]] = []
        self.pending: list[_RecomputedRun] = []
        self.pending_tx: str | None = None
        self.pending_block: int | None = None
        self.counts: dict[str, int] = defaultdict(int)
        self.chain_id = 0

    # -- entry point --------------------------------------------------------------------------------

    def run(self) -> AuditReport:
        started = time.perf_counter()
        self.chain_id = int(self.rpc.request("eth_chainId"), 16)
        head = max(0, int(self.rpc.request("eth_blockNumber"), 16) - self.confirmations)
        from ledger.services.audit.safe_signers import SafeSigners

        self.safes = SafeSigners(self.rpc, self.chain_id, head)
        if not self.rpc.has_code(self.ledger):
            raise ChainUnavailable(f"chain {self.chain_id} has no contract at {self.ledger}")
        if self.from_block > head:
            raise ChainUnavailable(f"--from-block {self.from_block} is past the chain's head ({head})")
        handlers = {
            "MERegistered": self._registered,
            "MEUpdated": self._updated,
            "MEDissolved": self._dissolved,
            "AgreementProposed": self._proposed,
            "AgreementActivated": self._activated,
            "AgreementEnded": self._ended,
            "RevenueSettled": self._settled,
            "PartiesCredited": self._credited,
            "PartiesCreditedByTier": self._credited,
            "NestedSettled": self._nested,
            "RevenueReversed": self._reversed,
            "PartiesDebited": self._debited,
            "PartiesDebitedByTier": self._debited,
            "DebtIncurred": self._debt_logged,
            "DebtNetted": self._debt_logged,
            "PeriodClosed": self._closed,
            "Withdrawn": self._withdrawn,
            "PayoutSkipped": self._payout_skipped,
            "RoleGranted": self._role_granted,
            "RoleRevoked": self._role_revoked,
        }
        names = list(handlers)
        from ledger.services.audit import checkpoint as audit_state

        start, head_hash, saved = self.from_block, None, None
        try:
            if self.checkpoint is not None:
                self.references = self.checkpoint.references
                head_hash = _block_hash(self.rpc, head)
                start = self._resume(head)
            else:
                self.references = audit_state.SpilledReferences() if self.spill else audit_state.MemoryReferences()
            for log in self.reader.read(names, start, head, page_size=self.page_size, weight=AUDIT_PAGE_WEIGHT):
                if log.tx != self.pending_tx:
                    self._flush_pending()
                    self.pending_tx, self.pending_block = log.tx, log.block
                self.counts["logs"] += 1
                handlers[log.event](log)
            self._flush_pending()
            replayed = len(self.findings)
            self._check_consents()
            self.consent_findings += self.findings[replayed:]
            del self.findings[replayed:]
            if self.checkpoint is not None:
                saved = audit_state.json_text(self._state())
            self.findings = self.findings + self.consent_findings
            self._conservation(head)
            if saved is not None and head_hash is not None and _block_hash(self.rpc, head) == head_hash:
                self.checkpoint.save(self._key(), head, head_hash, saved)
        finally:
            if self.checkpoint is None and self.references is not None:
                self.references.close()
        self.counts["log_pages"] = self.reader.pages
        self.counts["log_pages_refused"] = self.reader.refused
        report = AuditReport(
            chain_id=self.chain_id,
            ledger=self.ledger,
            from_block=self.from_block,
            to_block=head,
            counts=dict(self.counts),
            tokens=list(self.tokens.values()),
            roles={role: sorted(holders) for role, holders in sorted(self.roles.items())},
            findings=self.findings,
            payouts=dict(self.payouts),
            me_names={me_id: me.name for me_id, me in self.mes.items()},
            alliance_tokens={a.name: a.token for a in self.agreements.values()},
            resumed_from=self.resumed_from,
            checkpoint_note=self.dropped,
        )
        report.seconds = time.perf_counter() - started
        return report

    # -- the checkpoint ----------------------------------------------------------------------------

    STATE_FIELDS = ("findings", "consent_findings", "mes", "agreements", "periods", "tokens", "credited", "withdrawn",
                    "accounts", "payouts", "roles", "counts", "period_recouped")  # fmt: skip

    def _key(self) -> str:
        return f"{self.chain_id}:{self.ledger.lower()}:{self.from_block}"

    def _state(self) -> dict:
        state = {name: getattr(self, name) for name in self.STATE_FIELDS}
        state["tokens"] = {t: TokenTotals(t, settled=v.settled, credited=v.credited, withdrawn=v.withdrawn,
                                          reversed=v.reversed, debited=v.debited, returned=v.returned,
                                          incurred=v.incurred, netted=v.netted)
                           for t, v in self.tokens.items()}  # fmt: skip
        state["accounts"] = {key: list(value) for key, value in self.accounts.items()}
        return state

    def _resume(self, head: int) -> int:
        """The first block to replay: after the checkpoint's block if it is still canonical (its state
        restored), else the first block (the checkpoint dropped)."""
        from ledger.services.audit.checkpoint import as_defaultdict

        stored = None if self.full else self.checkpoint.load()
        if self.full:
            self.dropped = "--full"
        elif stored is None:
            self.dropped = "no checkpoint yet"
        elif stored["key"] != self._key():
            self.dropped, stored = "the checkpoint is of another ledger", None
        elif stored["block"] > head or _block_hash(self.rpc, stored["block"]) != stored["hash"]:
            self.dropped, stored = f"block {stored['block']} of the checkpoint is no longer canonical", None
        if stored is None:
            self.checkpoint.drop()
            return self.from_block
        state = stored["state"]
        for name in ("findings", "consent_findings", "mes", "agreements", "periods", "tokens"):
            setattr(self, name, state[name])
        self.period_recouped = dict(state.get("period_recouped", {}))
        self.credited = as_defaultdict(int, state["credited"])
        self.withdrawn = as_defaultdict(int, state["withdrawn"])
        self.accounts = defaultdict(lambda: [0, 0])
        self.accounts.update({key: list(value) for key, value in state["accounts"].items()})
        self.payouts = as_defaultdict(int, state["payouts"])
        self.roles = as_defaultdict(set, state["roles"])
        self.counts = as_defaultdict(int, state["counts"])
        self.periods = {key: list(value) for key, value in self.periods.items()}
        self.resumed_from = stored["block"]
        return stored["block"] + 1

    def _find(self, kind: str, message: str, log: Log | None = None, **values) -> None:
        self.findings.append(
            Finding(kind, message, log.block if log else None, log.tx if log else None, _jsonable(values))
        )

    def _token(self, address: str) -> TokenTotals:
        if address not in self.tokens:
            self.tokens[address] = TokenTotals(token=address)
        return self.tokens[address]

    # -- MEs and roles ------------------------------------------------------------------------------

    def _registered(self, log: Log) -> None:
        a = log.args
        me_id = a["meId"]
        if me_id in self.mes:  # pragma: no cover - the contract numbers MEs itself
            self._find("terms", f"ME {me_id} registered twice", log)
        self.mes[me_id] = _ME(name=a["name"], signer=a["signer"], payout=a["payout"])
        self.counts["mes"] += 1

    def _updated(self, log: Log) -> None:
        a = log.args
        me = self._me(a["meId"], log)
        if me is None:
            return
        self.consents.append((log, a["meId"], a["payout"], a["signer"], a["nonce"] - 1, me.signer))
        me.signer, me.payout, me.nonce = a["signer"], a["payout"], a["nonce"]
        self.counts["me_updates"] += 1

    def _dissolved(self, log: Log) -> None:
        me = self._me(log.args["meId"], log)
        if me is not None:
            me.active = False
            self.counts["mes_dissolved"] += 1

    def _me(self, me_id: int, log: Log) -> _ME | None:
        me = self.mes.get(me_id)
        if me is None:
            self._find("terms", f"ME {me_id} appears before it was registered", log, me_id=me_id)
        return me

    def _role_granted(self, log: Log) -> None:
        self.roles[ROLE_NAMES.get(log.args["role"], "0x" + log.args["role"].hex())].add(log.args["account"])

    def _role_revoked(self, log: Log) -> None:
        self.roles[ROLE_NAMES.get(log.args["role"], "0x" + log.args["role"].hex())].discard(log.args["account"])

    # -- agreements ---------------------------------------------------------------------------------

    def _proposed(self, log: Log) -> None:
        a = log.args
        aid, version = a["agreementId"], a["version"]
        terms = _Terms.logged(a["terms"])
        token = terms.token
        name = bytes32_to_text(aid)
        agreement = self.agreements.get(aid)
        if agreement is None:
            agreement = self.agreements[aid] = _Agreement(name=name, token=token)
            self.counts["agreements"] += 1
        proposer_problem = self._proposer_problem(agreement, terms, a["proposer"])
        self.counts["versions"] += 1
        self._token(token)
        problem = validate_terms(terms)
        if problem is None and token != agreement.token:
            problem = f"token {token} differs from the agreement's {agreement.token}"
        if problem is None:
            for me_id in terms.parties:
                me = self.mes.get(me_id)
                if me is None or not me.active:
                    problem = f"party ME {me_id} is {'unknown' if me is None else 'dissolved'}"
                    break
        if problem is None and agreement.status == "terminated":
            problem = "proposed after the agreement ended"
        if problem is None and version != agreement.latest + 1:
            problem = f"version {version} follows version {agreement.latest}"
        problem = problem or proposer_problem
        recomputed = terms_hash(terms)
        if recomputed != a["termsHash"]:
            problem = (
                f"logged terms hash {a['termsHash'].hex()} is not the hash of the logged terms ({recomputed.hex()})"
            )
        if problem:
            terms.problem = problem
            self._find("terms", f"alliance {name!r} version {version}: {problem}", log, alliance=name, version=version)
        agreement.versions[version] = terms
        agreement.latest = max(agreement.latest, version)

    def _proposer_problem(self, agreement: _Agreement, terms: _Terms, proposer: str) -> str | None:
        """Who may propose a version of an existing agreement (the contract's rule): the platform, or the
        signer of a party of its current version (the one in force, or the latest proposal while none
        ever was). Version 1 is not checked: ``createAgreement`` (anyone, with every party's signature)
        logs the same ``AgreementProposed`` as ``proposeAgreement``."""
        if not agreement.latest or agreement.status == "terminated":
            return None
        if proposer.lower() in {a.lower() for a in self.roles.get("platform", ())}:
            return None
        current = agreement.active if agreement.status == "active" else agreement.latest
        speakers = agreement.versions[current].parties if current in agreement.versions else ()
        if any(me_id in self.mes and self.mes[me_id].signer.lower() == proposer.lower() for me_id in speakers):
            return None
        return (
            f"proposed by {proposer}, neither the platform nor the signer of a party of version {current}, "
            f"the current one"
        )

    def _proposed_version(self, log: Log, what: str) -> tuple[bytes, int, str, _Agreement | None]:
        """The agreement a log names, or None (reported) when the version it names was never proposed."""
        aid, version = log.args["agreementId"], log.args["version"]
        agreement = self.agreements.get(aid)
        name = bytes32_to_text(aid)
        if agreement is None or version not in agreement.versions:
            self._find("terms", f"alliance {name!r} version {version} {what} but never proposed", log)
            return aid, version, name, None
        return aid, version, name, agreement

    def _activated(self, log: Log) -> None:
        aid, version, name, agreement = self._proposed_version(log, "activated")
        if agreement is None:
            return
        if agreement.status == "terminated":
            self._find("terms", f"alliance {name!r} version {version} activated after the agreement ended", log)
        elif version <= agreement.active:  # only a version newer than the one in force can be activated
            self._find(
                "terms",
                f"alliance {name!r} activated version {version}; version {agreement.active} was already in force",
                log,
            )
        terms = agreement.versions[version]
        message = eip712.approval_message(self.chain_id, self.ledger, aid, version, terms)
        signatures = log.args["signatures"]
        self._check_signatures(log, name, version, "approval", message, terms, signatures, require_active=True)
        agreement.status, agreement.active = "active", version
        self.counts["activations"] += 1

    def _ended(self, log: Log) -> None:
        aid, version, name, agreement = self._proposed_version(log, "ended")
        if agreement is None:
            return
        in_force = agreement.active if agreement.status == "active" else agreement.latest
        if version != in_force:
            self._find("terms", f"alliance {name!r} ended at version {version}; version {in_force} was in force", log)
        message = eip712.termination_message(self.chain_id, self.ledger, aid, version)
        terms = agreement.versions[version]
        signatures = log.args["signatures"]
        self._check_signatures(log, name, version, "termination", message, terms, signatures, require_active=False)
        agreement.status = "terminated"
        self.counts["terminations"] += 1

    def _check_signatures(self, log, name, version, what, message, terms, signatures, *, require_active) -> None:
        if len(signatures) != len(terms.parties):
            self._find(
                "signature",
                f"alliance {name!r} version {version}: {len(signatures)} {what} signatures for "
                f"{len(terms.parties)} parties",
                log,
            )
        for me_id, signature in zip(terms.parties, signatures, strict=False):
            self.counts["signatures"] += 1
            me = self.mes.get(me_id)
            recovered = eip712.recover(message, bytes(signature))
            if me is None:
                self._find("signature", f"alliance {name!r} version {version}: party ME {me_id} is unknown", log)
                continue
            if recovered != me.signer and self._contract_signature(
                log, me.signer, message, bytes(signature), f"alliance {name!r} version {version}: the {what} of "
                f"ME {me.name!r}", alliance=name, version=version, me_id=me_id,
            ):  # fmt: skip
                pass
            elif recovered != me.signer:
                self._find(
                    "signature",
                    f"alliance {name!r} version {version}: the {what} of ME {me.name!r} was signed by "
                    f"{recovered or 'an unreadable signature'}, not by its registered signer {me.signer}",
                    log,
                    alliance=name, version=version, me_id=me_id, recovered=recovered, signer=me.signer,
                )  # fmt: skip
            if require_active and not me.active:
                self._find(
                    "signature", f"alliance {name!r} version {version} approved by dissolved ME {me.name!r}", log
                )

    def _check_consents(self) -> None:
        """Each ME update carried its previous signer's EIP-712 consent (read from the transaction)."""
        if not self.consents:
            return
        txs = self.rpc.batch([("eth_getTransactionByHash", [log.tx]) for log, *_ in self.consents])
        for (log, me_id, payout, signer, nonce, previous), tx in zip(self.consents, txs, strict=True):
            data = _through_safe(bytes.fromhex((tx or {}).get("input", "0x")[2:]), self.ledger)
            if data[:4] != UPDATE_ME_SELECTOR:
                self.counts["consents_unverifiable"] += 1  # sent through another contract (a multisig)
                continue
            args = abi_decode(["uint32", "address", "address", "bytes"], data[4:])
            message = eip712.me_update_message(self.chain_id, self.ledger, me_id, payout, signer, nonce)
            recovered = eip712.recover(message, args[3])
            self.counts["consents"] += 1
            if recovered != previous and self._contract_signature(
                log, previous, message, bytes(args[3]), f"ME {self.mes[me_id].name!r}'s consent to signer {signer}",
                me_id=me_id,
            ):  # fmt: skip
                pass
            elif recovered != previous:
                name = self.mes[me_id].name
                self._find(
                    "signature",
                    f"ME {name!r} changed signer to {signer} with consent signed by {recovered}, not by its "
                    f"signer {previous}",
                    log,
                    me_id=me_id, recovered=recovered, signer=previous,
                )  # fmt: skip

    def _contract_signature(self, log, signer: str, message, signature: bytes, what: str, **values) -> bool:
        """For a signer with code: check its signature (a Safe's, offline) and report; True when handled
        here (verified, unverifiable or a finding), False for a key signer (the caller reports it)."""
        if not self.safes.is_contract(signer):
            return False
        verdict = self.safes.check(signer, eip712.digest(message), signature, log.block, log.index)
        if verdict.outcome == "verified":
            self.counts["contract_signatures"] += 1
        elif verdict.outcome == "unverifiable":
            self.counts["contract_signatures_unverifiable"] += 1
        else:
            self._find(
                "signature", f"{what} is not a valid signature of the Safe {signer} at that block: {verdict.reason}",
                log, signer=signer, **values,
            )  # fmt: skip
        return True

    # -- settlement ---------------------------------------------------------------------------------

    def _settled(self, log: Log, *, reversal: bool = False) -> None:
        """A batch of revenue events (or, with ``reversal``, of reversals: the same cursor and checks)."""
        a = log.args
        aid, version, first_seq = a["agreementId"], a["version"], a["firstSeq"]
        refs, entries = a["refs"], a["entries"]
        count = len(entries)
        self.counts["reversal_batches" if reversal else "batches"] += 1
        self.counts["reversals" if reversal else "events"] += count
        name = bytes32_to_text(aid)
        agreement = self.agreements.get(aid)
        if agreement is None:
            self._find("settlement", f"revenue settled for unknown alliance {name!r}", log, alliance=name)
            return
        token = self._token(agreement.token)
        last = first_seq + count - 1
        if agreement.status != "active" or version != agreement.active:
            state = agreement.status if agreement.status != "active" else f"version {agreement.active} in force"
            self._find(
                "settlement",
                f"alliance {name!r}: events {first_seq}..{last} settled under version {version} ({state})",
                log, alliance=name, version=version,
            )  # fmt: skip
        terms = agreement.versions.get(version)
        if terms is not None:
            dissolved = [self.mes[p].name for p in terms.parties if p in self.mes and not self.mes[p].active]
            if dissolved:
                self._find(
                    "settlement", f"alliance {name!r}: events {first_seq}..{last} credited dissolved {dissolved}", log
                )
        if first_seq != agreement.next_seq:
            what = "reuse" if first_seq < agreement.next_seq else "skip"
            self._find(
                "duplicate",
                f"alliance {name!r}: batch starts at sequence {first_seq}, the next free one was "
                f"{agreement.next_seq} ({what} of sequence numbers)",
                log, alliance=name, first_seq=first_seq, expected=agreement.next_seq,
            )  # fmt: skip
        agreement.next_seq = max(agreement.next_seq, first_seq + count)
        if len(refs) != count:
            self._find("settlement", f"alliance {name!r}: {len(refs)} references for {count} events", log)
        keys = [ref if ref.isascii() else _nfc_key(ref) for ref in refs]  # NFC and NFD are one reference
        # A revenue event's amount goes with its reference: the reversal links (kept on disk, checkpointed).
        amounts = None if reversal else [entries[k] >> 32 if k < count else None for k in range(len(refs))]
        for k, seen in self.references.add(keys, aid, first_seq, log.tx, log.block, amounts):
            ref = refs[k]
            self._find(
                "duplicate",
                f"reference {bytes32_to_text(ref)!r} credited twice: alliance {bytes32_to_text(seen[0])!r} sequence "
                f"{seen[1]} (block {seen[3]}) and alliance {name!r} sequence {first_seq + k}",
                log, reference=bytes32_to_text(ref), first_tx=seen[2], first_block=seen[3],
            )  # fmt: skip
        periods = self.periods
        total = 0
        for k, entry in enumerate(entries):
            amount, period = entry >> 32, entry & 0xFFFFFFFF
            total += amount
            if amount == 0 or amount > MAX_EVENT_AMOUNT or period == 0:
                self._find("settlement", f"alliance {name!r} sequence {first_seq + k}: invalid entry {entry}", log)
        for period in {entry & 0xFFFFFFFF for entry in entries}:
            state = periods.get((aid, period))
            if state is not None and state[1] is not None:
                self._find(
                    "closed-period",
                    f"alliance {name!r}: revenue settled into period {period}, closed at block {state[1]}",
                    log, alliance=name, period=period,
                )  # fmt: skip
        if reversal:
            self._links(log, agreement, name)
            token.reversed += total
        else:
            token.settled += total
        self.tx_batches[(aid, first_seq)] = (list(refs), list(entries))
        if terms is not None and not terms.problem:  # else there are no terms to recompute with (reported)

            def revenue_of(period: int) -> int:
                state = periods.get((aid, period))
                return state[0] if state else 0

            runs, after, recouped_after, agreement.recouped = recompute_batch(
                aid, version, terms, first_seq, entries, revenue_of,
                lambda period: self.period_recouped.get((aid, period), 0), agreement.recouped, reversal=reversal,
            )  # fmt: skip
            self.pending.extend(runs)
            for period, recouped in recouped_after.items():
                self.period_recouped[(aid, period)] = recouped
            if reversal:
                for period, revenue in after.items():
                    periods.setdefault((aid, period), [0, None])[0] = revenue
        if not reversal:
            for entry in entries:
                periods.setdefault((aid, entry & 0xFFFFFFFF), [0, None])[0] += entry >> 32
        elif terms is None or terms.problem:
            for entry in entries:
                state = periods.setdefault((aid, entry & 0xFFFFFFFF), [0, None])
                state[0] -= min(state[0], entry >> 32)

    def _reversed(self, log: Log) -> None:
        self._settled(log, reversal=True)

    def _links(self, log: Log, agreement: _Agreement, name: str) -> None:
        """What the contract does not store: each reversal reverses a revenue event settled before, of the
        same alliance, and the reversals of one event never add up to more than its amount."""
        a = log.args
        aid, first_seq = a["agreementId"], a["firstSeq"]
        for k, (ref, entry, original) in enumerate(zip(a["refs"], a["entries"], a["originals"], strict=False)):
            amount = entry >> 32
            what = f"alliance {name!r} reversal {bytes32_to_text(ref)!r} (sequence {first_seq + k})"
            values = {"reference": bytes32_to_text(ref), "original": bytes32_to_text(original)}
            key = original if original.isascii() else _nfc_key(original)  # as the references are keyed
            link = self.references.link(key)
            if link is None or link[1] is None:
                kind = "never settled" if link is None else "itself a reversal"
                self._find("reversal", f"{what} reverses {bytes32_to_text(original)!r}, {kind}", log, **values)
                continue
            link_aid, original_amount, _ = link
            if link_aid != aid:
                self._find("reversal", f"{what} reverses {bytes32_to_text(original)!r} of alliance "
                           f"{bytes32_to_text(link_aid)!r}", log, **values)  # fmt: skip
            total = self.references.add_reversed(key, amount)
            if total > original_amount:
                self._find("reversal", f"{what}: the reversals of {bytes32_to_text(original)!r} total {total}, "
                           f"more than its {original_amount}", log, reversed=total, amount=original_amount,
                           **values)  # fmt: skip

    def _run_of(self, log: Log, debit: bool):
        """The logged run, its terms and the recomputed run it must equal (None: reported here)."""
        run = credit_run(log.event, log.args)
        what = "debit" if debit else "credit"
        self.counts["debit_runs" if debit else "credit_runs"] += 1
        name = bytes32_to_text(run.agreement_id)
        agreement = self.agreements.get(run.agreement_id)
        terms = agreement.versions.get(run.version) if agreement else None
        if terms is None:
            self._find(what, f"{what}s for alliance {name!r} version {run.version}, which has no terms", log)
            return None
        n = len(terms.parties)
        if run.pair is not None:
            logged = [list(run.pair[0]), list(run.pair[1])]
        else:
            flat = list(run.flat)
            logged = [flat[t * n : (t + 1) * n] for t in range(len(flat) // n)] if n and len(flat) % n == 0 else None
        layout = len(terms.tier_names)
        if logged is None or len(logged) != layout or any(len(v) != n for v in logged) or (
            run.pair is not None
        ) == terms.by_tier:  # fmt: skip
            size = len(run.pair[0]) if run.pair is not None else len(run.flat)
            self._find(what, f"alliance {name!r}: {what}s for {size} parties or tiers, the terms have {n} parties "
                       f"and {layout} tiers ({log.event})", log)  # fmt: skip
            return None
        expected = None
        for i, pending in enumerate(self.pending):
            if (
                pending.agreement_id == run.agreement_id
                and pending.first_seq == run.first_seq
                and pending.debit == debit
            ):
                expected = self.pending.pop(i)
                break
        if expected is None and terms.problem:
            pass  # the version's terms are reported as unusable: its credits cannot be recomputed
        elif expected is None:
            self._find(what, f"alliance {name!r}: {what}s for sequence {run.first_seq}.. that match no "
                       f"{'reversal' if debit else 'settled revenue'}", log, alliance=name,
                       first_seq=run.first_seq)  # fmt: skip
        elif (expected.period, expected.version, expected.count, expected.logged_tiers()) != (
            run.period, run.version, run.count, logged,
        ):  # fmt: skip
            recomputed = expected.logged_tiers()
            differing = [
                f"{self._me_name(p)} {tier} {logged[t][i]} (recomputed {recomputed[t][i]})"
                for t, tier in enumerate(terms.tier_names)
                for i, p in enumerate(terms.parties)
                if t < len(recomputed) and logged[t][i] != recomputed[t][i]
            ]
            verb = "debited" if debit else "credited"
            self._find(
                what,
                f"alliance {name!r} period {run.period}, {'reversals' if debit else 'events'} {run.first_seq}.."
                f"{run.first_seq + run.count - 1}: {verb} {', '.join(differing) or 'a different run'}",
                log, alliance=name, period=run.period, first_seq=run.first_seq, count=run.count,
                **{f"{verb}_base": logged[0 if not terms.recoup else 1], f"{verb}_excess": logged[-1],
                   "recomputed_base": recomputed[0 if not terms.recoup else 1], "recomputed_excess": recomputed[-1],
                   f"{verb}_tiers": logged, "recomputed_tiers": recomputed},
            )  # fmt: skip
        return run, terms, logged, name

    def _credited(self, log: Log) -> None:
        self._booked(log, debit=False)

    def _debited(self, log: Log) -> None:
        self._booked(log, debit=True)

    def _booked(self, log: Log, debit: bool) -> None:
        """A run of credits or debits: checked against its recomputation (:meth:`_run_of`), then booked."""
        found = self._run_of(log, debit=debit)
        if found is None:
            return
        run, terms, logged, name = found
        book = self._book_debits if debit else self._book_credits
        book(log, run, terms, logged, name, self._token(terms.token))

    def _book_credits(self, log: Log, run, terms, logged, name: str, totals) -> None:
        token = terms.token
        credited, payouts = self.credited, self.payouts
        nested = terms.nested_parties
        names = terms.tier_names
        for i, me_id in enumerate(terms.parties):
            total = sum(tier[i] for tier in logged)
            if me_id in nested:  # an alliance: its credit becomes one event of the inner alliance
                if total:
                    self.nested_owed[(run.agreement_id, run.first_seq, me_id)] = (total, run.period, nested[me_id],
                                                                                  token)  # fmt: skip
                continue
            for t, tier in enumerate(names):
                if logged[t][i]:
                    payouts[(name, run.period, me_id, tier)] += logged[t][i]
            totals.credited += total
            if total:
                credited[(me_id, token)] += total
                account = self.accounts[(me_id, token)]
                netted = min(account[1], total)
                account[0] += total - netted
                account[1] -= netted
                totals.netted += netted
                self._check_debt_log("netted", me_id, token, netted, log)

    def _nested(self, log: Log) -> None:
        self.counts["nested_events"] += 1
        self.nested_logged.append((log, nested_credit(log.args)))

    def _check_nested(self) -> None:
        """At the end of a transaction: every nested party's credit was passed on as one event of its inner
        alliance (the derived reference, the same amount and period, the inner's next sequence number), and
        nothing else was; the inner event was not paid in by finance (it is not counted as settled)."""
        owed = dict(self.nested_owed)
        for log, item in self.nested_logged:
            name = bytes32_to_text(item.agreement_id)
            key = (item.agreement_id, item.first_seq, item.me_id)
            what = (f"alliance {name!r} run {item.first_seq}, party {self._me_name(item.me_id)!r} -> alliance "
                    f"{bytes32_to_text(item.inner)!r} event {item.inner_seq}")  # fmt: skip
            expected = owed.pop(key, None)
            batch = self.tx_batches.get((item.inner, item.inner_seq))
            if expected is None:
                self._find("nested", f"{what}: {item.amount} passed on, but the run credited that party nothing", log)
            elif (expected[0], expected[2]) != (item.amount, item.inner):
                self._find("nested", f"{what}: {item.amount} passed on, the run credited {expected[0]} for "
                           f"alliance {bytes32_to_text(expected[2])!r}", log, logged=item.amount,
                           credited=expected[0])  # fmt: skip
            if batch is None or len(batch[1]) != 1:
                self._find("nested", f"{what}: no single revenue event of the inner alliance at that sequence", log)
            else:
                (ref,), (entry,) = batch
                period = expected[1] if expected else entry & 0xFFFFFFFF
                if ref != nested_reference(item.agreement_id, item.first_seq, item.me_id) or entry != (
                    item.amount << 32 | period
                ):  # fmt: skip
                    self._find("nested", f"{what}: the inner event has reference 0x{bytes(ref).hex()} and entry "
                               f"{entry}, not the derived reference and {item.amount} in period {period}",
                               log)  # fmt: skip
                agreement = self.agreements.get(item.inner)
                if agreement is not None:
                    self._token(agreement.token).settled -= item.amount  # paid in once, by the outer batch
        for (aid, first_seq, me_id), (amount, _, inner, _) in owed.items():
            self.findings.append(Finding(
                "nested", f"alliance {bytes32_to_text(aid)!r} run {first_seq} credited party "
                f"{self._me_name(me_id)!r} {amount}, which is an alliance ({bytes32_to_text(inner)!r}), and the "
                f"credit was not passed on", self.pending_block, self.pending_tx, {"amount": amount},
            ))  # fmt: skip
        self.nested_owed.clear()
        self.nested_logged.clear()
        self.tx_batches.clear()

    def _book_debits(self, log: Log, run, terms, logged, name: str, totals) -> None:
        token = terms.token
        for i, me_id in enumerate(terms.parties):
            debit = sum(tier[i] for tier in logged)
            totals.debited += debit
            if not debit:
                continue
            self.payouts[(name, run.period, me_id, "reversal")] -= debit
            account = self.accounts[(me_id, token)]
            covered = min(account[0], debit)
            account[0] -= covered
            account[1] += debit - covered
            totals.returned += covered
            totals.incurred += debit - covered
            self._check_debt_log("incurred", me_id, token, debit - covered, log)

    def _debt_logged(self, log: Log) -> None:
        kind = "incurred" if log.event == "DebtIncurred" else "netted"
        self.logged_debt[(kind, log.args["meId"], log.args["token"])] += log.args["amount"]

    def _check_debt_log(self, kind: str, me_id: int, token: str, expected: int, log: Log) -> None:
        """What the rule says this run incurs or nets for this ME; compared with the ``DebtIncurred`` /
        ``DebtNetted`` logs of the transaction when it ends (the contract may log them before or after
        the run's credit or debit event)."""
        if expected:
            self.expected_debt[(kind, me_id, token)] += expected

    def _flush_pending(self) -> None:
        self._check_nested()
        for key in list(dict.fromkeys([*self.expected_debt, *self.logged_debt])):
            kind, me_id, token = key
            logged, expected = self.logged_debt.get(key, 0), self.expected_debt.get(key, 0)
            if logged == expected:
                continue
            if expected:
                message = f"ME {self._me_name(me_id)!r}: debt {kind} {logged} base units, the rule gives {expected}"
            else:
                message = f"ME {self._me_name(me_id)!r}: debt {kind} {logged} base units that no run explains"
            self.findings.append(Finding("debt", message, self.pending_block, self.pending_tx,
                                         {"me_id": me_id, "token": token, "logged": logged,
                                          "expected": expected}))  # fmt: skip
        self.logged_debt.clear()
        self.expected_debt.clear()
        for run in self.pending:
            name = bytes32_to_text(run.agreement_id)
            last = run.first_seq + run.count - 1
            self.findings.append(
                Finding(
                    "credit",
                    f"alliance {name!r}: events {run.first_seq}..{last} of period {run.period} were settled but "
                    f"never {'debited' if run.debit else 'credited'}",
                    self.pending_block,
                    self.pending_tx,
                    {"alliance": name, "period": run.period},
                )
            )
        self.pending = []

    def _closed(self, log: Log) -> None:
        a = log.args
        aid, period, revenue = a["agreementId"], a["period"], a["revenue"]
        name = bytes32_to_text(aid)
        state = self.periods.setdefault((aid, period), [0, None])
        if state[1] is not None:
            first = state[1]
            self._find("closed-period", f"alliance {name!r} period {period} closed again (first at block {first})", log)
        if revenue != state[0]:
            self._find(
                "closed-period",
                f"alliance {name!r} period {period} closed with revenue {revenue}; its events sum to {state[0]}",
                log, alliance=name, period=period, logged=revenue, replayed=state[0],
            )  # fmt: skip
        state[1] = log.block
        self.counts["periods_closed"] += 1

    def _withdrawn(self, log: Log) -> None:
        a = log.args
        me_id, token, amount = a["meId"], a["token"], a["amount"]
        self.counts["withdrawals"] += 1
        self._token(token).withdrawn += amount
        me = self._me(me_id, log)
        self.withdrawn[(me_id, token)] += amount
        if me is None:
            return
        account = self.accounts[(me_id, token)]
        account[0] -= amount
        if account[0] < 0:
            self._find(
                "withdrawal",
                f"ME {me.name!r} withdrew {amount} base units of {token}, {-account[0]} more than its balance",
                log, me_id=me_id, amount=amount,
            )  # fmt: skip
        if a["to"] != me.payout:
            self._find("withdrawal", f"ME {me.name!r} was paid to {a['to']}, its payout address is {me.payout}", log)

    def _payout_skipped(self, log: Log) -> None:
        """A payout run could not pay the ME: nothing moved, so the ME must keep exactly its balance, and
        the address that refused must be its payout address in force."""
        a = log.args
        me_id, token, amount = a["meId"], a["token"], a["amount"]
        self.counts["payouts_skipped"] += 1
        me = self._me(me_id, log)
        if me is None:
            return
        balance = self.accounts[(me_id, token)][0]  # credits net of debts and debits, less withdrawals
        if amount != balance or amount == 0:
            self._find(
                "withdrawal",
                f"a payout run skipped ME {me.name!r} with {amount} base units of {token}; its balance is {balance}",
                log, me_id=me_id, logged=amount, replayed=balance,
            )  # fmt: skip
        if a["payout"] != me.payout:
            self._find(
                "withdrawal", f"a payout run tried to pay ME {me.name!r} at {a['payout']}, its payout address is "
                f"{me.payout}", log,
            )  # fmt: skip

    def _me_name(self, me_id: int) -> str:
        me = self.mes.get(me_id)
        return me.name if me else f"ME {me_id}"


def _block_hash(rpc, number: int) -> str | None:
    block = rpc.request("eth_getBlockByNumber", [hex(number), False])
    return block.get("hash") if block else None


def audit(
    rpc, ledger: str, *, from_block: int = 0, page_size: int = DEFAULT_PAGE_SIZE, confirmations: int = 0
) -> AuditReport:
    """Audit the ledger at ``ledger`` through ``rpc`` (an :class:`ledger.chain.rpc.HttpRpc`), up to the
    block ``confirmations`` below the head."""
    return Auditor(rpc, ledger, from_block=from_block, page_size=page_size, confirmations=confirmations).run()


def _nfc_key(ref: bytes) -> bytes:
    """A non-ASCII reference keyed by its NFC form (bytes that are not UTF-8 as they are)."""
    try:
        text = bytes(ref).rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        return ref
    return unicodedata.normalize("NFC", text).encode("utf-8").ljust(32, b"\0")
