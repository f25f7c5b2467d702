"""The transparency view's data, read from the chain only: every alliance with its parties, shares,
tiers, version and status; each period's revenue against its target; what each ME was credited per
period; the latest settlement runs; and the audit's verdict.

Reading is bounded whatever the ledger's size: one forward pass over the few "registry" events
(``MERegistered``, ``MEDissolved``, ``AgreementProposed``, ``PeriodClosed``) in pages of blocks; the
credits through :func:`ledger.services.reports.payouts`; the views (agreements, periods, balances,
tokens) in JSON-RPC batches at the block the logs were read to; and the settlement runs by scanning
back from that block in growing windows only until the wanted number of transactions is found.
Nothing here signs or sends anything.

Amounts are ``int`` base units throughout. This module is the data and its reading; the presentation
is :mod:`ledger.web`: the dashboard (:mod:`ledger.web.app`) and its JSON (:func:`ledger.web.api.overview_json`,
amounts formatted exactly with the token's decimals by :func:`ledger.money.format_amount`, no floats).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from ledger.chain.reader import DEFAULT_PAGE_SIZE
from ledger.errors import LedgerError
from ledger.models import AgreementStatus, bytes32_to_text
from ledger.money import BPS, format_amount
from ledger.terms import CREDIT_EVENTS

RECENT_RUNS = 20
FIRST_WINDOW = 256  # blocks of the first backward window for recent runs; doubled up to the page size
STATUS_NAMES = {
    AgreementStatus.PROPOSED: "waiting for signatures",
    AgreementStatus.ACTIVE: "in force",
    AgreementStatus.TERMINATED: "terminated",
}


@dataclass(frozen=True)
class Token:
    address: str
    symbol: str
    decimals: int

    def units(self, amount: int) -> str:
        return format_amount(amount, self.decimals)


@dataclass
class Party:
    me_id: int
    me: str
    share_bps: int
    excess_bps: int | None  # None when the terms have no target
    band_bps: list[int] = field(default_factory=list)  # per band (the first is excess_bps)
    recoup_bps: int | None = None  # its share of the revenue paying the recoup back (None: no recoup)
    alliance: str | None = None  # the party is an alliance: its credit goes on to this alliance


@dataclass
class Period:
    period: int
    revenue: int
    closed: bool
    target: int  # the target of the terms in force (0: none)
    recouped: int = 0  # the part of the revenue that paid the recoup back (bands measure the rest)
    targets: tuple[int, ...] = ()  # every band's target (the first is ``target``)

    @property
    def banded(self) -> int:
        """The revenue the bands measure: all of it, less what went to the recoup."""
        return self.revenue - self.recouped

    @property
    def progress_bps(self) -> int | None:
        """Banded revenue as basis points of the (first) target (10000 = reached), None without a target."""
        return self.banded * BPS // self.target if self.target else None

    @property
    def band_progress(self) -> list[tuple[int, int]]:
        """(target, progress in basis points) of every band."""
        return [(t, self.banded * BPS // t) for t in self.targets]


@dataclass
class Alliance:
    name: str
    status: str
    active_version: int
    latest_version: int
    shown_version: int  # the version whose terms are shown: in force, else the latest
    token: str
    target: int
    parties: list[Party]
    events: int  # revenue events settled (the sequence cursor)
    periods: list[Period] = field(default_factory=list)  # ascending
    bands: list[int] = field(default_factory=list)  # every band's target (two or more: shown band by band)
    recoup: int = 0  # the investment paid back first (0: none)
    recouped: int = 0  # paid back so far, all periods and versions

    @property
    def recoup_progress_bps(self) -> int | None:
        return min(self.recouped, self.recoup) * BPS // self.recoup if self.recoup else None

    @property
    def current(self) -> Period | None:
        """The latest period with revenue (or closed)."""
        return self.periods[-1] if self.periods else None


@dataclass
class MEPayouts:
    me_id: int
    me: str
    status: str
    token: str
    by_period: dict[int, int]  # credited (both tiers, every alliance), less what reversals debited
    total: int
    balance: int  # owed now (credited - debited - withdrawn, after debts netted)
    debt: int = 0  # what it owes finance from reversals, netted from its next credits


@dataclass
class SettlementTx:
    """One settlement transaction: its ``RevenueSettled`` (and ``PartiesCredited``) logs."""

    tx: str
    block: int
    index: int  # first log index, to order runs of one block
    alliances: list[str]
    events: int
    amounts: dict[str, int]  # token -> revenue settled
    timestamp: int | None = None


@dataclass
class AuditStatus:
    clean: bool | None  # None when the audit could not run
    findings: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    from_block: int = 0
    to_block: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Overview:
    chain_id: int
    ledger: str
    from_block: int
    to_block: int
    timestamp: int | None
    tokens: dict[str, Token]
    alliances: list[Alliance]
    mes: list[MEPayouts]
    periods: list[int]  # every period with revenue, ascending
    runs: list[SettlementTx]
    audit: AuditStatus | None
    payout_lines: list = field(default_factory=list, repr=False)  # ledger.services.reports.PayoutLine
    seconds: float = 0.0

    def token(self, address: str) -> Token:
        return self.tokens.get(address) or Token(address, address[:10], 0)

    def revenue_by_period(self, token: str) -> dict[int, dict[str, int]]:
        """period -> alliance -> revenue, for the alliances settling in ``token``."""
        out: dict[int, dict[str, int]] = defaultdict(dict)
        for alliance in self.alliances:
            if alliance.token == token:
                for p in alliance.periods:
                    if p.revenue:
                        out[p.period][alliance.name] = p.revenue
        return dict(out)

    def totals(self) -> dict[str, dict[str, int]]:
        """Per token: revenue (periods' cumulative revenue), credited, owed now."""
        out: dict[str, dict[str, int]] = {}
        for alliance in self.alliances:
            t = out.setdefault(alliance.token, {"revenue": 0, "credited": 0, "owed": 0})
            t["revenue"] += sum(p.revenue for p in alliance.periods)
        for me in self.mes:
            t = out.setdefault(me.token, {"revenue": 0, "credited": 0, "owed": 0})
            t["credited"] += me.total
            t["owed"] += me.balance
        return out


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def gather(
    chain,
    *,
    from_block: int,
    to_block: int,
    audit_rpc=None,
    confirmations: int = 0,
    recent: int = RECENT_RUNS,
    page_size: int = DEFAULT_PAGE_SIZE,
    audit_checkpoint=None,
) -> Overview:
    """Everything the transparency view shows, read from logs in ``[from_block, to_block]`` and views at
    ``to_block``. ``audit_rpc`` (an :class:`ledger.chain.rpc.HttpRpc`): also run the audit."""
    from ledger.services.reports import payouts

    started = time.perf_counter()
    views = chain.batch_views()
    names, dissolved, proposals, closed = _registry(chain, from_block, to_block, page_size)

    agreement_ids = list(proposals)
    raw_agreements = views.call([(chain.address, "agreementOf", [aid]) for aid in agreement_ids], block=to_block)
    states = dict(zip(agreement_ids, raw_agreements, strict=True))
    shown = {aid: (s[2] or s[3]) for aid, s in states.items()}  # activeVersion, else latestVersion
    hashes = views.call([(chain.address, "termsHashOf", [aid, v]) for aid, v in shown.items()], block=to_block)
    terms = {}
    for (aid, version), expected in zip(shown.items(), hashes, strict=True):
        match = [t for h, t in proposals[aid].get(version, []) if h == bytes(expected)]
        if match:
            terms[aid] = match[0]

    lines = payouts(chain, from_block=from_block, to_block=to_block)
    period_keys = sorted({(chain.agreement_id(line.alliance), line.period) for line in lines} | set(closed))
    raw_periods = views.call([(chain.address, "periodOf", [aid, p]) for aid, p in period_keys], block=to_block)
    periods: dict[bytes, list[tuple[int, int, bool, int]]] = defaultdict(list)
    for (aid, p), raw in zip(period_keys, raw_periods, strict=True):
        periods[aid].append((p, int(raw[0]), bool(raw[1]), int(raw[2]) if len(raw) > 2 else 0))

    tokens_used = list(dict.fromkeys([s[0] for s in states.values()] + [line.token for line in lines]))
    tokens = {address: _token(views, address, to_block) for address in tokens_used}

    alliances = []
    for aid in agreement_ids:
        token, status, active, latest, next_seq = states[aid][:5]
        recouped = int(states[aid][5]) if len(states[aid]) > 5 else 0
        t = _terms(terms.get(aid))
        target = t.target if t else 0
        targets = tuple(b.target for b in t.bands) if t else ()
        parties = []
        if t:
            nested = t.nested_parties
            for i, me_id in enumerate(t.parties):
                parties.append(Party(
                    me_id, names.get(me_id, str(me_id)), t.shares[i], t.excess_shares[i] if target else None,
                    [b.shares[i] for b in t.bands], t.recoup_shares[i] if t.recoup else None,
                    bytes32_to_text(nested[me_id]) if me_id in nested else None,
                ))  # fmt: skip
        alliances.append(
            Alliance(
                name=bytes32_to_text(aid),
                status=_status(AgreementStatus(int(status)), int(active), int(latest)),
                active_version=int(active), latest_version=int(latest), shown_version=shown[aid], token=token,
                target=target, parties=parties, events=int(next_seq),
                periods=[Period(p, revenue, c, target, rec, targets) for p, revenue, c, rec in
                         sorted(periods.get(aid, []))],
                bands=list(targets), recoup=t.recoup if t else 0, recouped=recouped,
            )
        )  # fmt: skip
    alliances.sort(key=lambda a: a.name)

    credited: dict[tuple[int, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
    me_names: dict[int, str] = {}
    for line in lines:
        credited[(line.me_id, line.token)][line.period] += line.amount
        me_names[line.me_id] = line.me
    keys = sorted(credited)
    balances = views.call([(chain.address, "balanceOf", [me_id, token]) for me_id, token in keys], block=to_block)
    debts = views.call([(chain.address, "debtOf", [me_id, token]) for me_id, token in keys], block=to_block)
    mes = [
        MEPayouts(
            me_id=me_id, me=me_names[me_id], status="dissolved" if me_id in dissolved else "active", token=token,
            by_period=dict(credited[(me_id, token)]), total=sum(credited[(me_id, token)].values()),
            balance=int(balance), debt=int(debt),
        )
        for (me_id, token), balance, debt in zip(keys, balances, debts, strict=True)
    ]  # fmt: skip
    mes.sort(key=lambda m: (-m.total, m.me))

    token_of = {aid: s[0] for aid, s in states.items()}
    runs = recent_runs(chain, token_of, from_block=from_block, to_block=to_block, limit=recent, page_size=page_size)
    stamps = views.block_timestamps([r.block for r in runs] + [to_block])
    for run in runs:
        run.timestamp = stamps.get(run.block)

    audit = None
    if audit_rpc is not None:
        audit = audit_status(audit_rpc, chain.address, from_block=from_block, confirmations=confirmations,
                             page_size=page_size, checkpoint=audit_checkpoint)  # fmt: skip
    overview = Overview(
        chain_id=int(chain.chain_id),
        ledger=chain.address,
        from_block=from_block,
        to_block=to_block,
        timestamp=stamps.get(to_block),
        tokens=tokens,
        alliances=alliances,
        mes=mes,
        periods=sorted({p.period for a in alliances for p in a.periods if p.revenue}),
        runs=runs,
        audit=audit,
        payout_lines=lines,
    )
    overview.seconds = time.perf_counter() - started
    return overview


def _registry(chain, from_block: int, to_block: int, page_size: int):
    """One pass over the registry events: ME names, dissolved MEs, every proposed version's terms (by
    agreement, version: [(terms hash, terms)]), closed periods."""
    names: dict[int, str] = {}
    dissolved: set[int] = set()
    proposals: dict[bytes, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    closed: set[tuple[bytes, int]] = set()
    wanted = ["MERegistered", "MEDissolved", "AgreementProposed", "PeriodClosed"]
    for log in chain.logs(wanted, from_block=from_block, to_block=to_block, page_size=page_size):
        args = log.args
        if log.event == "MERegistered":
            names[args["meId"]] = args["name"]
        elif log.event == "MEDissolved":
            dissolved.add(args["meId"])
        elif log.event == "AgreementProposed":
            proposals[args["agreementId"]][args["version"]].append((bytes(args["termsHash"]), args["terms"]))
        else:
            closed.add((args["agreementId"], args["period"]))
    return names, dissolved, proposals, closed


def _terms(raw):
    """Logged terms (an ABI tuple) as :class:`ledger.terms.Terms`, or None when absent or unreadable."""
    from ledger.terms import Terms

    if raw is None:
        return None
    try:
        return Terms.from_abi(raw)
    except (ValueError, TypeError):
        return None


def _status(status: AgreementStatus, active: int, latest: int) -> str:
    text = STATUS_NAMES.get(status, status.name.lower())
    if status == AgreementStatus.ACTIVE and latest > active:
        text += f"; version {latest} waiting for signatures"
    return text


def _token(views, address: str, block: int) -> Token:
    """A token's symbol and decimals for display (its address and 0 when it lacks them)."""
    try:
        decimals, symbol = views.call([(address, "erc20.decimals", []), (address, "erc20.symbol", [])], block=block)
        return Token(address, str(symbol), int(decimals))
    except Exception:  # noqa: BLE001 - eth-abi raises several kinds for a token that answers garbage
        return Token(address, address[:10], 0)


def recent_runs(
    chain,
    token_of: dict[bytes, str],
    *,
    from_block: int,
    to_block: int,
    limit: int = RECENT_RUNS,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> list[SettlementTx]:
    """The latest ``limit`` settlement transactions, newest first, reading back from ``to_block`` in
    windows of 256 blocks doubling up to ``page_size``: a long history is not read to find its end."""
    runs: dict[str, SettlementTx] = {}
    end, window = to_block, FIRST_WINDOW
    while end >= from_block and len(runs) < limit:
        start = max(from_block, end - window + 1)
        for log in chain.logs(["RevenueSettled", *CREDIT_EVENTS, "NestedSettled"], from_block=start, to_block=end,
                              page_size=page_size):  # fmt: skip
            run = runs.get(log.tx)
            if run is None:
                run = runs[log.tx] = SettlementTx(log.tx, log.block, log.index, [], 0, {})
            if log.event == "NestedSettled":  # an inner alliance's event: passed on, not paid in again
                token = token_of.get(log.args["inner"], "")
                run.events -= 1
                run.amounts[token] = run.amounts.get(token, 0) - log.args["amount"]
                continue
            name = bytes32_to_text(log.args["agreementId"])
            if name not in run.alliances:
                run.alliances.append(name)
            if log.event == "RevenueSettled":
                token = token_of.get(log.args["agreementId"], "")
                run.events += len(log.args["refs"])
                run.amounts[token] = run.amounts.get(token, 0) + sum(e >> 32 for e in log.args["entries"])
        end, window = start - 1, min(window * 2, max(page_size, FIRST_WINDOW))
    ordered = sorted(runs.values(), key=lambda r: (r.block, r.index), reverse=True)
    return ordered[:limit]


def audit_status(rpc, ledger: str, *, from_block: int, confirmations: int = 0, page_size: int = DEFAULT_PAGE_SIZE,
                 checkpoint=None):  # fmt: skip
    """The audit's verdict (:class:`ledger.services.audit.Auditor`), or why it could not run.
    ``checkpoint``: the path of an audit checkpoint to resume from and renew (only new blocks replayed)."""
    from ledger.services.audit import Auditor
    from ledger.services.audit.checkpoint import Checkpoint

    store = None
    try:
        store = Checkpoint(checkpoint) if checkpoint is not None else None
        report = Auditor(rpc, ledger, from_block=from_block, page_size=page_size, confirmations=confirmations,
                         checkpoint=store).run()  # fmt: skip
    except LedgerError as err:
        return AuditStatus(clean=None, from_block=from_block, error=str(err))
    finally:
        if store is not None:
            store.close()
    return AuditStatus(
        clean=report.clean,
        findings=len(report.findings),
        by_kind=report.findings_by_kind(),
        from_block=report.from_block,
        to_block=report.to_block,
        counts=dict(report.counts),
        seconds=report.seconds,
    )


class LiveOverview:
    """The overview at the chain's final block (head - confirmation depth), read again on every call;
    while the final block (number and hash) is the one read last, that read is reused."""

    def __init__(self, chain, rpc, *, from_block: int, confirmations: int = 0, recent: int = RECENT_RUNS,
                 page_size: int = DEFAULT_PAGE_SIZE, audit: bool = True, index=None,
                 audit_checkpoint=None):  # fmt: skip
        self.index = index  # a ledger.index.LedgerIndex attached to ``chain``: brought up to date per read
        self.audit_checkpoint = audit_checkpoint  # path: the audit resumes from this machine's checkpoint
        self.chain = chain
        self.rpc = rpc
        self.from_block = from_block
        self.confirmations = confirmations
        self.recent = recent
        self.page_size = page_size
        self.audit = audit
        self.reads = 0  # full reads done (not reused), for tests
        self._last: tuple[tuple[int, str], Overview] | None = None

    def __call__(self) -> Overview:
        head = int(self.rpc.request("eth_blockNumber"), 16)
        final = max(self.from_block, head - self.confirmations)
        block = self.rpc.request("eth_getBlockByNumber", [hex(final), False]) or {}
        key = (final, block.get("hash", ""))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        if self.index is not None:
            self.index.sync(self.rpc)
        overview = gather(
            self.chain, from_block=self.from_block, to_block=final, audit_rpc=self.rpc if self.audit else None,
            confirmations=head - final, recent=self.recent, page_size=self.page_size,
            audit_checkpoint=self.audit_checkpoint,
        )  # fmt: skip
        self.reads += 1
        self._last = (key, overview)
        return overview
