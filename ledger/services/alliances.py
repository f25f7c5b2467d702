"""Alliance agreements from the parties' point of view: propose or amend terms, collect every party's
EIP-712 signature, submit, terminate.

Signatures are made with each ME's own Ape account and kept in a small local store until every party
has signed; ``export``/``import`` moves one between machines. The store holds only signatures (public
once submitted), never keys. The contract checks every signature again at submission.

An ME whose signer is a Safe signs as a team: each owner signs the Safe's ``SafeMessage`` over the
ledger's EIP-712 digest (:mod:`ledger.chain.safe`); the store keeps those owner signatures, and once
the Safe's threshold of current owners have signed, ``submit`` packs them (ascending owner order) as the
party's signature, which the ledger checks through the Safe's ERC-1271 ``isValidSignature``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.chain import eip712
from ledger.chain import safe as safe_lib
from ledger.errors import InputError, LedgerError
from ledger.models import Agreement, AgreementStatus, MEStatus, Terms, bytes32_to_text
from ledger.money import BPS
from ledger.names import check_new, shown
from ledger.services.signed_files import SignedFiles
from ledger.terms import MAX_BANDS, MAX_NESTING_DEPTH, MAX_PARTIES, MAX_RECOUP

if TYPE_CHECKING:
    from ledger.chain.reader import LedgerReader
    from ledger.chain.writer import LedgerWriter

APPROVAL = "approval"
TERMINATION = "termination"


class SignatureStore(SignedFiles):
    """``<folder>/<chain id>/<ledger address>/<agreement id hex>.json``: signatures by kind, version, ME."""

    what = "signature store"

    def _path(self, agreement_id: bytes) -> Path:
        return self.folder / f"{agreement_id.hex()}.json"

    def get(self, agreement_id: bytes, kind: str, version: int) -> dict[int, bytes]:
        raw = self._load(agreement_id).get(kind, {}).get(str(version), {})
        return {int(me_id): bytes.fromhex(sig[2:]) for me_id, sig in raw.items()}

    def get_owners(self, agreement_id: bytes, kind: str, version: int, me_id: int) -> dict[str, bytes]:
        """The Safe owners' signatures for party ``me_id`` (whose signer is a Safe): owner -> signature."""
        raw = self._load(agreement_id).get(f"{kind}-owners", {}).get(str(version), {}).get(str(me_id), {})
        return {owner: bytes.fromhex(sig[2:]) for owner, sig in raw.items()}

    def put_owner(self, agreement_id: bytes, kind: str, version: int, me_id: int, owner: str, signature: bytes) -> None:
        data = self._load(agreement_id)
        by_me = data.setdefault(f"{kind}-owners", {}).setdefault(str(version), {}).setdefault(str(me_id), {})
        by_me[owner] = "0x" + signature.hex()
        self._write(agreement_id, data)

    def put(self, agreement_id: bytes, kind: str, version: int, me_id: int, signature: bytes) -> None:
        data = self._load(agreement_id)
        data.setdefault(kind, {}).setdefault(str(version), {})[str(me_id)] = "0x" + signature.hex()
        self._write(agreement_id, data)


@dataclass(frozen=True)
class PartySignature:
    me_id: int
    me: str
    signer: str
    signed: bool
    detail: str = ""  # for a Safe signer: how many of its owners signed, of its threshold


def parse_table(items: tuple[str, ...] | list[str], chain, option: str) -> dict[int, int]:
    """``("fridge=4000", ...)`` -> ``{me_id: bps}``; every problem is reported, naming the option."""
    if len(items) > MAX_PARTIES:
        raise InputError(f"{option}: an alliance has at most {MAX_PARTIES} parties, got {len(items)}")
    table: dict[int, int] = {}
    problems = []
    seen: set[str] = set()
    for item in items:
        name, sep, bps_text = item.rpartition("=")
        if not sep or not name:
            problems.append(f"{option} {item!r}: expected ME=BPS, e.g. fridge=4000")
            continue
        if name in seen:
            problems.append(f"{option} {item!r}: ME {name!r} is given twice")
            continue
        seen.add(name)
        if not bps_text.isdigit() or int(bps_text) > BPS:
            problems.append(f"{option} {item!r}: share must be whole basis points from 0 to 10000")
            continue
        try:
            me_id = chain.me_id_by_name(name)
        except LedgerError as err:
            problems.append(f"{option} {item!r}: {err}")
            continue
        me = chain.me(me_id)
        if me.status != MEStatus.ACTIVE:
            problems.append(f"{option} {item!r}: ME {name!r} is dissolved")
            continue
        table[me_id] = int(bps_text)
    if not problems and option == "--party" and len(table) < 2:
        problems.append(f"{option}: an alliance needs at least 2 parties, got {len(table)}")
    if problems:
        raise InputError(problems)
    return table


