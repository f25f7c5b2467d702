"""Onboarding from files: many MEs (``ledger me import``) or alliance proposals (``ledger alliance
import``) in one process.

The whole file is read and checked first, against itself and the chain: every problem is reported by
row (the line number in the file; a CSV header is row 1) and nothing is sent while there is one. Then
the new rows are sent in batches (``registerMEs``: 50 MEs per transaction; ``proposeAgreements``: as many
proposals as fit 8 million gas) through one pipeline from the platform account (several transactions in
flight, nonces assigned locally), in file order, so an ME may name as parent an ME of an earlier row.

Safe to re-run: a row already on the chain with the same values is skipped; with other values it is a
problem (a re-run never changes what is registered). A run interrupted half-way completes when run
again.

ME files (CSV with a header, or JSON lines), columns ``name,signer,payout,parent``: ``signer`` a
checksummed (or all-lowercase) address, ``payout`` likewise or empty for the signer, ``parent`` empty or
the name of an ME registered before or in an earlier row.

Alliance files: JSON lines, one proposal per line::

    {"name": "smart-kitchen", "token": "0x...", "target": "300000",
     "parties": [{"me": "fridge", "share": 4000, "excess": 3000}, {"me": "oven", "share": 6000, "excess": 7000}]}

``token`` may be left out (the deployment's token), ``target`` (token units, a decimal string) and the
``excess`` shares go together. Or CSV, one row per party, the rows of one alliance together:
``alliance,party,share,excess,target,token`` (``target``/``token`` on any of the alliance's rows, the
same wherever given). Each becomes version 1 of a new alliance, proposed by the platform; the parties
then sign (``ledger alliance sign``) and it is submitted as usual. An alliance that exists already is
skipped when its first version has exactly these terms, and refused otherwise.
"""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger import words
from ledger.chain.connect import checked_address
from ledger.chain.transact import NonceTaken
from ledger.errors import InputError, LedgerError
from ledger.models import MEStatus, Terms, text_to_bytes32
from ledger.money import BPS, AmountError, parse_amount
from ledger.revenue_file.parse import Problems, json_lines, numbered_lines
from ledger.terms import MAX_PARTIES, MIN_PARTIES

ME_COLUMNS = ("name", "signer", "payout", "parent")
ALLIANCE_COLUMNS = ("alliance", "party", "share", "excess", "target", "token")
ME_NAME_MAX_BYTES = 64  # the contract's MAX_NAME_BYTES
ME_BATCH = 50  # MEs per registerMEs transaction
REGISTER_GAS = 200_000  # per ME: registerME writes at most 7 slots (a 64-byte name takes 3) and one log
PROPOSAL_GAS_BUDGET = 8_000_000  # gas per proposeAgreements transaction


def name_problem(name: str, what: str) -> str | None:
    """Why ``name`` cannot name an ME or an alliance (``what``: "ME" or "alliance"), or None.

    The character rules are :func:`ledger.names.problem`'s (the ones `me register` and `alliance
    propose` apply); the size is the contract's limit (1-64 bytes for an ME, 1-32 for an alliance).
    Lookalikes of other names are :func:`lookalike_problems`'."""
    from ledger.names import problem, shown

    if not isinstance(name, str) or not name:
        return f"{what} name is empty"
    reason = problem(name)
    if reason:
        return f"{what} name {shown(name, quote=True)} {reason}"
    limit = ME_NAME_MAX_BYTES if what == "ME" else 32
    size = len(unicodedata.normalize("NFC", name).encode("utf-8"))
    if size > limit:
        return f"{what} name {shown(name, quote=True)} is {size} bytes; the limit is {limit}"
    return None


