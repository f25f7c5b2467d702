"""Connecting to a node through Ape, and finding accounts by alias.

``local`` means the node ``ledger chain up`` runs, reached through Ape's provider for that node (foundry for
Anvil, hardhat for Hardhat's node with ``LEDGER_NODE=hardhat``) pointed at it with ``manage_process:
false``, so Ape never starts a throw-away node of its own. Anything else is an Ape network choice such as
``ethereum:sepolia:node``.

Accounts are Ape accounts given by alias. On the local chain ``dev0`` ... ``dev19`` are the node's funded
dev accounts (the well-known test mnemonic, on Anvil and Hardhat alike); they are refused anywhere else.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from ledger.config import PROJECT_ROOT, Settings
from ledger.errors import ChainUnavailable, InputError, LedgerError, NotFoundError

DEV_ALIAS = re.compile(r"^dev(\d{1,2})$")
# The Ape provider that talks to each kind of local node (LEDGER_NODE).
LOCAL_PROVIDERS = {"anvil": "ethereum:local:foundry", "hardhat": "ethereum:local:hardhat"}


def prepare_environment() -> None:
    """Point Ape at the project's own tools (what the Makefile exports), so ``ledger`` works from any
    shell: solc through solc-js, Ape's data folder inside the project, a project-local temp folder."""
    os.environ.setdefault("SOLCX_BINARY_PATH", str(PROJECT_ROOT / "scripts" / "solc" / "bin"))
    os.environ.setdefault("APE_DATA_FOLDER", str(PROJECT_ROOT / ".ape"))
    tmp = PROJECT_ROOT / ".tmp"
    tmp.mkdir(exist_ok=True)
    os.environ.setdefault("TMPDIR", str(tmp))
    bin_dir = str(PROJECT_ROOT / "scripts" / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _network_errors() -> tuple[type[BaseException], ...]:
    import requests
    from ape.exceptions import NetworkError, ProviderNotConnectedError, ProviderNotFoundError

    return (
        ConnectionError,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        NetworkError,
        ProviderNotConnectedError,
        ProviderNotFoundError,
    )


@contextmanager
def connected(settings: Settings) -> Iterator[None]:
    """Connect Ape to the configured network for the duration of the block.

    A node that cannot be reached, before or during the block, becomes :class:`ChainUnavailable`.
    """
    from ledger.chain.node import LocalNode

    prepare_environment()
    if settings.is_local:
        node = LocalNode(settings)
        if not node.answers():
            raise ChainUnavailable(
                f"the local chain is not running at {settings.node_url}; start it with `ledger chain up`"
            )
        choice = LOCAL_PROVIDERS[node.kind]  # the node this data folder runs, else LEDGER_NODE
        provider_settings = {"host": settings.node_url, "manage_process": False}
    else:
        choice, provider_settings = settings.network, {}

    import ape
    from ape.exceptions import ApeException

    if choice.endswith(":hardhat"):
        from ledger.chain import hardhat

        hardhat.install()  # ape-hardhat's revert parsing, fixed for web3 7 (see ledger.chain.hardhat)
    errors = _network_errors()
    try:
        context = ape.networks.parse_network_choice(choice, provider_settings=provider_settings)
        context.__enter__()
    except errors as err:
        raise ChainUnavailable(f"cannot reach network {settings.network!r}: {_first_line(err)}") from None
    except ApeException as err:
        raise ChainUnavailable(f"cannot use network {settings.network!r}: {_first_line(err)}") from None
    try:
        yield
    except errors as err:
        where = settings.node_url if settings.is_local else repr(settings.network)
        hint = " (`ledger chain up`)" if settings.is_local else ""
        raise ChainUnavailable(
            f"the node at {where} stopped answering ({err.__class__.__name__}); start it again{hint} and re-run "
            f"the same command: nothing is paid twice"
        ) from None
    finally:
        # A dead node cannot be disconnected from cleanly; there is nothing to undo then.
        with contextlib.suppress(Exception):
            context.__exit__(None, None, None)


def account(alias: str, settings: Settings):
    """The Ape account behind ``alias`` (a dev account on the local chain, else Ape's keystore)."""
    import ape

    match = DEV_ALIAS.match(alias)
    if match:
        if not settings.is_local:
            raise LedgerError(f"dev account {alias!r} is only for the local chain; use an account from Ape's keystore")
        index = int(match.group(1))
        if index >= settings.dev_accounts:
            raise NotFoundError(f"no dev account {alias!r}: the local chain has dev0 to dev{settings.dev_accounts - 1}")
        return ape.accounts.test_accounts[index]
    try:
        return ape.accounts.load(alias)
    except (KeyError, IndexError):
        known = ", ".join(sorted(a.alias for a in ape.accounts if getattr(a, "alias", None))) or "none"
        hint = "dev0 ... dev19 on the local chain, or " if settings.is_local else ""
        raise NotFoundError(
            f"no account {alias!r}; use {hint}an alias from Ape's keystore (`ape accounts import {alias}`); "
            f"known aliases: {known}"
        ) from None


def checked_address(value: str, option: str = "address") -> str:
    """A typed ``0x...`` address, checksummed. All-lowercase or all-uppercase hex is taken as it is; a
    mixed-case one must carry a valid EIP-55 checksum, because a typo in it would otherwise register,
    pay or trust an address nobody owns. ``option`` names the option in the error."""
    from eth_utils import is_checksum_address, to_checksum_address

    body = value[2:] if value[:2] in ("0x", "0X") else None
    if body is None or len(body) != 40 or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise InputError(f"{option} {value!r} is not an address (0x and 40 hex digits)")
    value = "0x" + body
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise InputError(
            f"{option} {value}: its mixed-case (EIP-55) checksum is wrong, so the address is probably mistyped; "
            f"check it (or give it all in lowercase to skip the checksum)"
        )
    return to_checksum_address(value)


def address_of(value: str, settings: Settings, option: str = "address") -> str:
    """A checksummed address from ``0x...`` (see :func:`checked_address`), the name of a Safe made with
    ``ledger safe create``, or an account alias."""
    if value[:2] in ("0x", "0X"):
        return checked_address(value, option)
    from ledger.services.safes import SafeStore

    safe = SafeStore(settings.data_dir).address(value)
    if safe is not None:
        return safe
    return account(value, settings).address


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else err.__class__.__name__