def parse_band(item: str, chain, option: str = "--band") -> tuple[str, dict[int, int]]:
    """``"1000000:fridge=3000,oven=7000"`` -> ``("1000000", {me_id: bps})`` (the target still in token
    units, as typed)."""
    target, sep, table = item.partition(":")
    if not sep or not target.strip() or not table.strip():
        raise InputError(f"{option} {item!r}: expected TARGET:ME=BPS,ME=BPS,... e.g. 1000000:fridge=3000,oven=7000")
    return target.strip(), parse_table([t.strip() for t in table.split(",") if t.strip()], chain, f"{option} {target}:")


def parse_nested(items: tuple[str, ...] | list[str], chain, shares: dict[int, int], option: str = "--nested") -> dict:
    """``("platform=platform-nodes", ...)`` -> ``{me_id: inner agreement id}``: the party ME is an alliance,
    whose credit goes on to the alliance named."""
    nested: dict[int, bytes] = {}
    problems = []
    for item in items:
        me_name, sep, alliance_name = item.partition("=")
        if not sep or not me_name or not alliance_name:
            problems.append(f"{option} {item!r}: expected ME=ALLIANCE, e.g. platform=platform-nodes")
            continue
        try:
            me_id = chain.me_id_by_name(me_name)
            inner = chain.agreement_id(alliance_name)
        except LedgerError as err:
            problems.append(f"{option} {item!r}: {err}")
            continue
        if me_id not in shares:
            problems.append(f"{option} {item!r}: ME {me_name!r} is not a --party")
        elif me_id in nested:
            problems.append(f"{option} {item!r}: ME {me_name!r} is given twice")
        else:
            nested[me_id] = inner
    if problems:
        raise InputError(problems)
    return nested


def build_terms(
    token: str,
    shares: dict[int, int],
    target: int,
    excess: dict[int, int],
    *,
    bands: list[tuple[int, dict[int, int]]] = (),
    recoup: int = 0,
    recoup_shares: dict[int, int] | None = None,
    nested: dict[int, bytes] | None = None,
) -> Terms:
    """Terms from the CLI's tables, every problem named by its option. ``target``/``excess`` (the one
    band of before) and ``bands`` (``--band``) are alternatives."""
    recoup_shares = recoup_shares or {}
    problems = []
    if sum(shares.values()) != BPS:
        problems.append(f"--party shares sum to {sum(shares.values())} basis points; they must sum to {BPS}")
    if excess and not target:
        problems.append("--excess needs --target (the excess table applies above the period target)")
    if target and not excess:
        problems.append("--target needs --excess (who gets what above the target)")
    if excess and sum(excess.values()) != BPS:
        problems.append(f"--excess shares sum to {sum(excess.values())} basis points; they must sum to {BPS}")
    if set(excess) - set(shares):
        problems.append("--excess names an ME that is not a --party")
    if (target or excess) and bands:
        problems.append("--target/--excess is one band: give it as a --band too, or use --target alone")
    if len(bands) > MAX_BANDS:
        problems.append(f"--band: at most {MAX_BANDS} bands, got {len(bands)}")
    previous = 0
    for j, (band_target, table) in enumerate(bands, start=1):
        if band_target <= previous:
            problems.append(f"--band {j}: the targets must be above 0 and ascending ({band_target} after {previous})")
        previous = max(previous, band_target)
        if sum(table.values()) != BPS:
            problems.append(f"--band {j}: shares sum to {sum(table.values())} basis points; they must sum to {BPS}")
        if set(table) - set(shares):
            problems.append(f"--band {j}: names an ME that is not a --party")
    if recoup and not recoup_shares:
        problems.append("--recoup needs --recoup-share (who is paid the investment back)")
    if recoup_shares and not recoup:
        problems.append("--recoup-share needs --recoup (the amount to pay back first)")
    if recoup > MAX_RECOUP:
        problems.append(f"--recoup: at most {MAX_RECOUP} base units")
    if recoup_shares and sum(recoup_shares.values()) != BPS:
        problems.append(
            f"--recoup-share shares sum to {sum(recoup_shares.values())} basis points; they must sum to {BPS}"
        )
    if set(recoup_shares) - set(shares):
        problems.append("--recoup-share names an ME that is not a --party")
    if problems:
        raise InputError(problems)
    try:
        return Terms.build(
            token, shares, target, excess, bands=list(bands), recoup=recoup, recoup_shares=recoup_shares, nested=nested
        )
    except ValueError as err:
        message = err.errors()[0]["msg"] if hasattr(err, "errors") else str(err)
        raise InputError(message.removeprefix("Value error, ")) from None


