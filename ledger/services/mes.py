"""ME owners: a new payout address or signer for an ME, with its current signer's EIP-712 consent.

The contract's ``updateME`` is sent by the platform and carries the consent: an ``MEUpdate(meId, payout,
signer, nonce)`` signature by the ME's signer at that moment (the nonce makes every consent single-use).
The two usually sit with different people on different machines, as agreement signatures do: the ME's
signer runs ``ledger me consent`` (signs, keeps the consent in the local store and prints it), the
platform runs ``ledger me update`` with the printed consent (or, on the same machine, the stored one).
Every consent is checked here against the ME's current signer and nonce before anything is sent.

When the ME's signer is a Safe, each owner runs ``ledger me consent`` with their own account: it signs the
Safe's ``SafeMessage`` over the consent's digest and keeps that owner signature; ``ledger me update``
packs the threshold of current owners' signatures (or takes ``--consent`` with the packed signature)
and the ledger checks it through the Safe's ERC-1271 ``isValidSignature``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.chain import eip712
from ledger.chain import safe as safe_lib
from ledger.errors import InputError, LedgerError
from ledger.models import ME
from ledger.services.signed_files import SignedFiles

if TYPE_CHECKING:
    from ledger.chain.reader import LedgerReader
    from ledger.chain.writer import LedgerWriter


class ConsentStore(SignedFiles):
    """``<folder>/<chain id>/<ledger address>/me-<id>.json``: consents by nonce, payout and signer."""

    what = "consent store"

    def _path(self, me_id: int) -> Path:
        return self.folder / f"me-{me_id}.json"

    @staticmethod
    def _key(update: Update) -> str:
        return f"{update.nonce}:{update.payout.lower()}:{update.signer.lower()}"

    def get(self, update: Update) -> bytes | None:
        found = self._load(update.me.id).get(self._key(update))
        return bytes.fromhex(found[2:]) if found else None

    def get_owners(self, update: Update) -> dict[str, bytes]:
        found = self._load(update.me.id).get(self._key(update) + ":owners", {})
        return {owner: bytes.fromhex(sig[2:]) for owner, sig in found.items()}

    def put_owner(self, update: Update, owner: str, signature: bytes) -> None:
        data = self._load(update.me.id)
        data.setdefault(self._key(update) + ":owners", {})[owner] = "0x" + signature.hex()
        self._write(update.me.id, data)

    def put(self, update: Update, consent: bytes) -> None:
        data = self._load(update.me.id)
        data[self._key(update)] = "0x" + consent.hex()
        self._write(update.me.id, data)


@dataclass(frozen=True)
class Update:
    """A change of ME ``me`` (as it is now) to ``payout`` and ``signer``, at the ME's current nonce."""

    me: ME
    payout: str
    signer: str

    @property
    def nonce(self) -> int:
        return self.me.nonce

    def describe(self) -> str:
        changes = []
        if self.payout.lower() != self.me.payout.lower():
            changes.append(f"payout {self.me.payout} -> {self.payout}")
        if self.signer.lower() != self.me.signer.lower():
            changes.append(f"signer {self.me.signer} -> {self.signer}")
        return f"ME {self.me.name!r} (id {self.me.id}): {'; '.join(changes)} (update number {self.nonce + 1})"


def plan_update(chain: LedgerReader, name: str, payout: str | None, signer: str | None) -> Update:
    """The change ``--payout``/``--signer`` ask for (what is not given stays as it is)."""
    if payout is None and signer is None:
        raise InputError("give --payout and/or --signer: what changes")
    me = chain.me(chain.me_id_by_name(name))
    update = Update(me, payout or me.payout, signer or me.signer)
    if update.payout.lower() == me.payout.lower() and update.signer.lower() == me.signer.lower():
        raise InputError(f"--payout/--signer: ME {name!r} already has payout {me.payout} and signer {me.signer}")
    return update


def _message(chain: LedgerReader, update: Update):
    return eip712.me_update_message(
        chain.chain_id, chain.address, update.me.id, update.payout, update.signer, update.nonce
    )


def consent(chain: LedgerReader, store: ConsentStore, update: Update, account) -> bytes:
    """The consent of ``account``, which must be the ME's current signer (or, when that signer is a
    Safe, one of its owners: then the owner's signature of the Safe's message); kept in ``store``."""
    from ledger.services import safes

    team = safes.safe_or_none(chain, update.me.signer)
    if team is not None:
        signature = safes.owner_signature(chain, team, eip712.digest(_message(chain, update)), account)
        store.put_owner(update, account.address, signature)
        return signature
    if account.address.lower() != update.me.signer.lower():
        raise LedgerError(
            f"account {account.address} is not the current signer of ME {update.me.name!r} ({update.me.signer}); "
            f"only that key can consent to changing it"
        )
    signature = eip712.sign(account, _message(chain, update))
    store.put(update, signature)
    return signature


def parse_consent(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip().removeprefix("0x"))
    except ValueError:
        raise InputError("--consent: must be hex (0x followed by 130 hex digits)") from None
    if len(raw) == 0 or len(raw) % 65:
        raise InputError(f"--consent: a signature is 65 bytes (a Safe's: 65 per owner), got {len(raw)}")
    return raw


def check_consent(chain: LedgerReader, update: Update, signature: bytes) -> None:
    """Refuse, before sending, a consent that is not the ME's current signer's over exactly this change."""
    from ledger.services import safes

    team = safes.safe_or_none(chain, update.me.signer)
    if team is not None:
        signable = safe_lib.message(chain.chain_id, team.address, eip712.digest(_message(chain, update)))
        why = safe_lib.verify(signable, signature, list(team.owners), team.threshold)
        if why:
            raise LedgerError(
                f"the consent is not {team.label()}'s (the signer of ME {update.me.name!r}) over this change at "
                f"update number {update.nonce + 1}: {why}"
            )
        return
    recovered = eip712.recover(_message(chain, update), signature)
    if recovered is None or recovered.lower() != update.me.signer.lower():
        raise LedgerError(
            f"the consent is not from the current signer of ME {update.me.name!r} ({update.me.signer}) over this "
            f"change at update number {update.nonce + 1} (it recovers to {recovered or 'nobody'}); have that signer "
            f"run `ledger me consent` for exactly these --payout/--signer values"
        )


def submit(chain: LedgerWriter, store: ConsentStore, update: Update, *, signature: bytes | None, sender) -> None:
    """Send ``updateME`` (platform role) with ``signature``, or the consent kept in ``store``."""
    from ledger.services import safes

    team = safes.safe_or_none(chain, update.me.signer)
    if signature is None and team is not None:
        digest = eip712.digest(_message(chain, update))
        signature, why = safes.packed_or_why(chain, team, digest, store.get_owners(update))
        if signature is None:
            raise LedgerError(
                f"no consent from the signer of ME {update.me.name!r} for this change yet: {why}; each owner runs "
                f"`ledger me consent {update.me.name} ... --account OWNER`"
            )
    signature = signature or store.get(update)
    if signature is None:
        raise LedgerError(
            f"no consent from the current signer of ME {update.me.name!r} ({update.me.signer}) for this change; "
            f"give --consent-by ACCOUNT (that signer's account), or --consent 0x... as `ledger me consent` printed it"
        )
    check_consent(chain, update, signature)
    chain.update_me(update.me.id, update.payout, update.signer, signature, sender=sender)
