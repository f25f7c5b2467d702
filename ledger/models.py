"""Frozen pydantic models shared by the chain, service and CLI layers.

Amounts are ``int`` base units. Names that live on-chain as ``bytes32`` (alliance ids, revenue
references) are UTF-8 strings of at most 32 bytes, stored left-aligned and zero-padded, so the chain's
logs read back as the same text.
"""

from __future__ import annotations

import unicodedata
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ledger.money import MAX_EVENT_AMOUNT, MAX_PERIOD
from ledger.terms import MAX_PARTIES, MIN_PARTIES, Band, Terms  # noqa: F401 - re-exported: the terms live in ledger.terms


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MEStatus(IntEnum):
    NONE = 0
    ACTIVE = 1
    DISSOLVED = 2


class AgreementStatus(IntEnum):
    NONE = 0
    PROPOSED = 1
    ACTIVE = 2
    TERMINATED = 3


def text_to_bytes32(text: str, what: str = "value") -> bytes:
    """UTF-8 text of 1..32 bytes as a left-aligned ``bytes32``."""
    raw = text.encode("utf-8")
    if not raw:
        raise ValueError(f"{what} is empty")
    if len(raw) > 32:
        raise ValueError(f"{what} {text!r} is {len(raw)} bytes; the limit is 32")
    if b"\0" in raw:
        raise ValueError(f"{what} {text!r} contains a NUL character")
    return raw.ljust(32, b"\0")


def bytes32_to_text(value: bytes) -> str:
    raw = bytes(value).rstrip(b"\0")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + bytes(value).hex()


class ME(Model):
    id: int
    name: str
    payout: str
    signer: str
    status: MEStatus
    parent: int = 0
    nonce: int = 0


class Agreement(Model):
    id: bytes
    name: str
    token: str
    status: AgreementStatus
    active_version: int
    latest_version: int
    next_seq: int
    recouped: int = 0  # revenue split by a recoup table so far, across all periods and versions

    @property
    def current_version(self) -> int | None:
        """The version that speaks for the agreement: the one in force, or the latest proposal while none
        was ever activated (None once it has ended). Its parties' signers may propose new versions; a
        termination is signed over it."""
        if self.status == AgreementStatus.TERMINATED:
            return None
        return self.active_version if self.status == AgreementStatus.ACTIVE else self.latest_version

    @property
    def pending_versions(self) -> list[int]:
        """The versions that can still be activated, oldest first: every version newer than the one in
        force (every version, while none was ever activated). Activating one supersedes the older ones."""
        if self.status == AgreementStatus.TERMINATED:
            return []
        return list(range(self.active_version + 1, self.latest_version + 1))


class RevenueEvent(Model):
    """One revenue event from the finance system, amounts already in base units."""

    reference: str = Field(min_length=1)
    alliance: str = Field(min_length=1)
    amount: int = Field(gt=0, le=MAX_EVENT_AMOUNT)
    period: int = Field(gt=0, le=MAX_PERIOD)
    row: int = 0  # where it came from (file row or line), for messages
    reverses: str | None = None  # a reversal: the reference of the settled event it reverses

    @field_validator("reference")
    @classmethod
    def _reference_fits(cls, value: str) -> str:
        """References are compared and settled in Unicode NFC (docs/input-rules.md)."""
        value = value if value.isascii() else unicodedata.normalize("NFC", value)
        text_to_bytes32(value, "reference")
        return value

    @field_validator("reverses")
    @classmethod
    def _original_fits(cls, value: str | None) -> str | None:
        if value is not None:
            text_to_bytes32(value, "reverses")
        return value

    @property
    def entry(self) -> int:
        """The contract's packed entry: ``amount << 32 | period``."""
        return (self.amount << 32) | self.period