def check_nested(chain: LedgerReader, agreement_id: bytes, terms: Terms) -> None:
    """The contract's nesting rules, checked before anything is sent (advisory: the contract checks again
    at proposal and activation): each inner alliance exists and settles in the same token, no cycle leads
    back to this alliance, and there are at most MAX_NESTING_DEPTH levels of alliances below it (through
    the inner alliances' versions in force)."""
    problems = []

    def depth_below(inner_id: bytes, path: tuple[bytes, ...]) -> int:
        """Levels of alliances below ``inner_id`` (0: none), or raises on a cycle."""
        found = chain.agreements([inner_id])[0]
        if found is None or not found.active_version:
            return 0
        inner_terms = chain.terms_of(inner_id, found.active_version)
        deepest = 0
        for deeper in dict.fromkeys(inner_terms.nested_parties.values()):
            if deeper == agreement_id or deeper in path:
                raise _Cycle(deeper)
            deepest = max(deepest, 1 + depth_below(deeper, (*path, deeper)))
        return deepest

    for inner_id in terms.nested_parties.values():
        name = bytes32_to_text(inner_id)
        if inner_id == agreement_id:
            problems.append(f"--nested: alliance {name!r} cannot be its own party")
            continue
        found = chain.agreements([inner_id])[0]
        if found is None:
            problems.append(f"--nested: no alliance named {name!r}")
            continue
        if found.token.lower() != terms.token.lower():
            problems.append(f"--nested: alliance {name!r} settles in {found.token}, not in {terms.token}")
            continue
        try:
            depth = 1 + depth_below(inner_id, (inner_id,))
        except _Cycle as cycle:
            problems.append(f"--nested: alliance {name!r} leads back to {bytes32_to_text(cycle.args[0])!r} (a cycle)")
            continue
        if depth > MAX_NESTING_DEPTH:
            problems.append(
                f"--nested: through {name!r} the alliance would have alliances {depth} levels below it; "
                f"at most {MAX_NESTING_DEPTH}"
            )
    if problems:
        raise InputError(problems)


class _Cycle(Exception):
    pass


