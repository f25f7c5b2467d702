"""One exception root for the ledger. Each subclass owns its message; the CLI prints ``str(error)``
on one line and exits with ``error.exit_code`` (1: the operation was refused, 2: it could not run)."""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the ledger reports to a user."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(LedgerError):
    """Input that cannot be used: a bad file, a bad option value. Lists every problem found."""

    def __init__(self, problems: list[str] | str, *, source: str = "", total: int | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        self.total = max(total or 0, len(self.problems))  # problems found (only the first are kept)
        head = f"{source}: " if source else ""
        shown = self.problems[:20]
        more = self.total - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        super().__init__(f"{head}{text}")


class NotFoundError(LedgerError):
    """A named thing (ME, alliance, account, deployment) does not exist."""


class ContractRevert(LedgerError):
    """The contract refused a transaction; ``name`` and ``args`` are its decoded custom error."""

    def __init__(self, name: str, args: dict | None = None, message: str | None = None):
        self.name = name
        self.args_ = dict(args or {})
        super().__init__(message or describe_revert(name, self.args_))


class AccountLocked(LedgerError):
    """A keystore account that cannot sign here: no passphrase and no terminal to ask for it, no
    terminal to answer Ape's "Sign: [y/N]" (without --yes), or a passphrase that does not unlock it."""

    exit_code = 2


class ChainUnavailable(LedgerError):
    """No node answers at the configured address, or the deployment is missing there."""

    exit_code = 2


class StorageUnwritable(LedgerError):
    """A file of the data folder cannot be written: the folder is read-only, or its disk is full."""

    exit_code = 2


_STORAGE_ERRNOS = {"EROFS", "ENOSPC", "EDQUOT", "EACCES", "EPERM"}
_STORAGE_SQLITE = ("readonly database", "disk is full", "unable to open database file", "disk I/O error")


def storage_problem(error: BaseException) -> str | None:
    """Why ``error`` (an OSError, or a sqlite3 error) means a file cannot be written here, in words, or
    None for any other error: a read-only folder or file system, no space left, no permission."""
    import errno

    if isinstance(error, OSError) and errno.errorcode.get(error.errno or 0) in _STORAGE_ERRNOS:
        return error.strerror or str(error)
    text = str(error)
    if type(error).__module__ == "sqlite3" and any(marker in text for marker in _STORAGE_SQLITE):
        return text
    return None


# Address (lower case) -> the account alias it was loaded by in this process; errors name it beside
# the address (ledger.chain.connect.account fills it in).
KNOWN_NAMES: dict[str, str] = {}


def named(address: str) -> str:
    """``0xABC... (alias)`` when the address was loaded by an account alias in this process."""
    alias = KNOWN_NAMES.get(str(address).lower())
    return f"{address} ({alias})" if alias else str(address)


# keccak256 of each role name the contracts use (AllianceLedger's and the test token's AccessControl).
ROLE_NAMES = {
    "0x" + "00" * 32: "DEFAULT_ADMIN_ROLE",
    "0x797343f8d6a29aafeb3aaf0910a8973e0081c60c2f6c1f775cd9f76ea348fc1e": "PLATFORM_ROLE",
    "0x940d6b1946ff1d2b5a9f1909219c3c81a370804b5ba0f91ec0828c99a2e6a681": "FINANCE_ROLE",
    "0x9f2df0fed2c77648de5860a4cc508cd0818c85b8b8a1ab4ceeef8d981c8956a6": "MINTER_ROLE",
}
# What each role lets its holder do, for the message that says which one is missing.
ROLE_WORDS = {
    "DEFAULT_ADMIN_ROLE": "the admin role (DEFAULT_ADMIN_ROLE)",
    "PLATFORM_ROLE": "the platform role (PLATFORM_ROLE)",
    "FINANCE_ROLE": "the finance role (FINANCE_ROLE)",
    "MINTER_ROLE": "the test token's minter role (MINTER_ROLE)",
}


def describe_revert(name: str, args: dict, labels: dict | None = None) -> str:
    """Words for a contract custom error (falls back to its name and arguments).

    Role hashes are shown by name; an address is followed by the account alias it was loaded by, and
    ``labels`` (``{str(value).lower(): label}``, e.g. an ME id -> its name) adds names for other values.
    """
    names = {**KNOWN_NAMES, **{str(k).lower(): v for k, v in (labels or {}).items()}}
    shown = {k: _show(v, names, k) for k, v in args.items()}
    detail = ", ".join(f"{k}={shown[k]}" for k in args)
    words = _REVERT_WORDS.get(name)
    if name == "AccessControlUnauthorizedAccount":
        role = ROLE_NAMES.get(_plain(args.get("neededRole", b"")).lower())
        words = f"account {{account}} lacks {ROLE_WORDS[role]}, which this needs" if role else words
    text = words.format(**shown) if words else name
    return f"{text} ({name}{': ' + detail if detail else ''})" if words else f"{name}({detail})"


def _show(value, names: dict, key: str) -> str:
    text = _plain(value)
    if text.lower() in ROLE_NAMES and "role" in key.lower():
        return ROLE_NAMES[text.lower()]
    label = names.get(text.lower())
    if label is None and key.lower().endswith("meid"):
        label = names.get(f"me:{text}")
    return f"{text} ({label})" if label and label != text else text


def _plain(value) -> str:
    if isinstance(value, bytes | bytearray):
        stripped = bytes(value).rstrip(b"\0")
        try:
            text = stripped.decode("utf-8")
            if text and text.isprintable():
                return text
        except UnicodeDecodeError:
            pass
        return "0x" + bytes(value).hex()
    return str(value)


_REVERT_WORDS = {
    "AccessControlUnauthorizedAccount": "account {account} lacks the role {neededRole}, which this needs",
    "AccessControlBadConfirmation": "an account can only renounce a role for itself",
    "LedgerZeroAddress": "{field} must not be the zero address",
    "MENameInvalid": "ME name must be 1 to 64 bytes",
    "MENameTaken": "an ME named {name} already exists",
    "MEUnknown": "no ME with id {meId}",
    "MENotActive": "ME {meId} is not active",
    "MEConsentInvalid": "the ME's signer did not sign this change",
    "AgreementIdInvalid": "alliance name is empty",
    "AgreementExists": "alliance {agreementId} already exists",
    "AgreementUnknown": "no alliance {agreementId}",
    "AgreementNotActive": "alliance {agreementId} is not active",
    "AgreementTerminated": "alliance {agreementId} is terminated",
    "AgreementPartyCount": "an alliance needs {min} to {max} parties, got {count}",
    "AgreementTableLength": "share table has {shares} entries for {parties} parties",
    "AgreementSharesSum": "shares must sum to 10000 basis points, got {sum}",
    "AgreementTierInvalid": "excess shares need a target above 0",
    "AgreementDuplicateParty": "ME {meId} appears twice among the parties",
    "AgreementPartiesUnordered": "parties must be in ascending ME id order",
    "AgreementTokenChanged": "an amendment cannot change the settlement token",
    "AgreementProposerNotParty": "only the platform or a party's signer may propose",
    "AgreementProposerNotCurrentParty": (
        "only the platform or the signer of a party of version {currentVersion} (the current one) may propose "
        "a new version of alliance {agreementId}"
    ),
    "AgreementVersionUnknown": "alliance {agreementId} has no version {version} (the latest is {latest})",
    "AgreementVersionSuperseded": (
        "version {version} of alliance {agreementId} is older than version {active} in force; it can no longer "
        "be activated"
    ),
    "AgreementVersionNotActive": "version {version} is not the version in force ({active})",
    "AgreementVersionAlreadyActive": "version {version} is already active",
    "AgreementTermsMismatch": "the terms given are not those of version {version}",
    "AgreementSignatureCount": "{signatures} signatures for {parties} parties",
    "AgreementSignatureInvalid": "the signature for ME {meId} is not from its registered signer",
    "AgreementPartyDissolved": "ME {meId} in alliance {agreementId} is dissolved; amend the alliance first",
    "SettlementBatchInvalid": "malformed settlement batch",
    "SettlementOutOfSequence": "another settlement moved alliance {agreementId} on (expected seq {expected})",
    "RevenueAmountInvalid": "revenue amount {amount} at seq {seq} is out of range",
    "RevenueReferenceEmpty": "empty revenue reference at seq {seq}",
    "PeriodInvalid": "period 0 at seq {seq} is not a period",
    "PeriodAlreadyClosed": "period {period} of alliance {agreementId} is closed",
    "ReversalBatchInvalid": "malformed reversal batch: {refs} references, {originals} reversed references",
    "ReversalOriginalEmpty": "empty reversed reference at seq {seq}",
    "AccountOverflow": "ME {meId}'s balance or debt in token {token} would exceed 2^128-1 base units",
    "TokenTransferShortfall": "the token delivered {received} of {expected} base units",
    "WithdrawCallerNotPayout": "only the ME's payout address {payout} may withdraw",
    "NothingToWithdraw": "ME {meId} has nothing to withdraw in this token",
    "PayoutBatchEmpty": "a payout run needs at least one ME",
    "ERC20InsufficientAllowance": "the finance account's token allowance is too low",
    "ERC20InsufficientBalance": "the finance account's token balance is too low",
}