def lookalike_problems(rows: list[tuple[int, str]], existing: list[str], what: str) -> list[str]:
    """For each (row, name) to register, in file order: a problem when it looks like an existing name or
    an earlier row's (the same keys after case folding and Unicode's confusable mapping, see
    :func:`ledger.names.collision_keys`). One pass over each list: keys are looked up, not compared."""
    from ledger.names import collision_keys, shown

    owner: dict[str, str] = {}
    for other in existing:
        for key in collision_keys(other):
            owner.setdefault(key, other)
    problems = []
    for row, name in rows:
        keys = collision_keys(name)
        clash = next((owner[k] for k in keys if k in owner and owner[k] != name), None)
        if clash is not None:
            problems.append(
                f"row {row}: {what} name {shown(name, quote=True)} looks like {shown(clash, quote=True)} (same "
                f"letters after case folding and lookalike characters); choose a distinct name"
            )
            continue
        for key in keys:
            owner.setdefault(key, name)
    return problems


# -- reading ------------------------------------------------------------------------------------------


def _records(path: Path, columns: Sequence[str], required: Sequence[str], problems: Problems,
             ) -> Iterator[tuple[int, dict]]:  # fmt: skip
    """(row, {column: value}) of a CSV (header row) or JSON-lines file; shape problems go to ``problems``."""
    lines = numbered_lines(Path(path), problems)
    first = next(((n, t) for n, t in lines if t.strip()), None)
    if first is None:
        raise InputError(f"{path}: the file is empty")
    if first[1].lstrip().startswith("{"):
        for number, record in json_lines([first, *lines], problems):
            if not isinstance(record, dict):
                problems.add(f"row {number}: not a JSON object")
                continue
            yield number, record
        return
    header = [h.strip().lower() for h in next(csv.reader([first[1]]))]
    unknown = [h for h in header if h not in columns]
    missing = [c for c in required if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise InputError(
            f"{path}: row {first[0]}: the header must name the columns {','.join(columns)} "
            f"(required: {', '.join(required)}); got {','.join(header)}"
        )
    count = 0
    for number, text in lines:
        if not text.strip():
            continue
        count += 1
        values = next(csv.reader([text]))
        if len(values) != len(header):
            problems.add(f"row {number}: {len(values)} fields, the header has {len(header)}")
            continue
        yield number, dict(zip(header, (v.strip() for v in values), strict=True))
    if count == 0:
        raise InputError(f"{path}: the file has no rows after the header")


def _text(record: dict, key: str, row: int, problems: Problems, *, optional: bool = False) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        if not optional:
            problems.add(f"row {row}: {key} is missing")
        return None
    if not isinstance(value, str):
        problems.add(f"row {row}: {key} must be text")
        return None
    return value


def _unknown_fields(record: dict, fields: Sequence[str], row: int, problems: Problems) -> bool:
    """Whether ``record`` has fields other than ``fields`` (a problem naming them, then)."""
    extra = sorted(set(record) - set(fields))
    if extra:
        problems.add(f"row {row}: unknown field {', '.join(extra)}; the fields are {', '.join(fields)}")
    return bool(extra)


def _new_name(record: dict, row: int, problems: Problems, kind: str) -> str | None:
    """The row's ``name``, if it is one a new ``kind`` ("ME", "alliance") may take."""
    name = _text(record, "name", row, problems)
    if name is not None and (problem := name_problem(name, kind)):
        problems.add(f"row {row}: name: {problem}")
        return None
    return name


def _address(record: dict, key: str, row: int, problems: Problems, *, optional: bool = False) -> str | None:
    value = _text(record, key, row, problems, optional=optional)
    if value is None:
        return None
    try:
        address = checked_address(value, key)
    except InputError as err:
        problems.add(f"row {row}: {err}")
        return None
    if int(address, 16) == 0:
        problems.add(f"row {row}: {key} is the zero address")
        return None
    return address


def _token_problem(chain, token: str, decimals_of: Callable[[str], int]) -> str | None:
    """Why ``token`` cannot settle an alliance, or None: it must be an ERC-20 contract on this chain, one
    that answers decimals() and balanceOf() (the check `ledger alliance propose --token` makes)."""
    if not chain.rpc.has_code(token):
        return f"token {token}: no contract at this address on this chain"
    try:
        decimals_of(token)
        chain.token_balance(token, chain.address)
    except Exception:  # noqa: BLE001 - any failure to answer means it is not a usable ERC-20
        return f"token {token}: the contract does not answer decimals() and balanceOf(); not an ERC-20"
    return None


# -- sending ------------------------------------------------------------------------------------------


def _send_batches(chain, sender, items, progress, summary: ImportSummary, total: int, not_done: str, done: str):
    """Send every batch of an import (:func:`_send_all`); the summary, or one error naming the first failed
    batch's first row (a re-run skips what landed)."""
    failed = _send_all(chain, sender, items, progress)
    lost = sum(len(rows) for rows, _ in failed)
    summary.sent = total - lost
    if failed:
        rows, why = failed[0]
        raise LedgerError(
            f"{lost} of {total} {not_done} (a batch from row {rows[0].row}, {rows[0].name!r}: {why}); "
            f"run the same import again: {done} rows are skipped"
        )
    return summary


def _send_all(chain, sender, items: Sequence[tuple[object, bytes, int]], progress=None) -> list[tuple[object, str]]:
    """Send ``(key, calldata, gas)`` to the ledger in order through one pipeline; the keys that failed."""
    # A role held by a Safe (or written to a file for its owners): one Safe transaction per batch.
    pipeline = sender.pipeline(chain) if hasattr(sender, "pipeline") else chain.pipeline(sender)
    failed: list[tuple[object, str]] = []

    def landed(done_list) -> None:
        for done in done_list:
            if done.ok:
                if progress:
                    progress(len(done.key))
            else:
                why = f"transaction {done.receipt.tx_hash} reverted" if done.receipt else "never mined"
                failed.append((done.key, why))

    queue = list(items)
    while queue:
        key, data, gas = queue[0]
        try:
            landed(pipeline.submit(key, chain.address, data, gas))
        except NonceTaken:
            landed(pipeline.drain())
            pipeline.reset_nonce()
            continue
        queue.pop(0)
    landed(pipeline.drain())
    return failed


@dataclass
class ImportSummary:
    rows: int = 0
    sent: int = 0
    skipped: int = 0  # already on the chain, identical
    gas: int = 0


# -- MEs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MERow:
    row: int
    name: str
    signer: str
    payout: str
    parent: str  # "" for none


def check_me_file(chain, path: Path) -> tuple[list[MERow], list[MERow]]:
    """(rows to register, rows already registered identically); InputError with every problem."""
    problems = Problems()
    rows: list[MERow] = []
    first_row: dict[str, int] = {}
    for row, record in _records(path, ME_COLUMNS, ("name", "signer"), problems):
        if _unknown_fields(record, ME_COLUMNS, row, problems):
            continue
        name = _new_name(record, row, problems, "ME")
        if name is not None:
            name = unicodedata.normalize("NFC", name)  # stored in NFC, as `me register` stores it
        signer = _address(record, "signer", row, problems)
        payout = _address(record, "payout", row, problems, optional=True)
        parent = _text(record, "parent", row, problems, optional=True) or ""
        if name is None or signer is None or (payout is None and record.get("payout") not in (None, "")):
            continue
        if name in first_row:
            problems.add(f"row {row}: ME {name!r} is already in row {first_row[name]}")
            continue
        first_row[name] = row
        rows.append(MERow(row, name, signer, payout or signer, parent))
    # Against the chain: names taken, parents known.
    names = list(dict.fromkeys([r.name for r in rows] + [r.parent for r in rows if r.parent]))
    ids = dict(zip(names, (int(v) for v in chain.views([("meIdByName", (n,)) for n in names])), strict=True))
    existing = {me.name: me for me in chain.mes_by_id(sorted({i for i in ids.values() if i}))}
    name_of = {me.id: me.name for me in existing.values()}
    unseen = sorted({me.parent for me in existing.values() if me.parent and me.parent not in name_of})
    name_of.update({me.id: me.name for me in chain.mes_by_id(unseen)} if unseen else {})
    new: list[MERow] = []
    same: list[MERow] = []
    for r in rows:
        if r.parent:
            if r.parent == r.name:
                problems.add(f"row {r.row}: parent: ME {r.name!r} cannot be its own parent")
                continue
            if not ids.get(r.parent) and first_row.get(r.parent, r.row) >= r.row:
                problems.add(f"row {r.row}: parent {r.parent!r} is no registered ME nor one of an earlier row")
                continue
        me = existing.get(r.name)
        if me is None:
            new.append(r)
            continue
        parent_name = name_of.get(me.parent, f"id {me.parent}") if me.parent else ""
        differs = [
            f"{what} {have} (file: {want})"
            for what, have, want in (
                ("signer", me.signer, r.signer),
                ("payout", me.payout, r.payout),
                ("parent", parent_name or "(none)", r.parent or "(none)"),
            )
            if str(have).lower() != str(want).lower()
        ]
        if differs:
            problems.add(
                f"row {r.row}: ME {r.name!r} is registered (id {me.id}) with other values: {'; '.join(differs)}"
            )
        else:
            same.append(r)
    if new:
        count = chain.me_count()
        everyone = [me.name for me in chain.mes_by_id(list(range(1, count + 1)))] if count else []
        for problem in lookalike_problems([(r.row, r.name) for r in new], everyone, "ME"):
            problems.add(problem)
    if problems.total:
        raise InputError(list(problems), source=str(path), total=problems.total)
    return new, same


def import_mes(chain, path: Path, *, sender, dry_run: bool = False, progress=None) -> ImportSummary:
    new, same = check_me_file(chain, path)
    summary = ImportSummary(rows=len(new) + len(same), skipped=len(same))
    if dry_run or not new:
        return summary
    if not chain.has_role("PLATFORM_ROLE", sender.address):
        who = sender.safe.label() if hasattr(sender, "safe") else f"account {sender.address}"
        raise LedgerError(f"{who} does not hold the platform role; only it registers MEs")
    register = chain.abi["registerMEs"]
    ids_known: dict[str, int] = {}
    parents = [r.parent for r in new if r.parent]
    if parents:
        found = chain.views([("meIdByName", (n,)) for n in dict.fromkeys(parents)])
        ids_known = {n: int(i) for n, i in zip(dict.fromkeys(parents), found, strict=True) if int(i)}
    next_id = chain.me_count() + 1
    parent_ids = []
    for r in new:
        # An ME of an earlier row gets the next id in order (the pipeline keeps the file's order).
        parent_ids.append(ids_known.get(r.parent, 0) if r.parent else 0)
        ids_known[r.name] = next_id
        next_id += 1
    items = []
    for start in range(0, len(new), ME_BATCH):
        rows = new[start : start + ME_BATCH]
        data = register.encode([r.name for r in rows], [r.payout for r in rows], [r.signer for r in rows],
                               parent_ids[start : start + ME_BATCH])  # fmt: skip
        items.append((rows, data, 50_000 + REGISTER_GAS * len(rows)))
    return _send_batches(chain, sender, items, progress, summary, len(new), "MEs were not registered", "registered")


# -- alliances ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllianceRow:
    row: int
    name: str
    terms: Terms


def _share(value, row: int, what: str, problems: Problems) -> int | None:
    if value is None or value == "":
        problems.add(f"row {row}: {what} is missing")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    else:
        problems.add(f"row {row}: {what} {value!r} must be whole basis points from 0 to 10000")
        return None
    if not 0 <= number <= BPS:
        problems.add(f"row {row}: {what} {value!r} must be whole basis points from 0 to {BPS}")
        return None
    return number


def _alliance_records(path: Path, problems: Problems) -> Iterator[tuple[int, dict]]:
    """One dict per alliance, in the JSON-lines shape, whichever format the file has."""
    group: tuple[int, dict] | None = None
    seen: dict[str, int] = {}
    for row, record in _records(path, ALLIANCE_COLUMNS, ("alliance", "party", "share"), problems):
        if "parties" in record or "name" in record:  # JSON lines
            yield row, record
            continue
        name = record.get("alliance", "")
        party = {"me": record.get("party", ""), "share": record.get("share", ""), "excess": record.get("excess", "")}
        if group is not None and group[1]["name"] == name:
            for key in ("target", "token"):
                value = record.get(key, "")
                if value and group[1].get(key) and group[1][key] != value:
                    problems.add(f"row {row}: {key} {value!r} differs from {group[1][key]!r} given for {name!r} before")
                elif value:
                    group[1][key] = value
            group[1]["parties"].append(party)
            continue
        if group is not None:
            yield group
        if name in seen:
            problems.add(f"row {row}: the rows of alliance {name!r} must be together (it started in row {seen[name]})")
        seen[name] = row
        group = (row, {"name": name, "target": record.get("target", ""), "token": record.get("token", ""),
                       "parties": [party]})  # fmt: skip
    if group is not None:
        yield group


def check_alliance_file(chain, path: Path, default_token: str | None, decimals_of: Callable[[str], int],
                        from_block: int = 0) -> tuple[list[AllianceRow], list[AllianceRow]]:  # fmt: skip
    """(alliances to propose, alliances already on chain with these terms); InputError with every problem.
    New names are checked for lookalikes against every alliance proposed since ``from_block``."""
    problems = Problems()
    parsed: list[tuple[int, str, str, str, list]] = []
    first_row: dict[str, int] = {}
    for row, record in _alliance_records(path, problems):
        if _unknown_fields(record, ("name", "token", "target", "parties"), row, problems):
            continue
        name = _new_name(record, row, problems, "alliance")
        token = _address(record, "token", row, problems, optional=True) if record.get("token") else default_token
        if token is None and not record.get("token"):
            problems.add(f"row {row}: token is missing and the deployment records none")
        target = record.get("target") or ""
        if not isinstance(target, str):
            problems.add(f'row {row}: target must be a decimal string, e.g. "300000"')
            target = None
        parties = record.get("parties")
        if not isinstance(parties, list) or not all(isinstance(p, dict) for p in parties):
            problems.add(f'row {row}: parties must be a list of {{"me", "share", "excess"}} objects')
            continue
        if name is None or token is None or target is None:
            continue
        if name in first_row:
            problems.add(f"row {row}: alliance {name!r} is already in row {first_row[name]}")
            continue
        first_row[name] = row
        parsed.append((row, name, token, target, parties))
    me_names = list(dict.fromkeys(str(p.get("me", "")) for *_, parties in parsed for p in parties))
    ids = dict(zip(me_names, (int(v) for v in chain.views([("meIdByName", (n,)) for n in me_names])), strict=True))
    status = {me.id: me.status for me in chain.mes_by_id(sorted({i for i in ids.values() if i}))}
    candidates: list[AllianceRow] = []
    token_problems: dict[str, str | None] = {}  # each token named in the file, checked once
    for row, name, token, target, parties in parsed:
        before = problems.total
        if not MIN_PARTIES <= len(parties) <= MAX_PARTIES:
            counted = words.count(len(parties), "party")
            problems.add(f"row {row}: alliance {name!r} has {counted}; it needs {MIN_PARTIES} to {MAX_PARTIES}")
        shares: dict[int, int] = {}
        excess: dict[int, int] = {}
        for party in parties:
            me = party.get("me")
            unknown = sorted(str(k) for k in set(party) - {"me", "share", "excess"})
            if unknown:
                problems.add(f"row {row}: party {me!r}: unknown field {', '.join(unknown)}; the fields are me, share, "
                             f"excess")  # fmt: skip
                continue
            me_id = ids.get(str(me), 0) if isinstance(me, str) else 0
            if not me_id:
                problems.add(f"row {row}: party {me!r} is no registered ME")
                continue
            if status.get(me_id) != MEStatus.ACTIVE:
                problems.add(f"row {row}: party {me!r} is dissolved")
                continue
            if me_id in shares:
                problems.add(f"row {row}: party {me!r} is given twice")
                continue
            share = _share(party.get("share"), row, f"share of {me!r}", problems)
            shares[me_id] = share or 0
            if party.get("excess") not in (None, ""):
                value = _share(party.get("excess"), row, f"excess share of {me!r}", problems)
                excess[me_id] = value or 0
        if token != default_token and token not in token_problems:
            token_problems[token] = _token_problem(chain, token, decimals_of)
        if token_problems.get(token):
            problems.add(f"row {row}: {token_problems[token]}")
            continue
        target_units = 0
        if target:
            try:
                target_units = parse_amount(target, decimals_of(token))
            except AmountError as err:
                problems.add(f"row {row}: target {err}")
        if problems.total > before:
            continue
        if sum(shares.values()) != BPS:
            problems.add(f"row {row}: shares sum to {sum(shares.values())} basis points; they must sum to {BPS}")
        if target_units and (len(excess) != len(shares) or sum(excess.values()) != BPS):
            problems.add(f"row {row}: with a target every party needs an excess share, summing to {BPS}")
        if excess and not target_units:
            problems.add(f"row {row}: excess shares need a target (they apply above the period target)")
        if problems.total > before:
            continue
        candidates.append(AllianceRow(row, name, Terms.build(token, shares, target_units, excess)))
    # Against the chain: an existing alliance is skipped when its version 1 has exactly these terms.
    existing = chain.agreements([text_to_bytes32(c.name) for c in candidates]) if candidates else []
    on_chain = [(c, a) for c, a in zip(candidates, existing, strict=True) if a is not None]
    hashes = chain.views([("termsHashOf", (a.id, 1)) for _, a in on_chain]) if on_chain else []
    mine = chain.views([("hashTerms", (c.terms.as_tuple(),)) for c, _ in on_chain]) if on_chain else []
    same_names = set()
    for (c, _), have, want in zip(on_chain, hashes, mine, strict=True):
        if bytes(have) == bytes(want):
            same_names.add(c.name)
        else:
            problems.add(f"row {c.row}: alliance {c.name!r} exists with other terms (version 1); use "
                         f"`ledger alliance amend` to change them")  # fmt: skip
    taken = {c.name for c, _ in on_chain}
    fresh = [(c.row, c.name) for c in candidates if c.name not in taken]
    if fresh:
        from ledger.services.alliances import alliance_names

        for problem in lookalike_problems(fresh, alliance_names(chain, from_block), "alliance"):
            problems.add(problem)
    if problems.total:
        raise InputError(list(problems), source=str(path), total=problems.total)
    new = [c for c in candidates if c.name not in same_names and c.name not in {x.name for x, _ in on_chain}]
    return new, [c for c in candidates if c.name in same_names]


def import_alliances(chain, path: Path, *, sender, default_token: str | None, decimals_of,
                     dry_run: bool = False, progress=None, from_block: int = 0) -> ImportSummary:  # fmt: skip
    new, same = check_alliance_file(chain, path, default_token, decimals_of, from_block)
    summary = ImportSummary(rows=len(new) + len(same), skipped=len(same))
    if dry_run or not new:
        return summary
    if not chain.has_role("PLATFORM_ROLE", sender.address):
        raise LedgerError(f"account {sender.address} does not hold the platform role; only it proposes from a file")
    propose = chain.abi["proposeAgreements"]
    items = []
    batch: list[AllianceRow] = []
    gas = 50_000

    def flush() -> None:
        ids = [text_to_bytes32(a.name) for a in batch]
        items.append((list(batch), propose.encode(ids, [a.terms.as_tuple() for a in batch]), gas))

    for a in new:
        cost = 120_000 + 25_000 * len(a.terms.parties)
        if batch and gas + cost > PROPOSAL_GAS_BUDGET:
            flush()
            batch, gas = [], 50_000
        batch.append(a)
        gas += cost
    if batch:
        flush()
    return _send_batches(chain, sender, items, progress, summary, len(new), "alliances were not proposed", "proposed")