def propose(chain: LedgerWriter, name: str, terms: Terms, *, sender, amend: bool, from_block: int = 0) -> int:
    """Put ``terms`` on chain as the next version of alliance ``name``. Returns the version.

    Checked here as the contract checks it, before anything is sent: a new alliance is proposed by the
    platform or the signer of one of its parties; a new version of an existing one by the platform or the
    signer of a party of its current version (the one in force, or the latest proposal while none ever
    was). A new alliance's name must pass :func:`ledger.names.check_new` against every alliance proposed
    since ``from_block`` (the deployment block) and is stored in NFC form."""
    if not amend:
        name = unicodedata.normalize("NFC", name)
    agreement_id = chain.agreement_id(name)
    existing = _agreement_or_none(chain, agreement_id)
    if amend:
        if existing is None:
            raise LedgerError(f"no alliance named {shown(name, quote=True)}; propose it first")
        if existing.status == AgreementStatus.TERMINATED:
            raise LedgerError(f"alliance {shown(name, quote=True)} is terminated; it cannot be amended")
    elif existing is not None:
        raise LedgerError(
            f"alliance {shown(name, quote=True)} already exists (version {existing.latest_version}); "
            f"use `alliance amend`"
        )
    else:
        check_new(name, alliance_names(chain, from_block), "alliance")
    current = chain.terms_of(agreement_id, existing.current_version) if existing is not None else None
    if terms.nested:
        check_nested(chain, agreement_id, terms)
    if not chain.has_role("PLATFORM_ROLE", sender.address):
        speakers = current.parties if current is not None else terms.parties
        if not any(me.signer.lower() == sender.address.lower() for me in chain.mes_by_id(speakers)):
            names = ", ".join(shown(me.name) for me in chain.mes_by_id(speakers))
            if current is None:
                raise LedgerError(
                    f"account {sender.address} may not propose alliance {shown(name, quote=True)}: it is neither "
                    f"the platform nor the signer of one of its parties ({names})"
                )
            raise LedgerError(
                f"account {sender.address} may not propose a new version of {shown(name, quote=True)}: only the "
                f"platform or the signer of a party of version {existing.current_version}, the current one "
                f"({names}), may"
            )
    return chain.propose(agreement_id, terms, sender=sender, current=current)


def pending_version(agreement: Agreement) -> int | None:
    """The newest proposal waiting for signatures, if any."""
    pending = agreement.pending_versions
    return pending[-1] if pending else None


def _agreement_or_none(chain: LedgerReader, agreement_id: bytes) -> Agreement | None:
    from ledger.errors import NotFoundError

    try:
        return chain.agreement(agreement_id)
    except NotFoundError:
        return None


def _message(chain: LedgerReader, agreement: Agreement, kind: str, version: int, terms: Terms):
    if kind == APPROVAL:
        return chain.approval_message(agreement.id, version, terms)
    return chain.termination_message(agreement.id, version)


def _target(chain: LedgerReader, name: str, kind: str, version: int | None = None) -> tuple[Agreement, int, Terms]:
    """The agreement, the version to sign and its terms, for an approval (``version``, or the newest one
    pending) or a termination (the version in force)."""
    agreement = chain.agreement(name)
    if kind == APPROVAL:
        version = approvable_version(agreement, version)
    else:
        if agreement.status != AgreementStatus.ACTIVE:
            raise LedgerError(f"alliance {name!r} is {agreement.status.name.lower()}; only an active one can end")
        version = agreement.active_version
    return agreement, version, chain.terms_of(agreement.id, version)


def approvable_version(agreement: Agreement, version: int | None = None) -> int:
    """``version`` if it can still be activated (the newest pending one when None), else why not."""
    name = agreement.name
    pending = agreement.pending_versions
    if version in pending or (version is None and pending):
        return version or pending[-1]
    if agreement.status == AgreementStatus.TERMINATED:
        raise LedgerError(f"alliance {name!r} is terminated; no version of it can be put in force")
    if version is None:
        raise LedgerError(
            f"alliance {name!r} has no proposal waiting for signatures (version {agreement.active_version} "
            f"is in force); propose changes with `alliance amend`"
        )
    if not 1 <= version <= agreement.latest_version:
        raise LedgerError(f"--version {version}: alliance {name!r} has versions 1 to {agreement.latest_version}")
    if version == agreement.active_version:
        raise LedgerError(f"--version {version}: version {version} of {name!r} is already in force")
    raise LedgerError(
        f"--version {version}: version {version} of {name!r} is older than version {agreement.active_version} in "
        f"force and can no longer be put in force; waiting for signatures: {', '.join(map(str, pending)) or 'none'}"
    )


