"""The audit: rebuild the ledger's whole history from the chain's event logs and check it, in code that
never calls the contract's logic.

Inputs are a JSON-RPC endpoint and the ledger's address, nothing else: not the finance team's files,
not the service's local state, not the project's compiled artifacts (the event signatures are written
out in :mod:`~ledger.services.audit.events`, and a test checks them against the compiled contract). The
history is read with raw ``eth_getLogs`` in bounded block pages and replayed in chain order:

1. **Signatures.** Each ME's signer over time comes from ``MERegistered``/``MEUpdated``; every
   ``AgreementActivated``/``AgreementEnded`` signature is recovered here (EIP-712, ``eth_account``)
   and must be the signer each party had at that block. ME-update consents are recovered from the
   transaction's input. Each version's terms hash is recomputed from the terms in its log. A signer
   that is a Safe is checked offline against its owners and threshold at that log, rebuilt from the
   Safe's own events (:mod:`ledger.services.audit.safe_signers`, which states the limits).
2. **Credits.** Every ``RevenueSettled`` event is split again with the documented rounding rule and the
   period's cumulative revenue as replayed here (tiers), then compared with the ``PartiesCredited``
   runs of the same transaction.
3. **Exactly-once.** References are unique across the whole ledger (two Unicode forms of the same text,
   NFC and NFD, are one reference: the settler compares them so); sequence numbers run without gaps
   or overlaps; nothing is settled into a period after it was closed, and no period closes twice.
4. **Conservation.** Per token: revenue settled == credited, reversed == debited; credited - netted -
   returned - withdrawn == ``totalOwed`` == the sum of the MEs' balances == the tokens the ledger holds;
   incurred - netted == ``totalDebt`` == the sum of the MEs' debts. Per ME: its balance and debt replayed
   from its credits, debits and withdrawals with the netting rule equal the contract's, and never both.
   Contract views are read at the block the log scan ended at.
5. **Statements** (:mod:`ledger.services.reconcile`) are reconciled against the credits replayed here.
6. **Reversals.** Every ``RevenueReversed`` event is split again with the reversal rule (the top of the
   period's revenue first) and compared with its ``PartiesDebited`` runs; each ``DebtIncurred`` and
   ``DebtNetted`` with the debt rule; and the link the contract does not store: each reversal's
   original was settled before, for the same alliance, is not a reversal, and its reversals never add
   up to more than its amount.

Every disagreement becomes a :class:`Finding` with the transaction, block and values.

The package, one module per job:

- :mod:`~ledger.services.audit.events`: the event signatures written out, their ABI, the selectors the
  replay reads transaction input with.
- :mod:`~ledger.services.audit.findings`: the report (:class:`Finding`, :class:`TokenTotals`,
  :class:`AuditReport`) and the kinds of finding.
- :mod:`~ledger.services.audit.recompute`: the pure recomputation of splits and tiers, written apart
  from ``ledger.money`` on purpose.
- :mod:`~ledger.services.audit.replay`: the replay state machine (:class:`Auditor`) and :func:`audit`.
- :mod:`~ledger.services.audit.conservation`: the conservation checks against the contract's views.
- :mod:`~ledger.services.audit.checkpoint`: the incremental audit's checkpoint and reference stores.
- :mod:`~ledger.services.audit.safe_signers`: Safe signers rebuilt offline from the Safe's own events.
"""

from ledger.services.audit.events import EVENT_SIGNATURES, ROLE_NAMES, UPDATE_ME_SELECTOR, event_abi
from ledger.services.audit.findings import FINDING_KINDS, AuditReport, Finding, TokenTotals, _jsonable
from ledger.services.audit.recompute import (
    TERMS_TYPEHASH,
    _Terms,
    recompute_batch,
    recompute_reversal_runs,
    recompute_runs,
    terms_hash,
    validate_terms,
)
from ledger.services.audit.replay import _ME, Auditor, _Agreement, audit

__all__ = [
    "EVENT_SIGNATURES",
    "FINDING_KINDS",
    "ROLE_NAMES",
    "TERMS_TYPEHASH",
    "UPDATE_ME_SELECTOR",
    "AuditReport",
    "Auditor",
    "Finding",
    "TokenTotals",
    "_ME",
    "_Agreement",
    "_Terms",
    "_jsonable",
    "audit",
    "event_abi",
    "recompute_batch",
    "recompute_reversal_runs",
    "recompute_runs",
    "terms_hash",
    "validate_terms",
]