def sign(
    chain, store: SignatureStore, name: str, account, kind: str = APPROVAL, version: int | None = None
) -> list[str]:
    """Sign with ``account`` for every party whose registered signer it is. Returns those MEs' names."""
    from ledger.services import safes

    agreement, version, terms = _target(chain, name, kind, version)
    parties = [chain.me(me_id) for me_id in terms.parties]
    mine = [me for me in parties if me.signer.lower() == account.address.lower()]
    teams = []  # parties whose signer is a Safe that ``account`` owns
    for me in parties:
        team = safes.safe_or_none(chain, me.signer)
        if team is not None and team.is_owner(account.address):
            teams.append((me, team))
    if not mine and not teams:
        raise LedgerError(
            f"account {account.address} is not the registered signer of any party of {name!r}, nor an owner of "
            f"a Safe that is one (parties: {', '.join(me.name for me in parties)})"
        )
    message = _message(chain, agreement, kind, version, terms)
    if mine:
        signature = eip712.sign(account, message)
        for me in mine:
            store.put(agreement.id, kind, version, me.id, signature)
    for me, team in teams:
        signature = safes.owner_signature(chain, team, eip712.digest(message), account)
        store.put_owner(agreement.id, kind, version, me.id, account.address, signature)
    return [me.name for me in mine] + [f"{me.name} (as owner of its Safe)" for me, _ in teams]


def add_signature(
    chain, store: SignatureStore, name: str, signature_hex: str, kind: str = APPROVAL, me_name: str | None = None
) -> tuple[int, list[str]]:
    """Import a signature made elsewhere; it must recover to a party's registered signer for one of the
    versions waiting for signatures (the signature itself says which). ``me_name``, when given (as
    ``export-signatures`` writes it), must be one of those parties. Returns (version, MEs it signs for)."""
    text = signature_hex.strip()
    try:
        signature = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise InputError(f"signature {text[:20]!r}: must be hex (0x followed by 130 hex digits)") from None
    if len(signature) != 65:
        raise InputError(f"signature must be 65 bytes, got {len(signature)}")
    if kind == APPROVAL:
        agreement = chain.agreement(name)
        candidates = list(reversed(agreement.pending_versions)) or [approvable_version(agreement)]
    else:
        agreement, version, _ = _target(chain, name, kind)
        candidates = [version]
    recovered = []
    for version in candidates:
        terms = chain.terms_of(agreement.id, version)
        signer = eip712.recover(_message(chain, agreement, kind, version, terms), signature)
        if signer is None:
            raise InputError("signature is not a valid ECDSA signature (no key recovers from it)")
        recovered.append(signer)
        owned = _owned_parties(chain, agreement, kind, version, terms, signature)
        if owned and (me_name is None or me_name in [me.name for me, _ in owned]):
            for me, owner in owned:
                if me_name is None or me.name == me_name:
                    store.put_owner(agreement.id, kind, version, me.id, owner, signature)
            return version, [f"{me.name} (owner {owner} of its Safe)" for me, owner in owned
                             if me_name is None or me.name == me_name]  # fmt: skip
        mine = [me for me in chain.mes_by_id(terms.parties) if me.signer.lower() == signer.lower()]
        if me_name is not None and mine and me_name not in [me.name for me in mine]:
            raise LedgerError(
                f"the signature for {me_name!r} is from {signer}, the signer of {', '.join(m.name for m in mine)}, "
                f"not of {me_name!r}"
            )
        if mine:
            for me in mine:
                store.put(agreement.id, kind, version, me.id, signature)
            return version, [me.name for me in mine]
    versions = ", ".join(map(str, sorted(candidates)))
    raise LedgerError(
        f"the signature{' for ' + repr(me_name) if me_name else ''} is from {recovered[0]}, which is not the signer "
        f"of any party of {name!r} for version {versions} waiting for signatures (made for other terms, another "
        f"version, alliance or chain?)"
    )


def _owned_parties(chain: LedgerReader, agreement, kind, version, terms, signature: bytes) -> list[tuple]:
    """Parties whose signer is a Safe of which ``signature`` (over that Safe's message for this
    agreement, kind and version) is by a current owner: ``[(me, owner)]``."""
    from ledger.services import safes

    digest = eip712.digest(_message(chain, agreement, kind, version, terms))
    found = []
    for me in chain.mes_by_id(terms.parties):
        team = safes.safe_or_none(chain, me.signer)
        if team is None:
            continue
        owner = safe_lib.recover(safe_lib.message(chain.chain_id, team.address, digest), signature)
        if owner is not None and team.is_owner(owner):
            found.append((me, owner))
    return found


def _party_signatures(chain: LedgerReader, store, agreement: Agreement, kind: str, version: int, terms: Terms):
    """Each party's row and, when complete, the signature to submit for it."""
    from ledger.services import safes

    stored = store.get(agreement.id, kind, version)
    message = _message(chain, agreement, kind, version, terms)
    out = []
    for me in chain.mes_by_id(terms.parties):
        team = safes.safe_or_none(chain, me.signer)
        if team is not None:
            owners = store.get_owners(agreement.id, kind, version, me.id)
            packed, why = safes.packed_or_why(chain, team, eip712.digest(message), owners)
            detail = why or f"{team.threshold} of {team.threshold} owner signatures of {team.label()}"
            out.append((PartySignature(me.id, me.name, me.signer, packed is not None, detail), packed))
            continue
        sig = stored.get(me.id)
        valid = sig is not None and (eip712.recover(message, sig) or "").lower() == me.signer.lower()
        out.append((PartySignature(me.id, me.name, me.signer, valid), sig if valid else None))
    return out


def signature_status(
    chain: LedgerReader, store: SignatureStore, agreement: Agreement, kind: str, version: int, terms: Terms
):
    """Each party with whether a valid signature from its current signer is in the store (for a Safe
    signer: its threshold of signatures by its current owners)."""
    return [row for row, _ in _party_signatures(chain, store, agreement, kind, version, terms)]


def _collect(chain: LedgerReader, store, agreement: Agreement, kind: str, version: int, terms: Terms) -> list[bytes]:
    pairs = _party_signatures(chain, store, agreement, kind, version, terms)
    missing = [row.me + (f" ({row.detail})" if row.detail else "") for row, _ in pairs if not row.signed]
    if missing:
        raise LedgerError(
            f"{len(pairs) - len(missing)} of {len(pairs)} parties have signed {kind} of version {version} of "
            f"{agreement.name!r}; waiting for {', '.join(missing)} (`ledger alliance sign`)"
        )
    return [sig for _, sig in pairs]


def submit(chain: LedgerWriter, store: SignatureStore, name: str, *, sender, version: int | None = None) -> int:
    """Activate a pending version once every party has signed it: ``version``, or the newest pending
    version every party has signed. Returns the version now in force."""
    agreement = chain.agreement(name)
    if version is None:
        for candidate in reversed(agreement.pending_versions):
            terms = chain.terms_of(agreement.id, candidate)
            if all(row.signed for row in signature_status(chain, store, agreement, APPROVAL, candidate, terms)):
                version = candidate
                break
    agreement, version, terms = _target(chain, name, APPROVAL, version)
    signatures = _collect(chain, store, agreement, APPROVAL, version, terms)
    chain.activate(agreement.id, version, terms, signatures, sender=sender)
    return version


def terminate(chain: LedgerWriter, store: SignatureStore, name: str, accounts, *, sender) -> tuple[list[str], bool]:
    """Sign the termination with each of ``accounts``; end the alliance once every party has signed.
    Returns (MEs that signed now, whether the alliance ended)."""
    signed: list[str] = []
    for account in accounts:
        signed += sign(chain, store, name, account, TERMINATION)
    agreement, version, terms = _target(chain, name, TERMINATION)
    rows = signature_status(chain, store, agreement, TERMINATION, version, terms)
    if not all(row.signed for row in rows):
        return signed, False
    signatures = _collect(chain, store, agreement, TERMINATION, version, terms)
    chain.terminate(agreement.id, terms, signatures, sender=sender)
    return signed, True


def alliance_names(chain: LedgerReader, from_block: int = 0) -> list[str]:
    """Every alliance ever proposed on this deployment, from the logs, in order of first proposal."""
    seen: dict[bytes, None] = {}
    for log in chain.logs(["AgreementProposed"], from_block=from_block):
        seen.setdefault(log.args["agreementId"], None)
    return [bytes32_to_text(agreement_id) for agreement_id in seen]
