"""Connecting to a node through Ape, and finding accounts by alias.

``local`` means the node ``ledger chain up`` runs, reached through Ape's provider for that node (foundry for
Anvil, hardhat for Hardhat's node with ``LEDGER_NODE=hardhat``) pointed at it with ``manage_process:
false``, so Ape never starts a throw-away node of its own. Anything else is an Ape network choice such as
``ethereum:sepolia:node``.

Accounts are Ape accounts given by alias. On the local chain ``dev0`` ... ``dev19`` are the node's funded
dev accounts (the well-known test mnemonic, on Anvil and Hardhat alike); they are refused anywhere else.
They are derived here from that mnemonic, not from Ape's ``test`` config, and Ape's project is pinned to
this repository: every command behaves the same whatever folder it runs from.

Keystore accounts (``ape accounts import``) are unlocked once, before anything is sent, with the
passphrase from ``APE_ACCOUNTS_<alias>_PASSPHRASE`` (or a prompt on a terminal). Ape then asks
"Sign: [y/N]" for every transaction and message unless ``--yes`` was given; with no terminal to ask
on, a command that would sign refuses before it sends anything, saying what to set.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ledger.config import PROJECT_ROOT, Settings
from ledger.errors import AccountLocked, ChainUnavailable, InputError, LedgerError, NotFoundError

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
    _pin_ape_project()


def _pin_ape_project() -> None:
    """Make this repository Ape's local project, wherever the command runs from.

    Ape takes its config (networks, the test accounts, node URIs) from ``ape-config.yaml`` in the current
    directory. Run from elsewhere, a command would silently use other settings (or none), so the local
    project is set to the repository before anything of Ape reads it. eth-ape is pinned (0.8.51);
    should its internals differ, nothing is pinned and dev accounts still work (see ``_dev_account``).
    """
    from pathlib import Path

    if Path.cwd().resolve() == PROJECT_ROOT:
        return
    try:
        from ape.managers.project import ProjectManager
        from ape.utils.basemodel import ManagerAccessMixin

        holder = ManagerAccessMixin.__dict__["local_project"]
        if getattr(holder, "_cache", "missing") is None:  # not read yet: nothing else saw another project
            holder._cache = ProjectManager(PROJECT_ROOT)
    except (ImportError, KeyError, AttributeError):  # pragma: no cover - another eth-ape
        pass


def restore_interrupt_handler() -> None:
    """Ape replaces Python's SIGINT handler with ``sys.exit(130)`` when it is imported, so Ctrl-C
    skipped every ``except KeyboardInterrupt`` (no "interrupted after N of M events" message). Put
    Python's own back (call after importing Ape or connecting)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Variables with which a provider plugin overrides the host it is given (ape-foundry reads APE_FOUNDRY_HOST
# on connect): the local chain is the node at --port, whatever the environment says.
LOCAL_HOST_OVERRIDES = ("APE_FOUNDRY_HOST",)


@contextmanager
def _env_without(names) -> Iterator[None]:
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


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
            node.wait_until_answering()  # "not running", or "busy" after a wait: never both
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
        context = _local_anvil(provider_settings) if choice == LOCAL_PROVIDERS["anvil"] else None
        if context is None:
            context = ape.networks.parse_network_choice(choice, provider_settings=provider_settings)
        with _env_without(LOCAL_HOST_OVERRIDES if settings.is_local else ()):
            context.__enter__()
    except errors as err:
        raise ChainUnavailable(f"cannot reach network {settings.network!r}: {_first_line(err)}") from None
    except ApeException as err:
        raise ChainUnavailable(f"cannot use network {settings.network!r}: {_first_line(err)}") from None
    finally:
        restore_interrupt_handler()
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


def quiet_ape_log(debug: bool) -> None:
    """Ape's log at ERROR (INFO with ``--debug``); before connecting: providers log their connection at INFO."""
    from ape.logging import LogLevel, logger

    logger.set_level(LogLevel.INFO if debug else LogLevel.ERROR)


def http_endpoint(settings: Settings) -> str:
    """The node to read over JSON-RPC: the local chain's URL, or the HTTP URI of the Ape network's provider."""
    if settings.is_local:
        return settings.node_url
    import ape

    with connected(settings):
        uri = ape.chain.provider.http_uri
    if not uri:
        raise ChainUnavailable(f"network {settings.network} has no HTTP endpoint; give --rpc URL")
    return uri


def _local_anvil(provider_settings: dict):
    """Ape's foundry provider for the local Anvil, made directly: looking it up by name makes Ape list
    every plugin's providers, which imports py-evm for its in-process test provider (about 1.5 s of a
    command's start on this machine). None if this Ape cannot be used that way (then the lookup is used)."""
    import ape

    try:
        from ape_foundry.provider import FoundryProvider

        network = ape.networks.get_ecosystem("ethereum").get_network("local")
        provider = FoundryProvider(name="foundry", network=network, provider_settings=provider_settings)
        return network.use_provider(provider)
    except Exception:  # noqa: BLE001 - any change in Ape's internals: fall back to its public lookup
        return None


def account(alias: str, settings: Settings, *, signing: bool = True):
    """The Ape account behind ``alias`` (a dev account on the local chain, else Ape's keystore).

    ``signing``: the account will sign (send a transaction or sign a message), so a keystore account is
    unlocked now (see :func:`unlock_keystore`); ``False`` when only its address is needed.
    """
    import ape

    match = DEV_ALIAS.match(alias)
    if match:
        if not settings.is_local:
            raise LedgerError(f"dev account {alias!r} is only for the local chain; use an account from Ape's keystore")
        index = int(match.group(1))
        if index >= settings.dev_accounts:
            raise NotFoundError(f"no dev account {alias!r}: the local chain has dev0 to dev{settings.dev_accounts - 1}")
        found = _dev_account(index)
    else:
        try:
            found = ape.accounts.load(alias)
        except (KeyError, IndexError):
            known = ", ".join(sorted(a.alias for a in ape.accounts if getattr(a, "alias", None))) or "none"
            hint = "dev0 ... dev19 on the local chain, or " if settings.is_local else ""
            raise NotFoundError(
                f"no account {alias!r}; use {hint}an alias from Ape's keystore (`ape accounts import {alias}`); "
                f"known aliases: {known}"
            ) from None
        from ape_accounts.accounts import KeyfileAccount

        if isinstance(found, KeyfileAccount):
            secure_keyfile(found.keyfile_path)
            if signing:
                unlock_keystore(found, alias, settings)
    remember_alias(found.address, alias)
    return found


def _dev_account(index: int):
    """Dev account ``index`` of the node ``ledger chain up`` runs: derived from the standard test mnemonic
    the node is started with (not from Ape's ``test.number_of_accounts``, which is read from the current
    directory's ape-config.yaml: dev10 ... dev19 failed outside the project folder)."""
    if index not in _DEV_ACCOUNTS:
        import ape
        from ape.utils.testing import DEFAULT_TEST_HD_PATH, DEFAULT_TEST_MNEMONIC, generate_dev_accounts

        generated = generate_dev_accounts(DEFAULT_TEST_MNEMONIC, 1, hd_path=DEFAULT_TEST_HD_PATH, start_index=index)[0]
        _DEV_ACCOUNTS[index] = ape.accounts.init_test_account(index, generated.address, generated.private_key)
    return _DEV_ACCOUNTS[index]


_DEV_ACCOUNTS: dict[int, object] = {}


def remember_alias(address: str, alias: str) -> None:
    """Errors name this alias next to the address (``ledger.errors.describe_revert``)."""
    from ledger.errors import KNOWN_NAMES

    KNOWN_NAMES.setdefault(address.lower(), alias)


def passphrase_variables(alias: str) -> list[str]:
    """Where an unattended run finds a keystore's passphrase: Ape's own variable (the alias as it is
    spelled), then the same name in capitals with every other character than A-Z, 0-9 as ``_``."""
    capitals = re.sub(r"[^A-Z0-9]", "_", alias.upper())
    names = [f"APE_ACCOUNTS_{alias}_PASSPHRASE", f"APE_ACCOUNTS_{capitals}_PASSPHRASE"]
    return list(dict.fromkeys(names))


def has_terminal() -> bool:
    """Whether a person can be asked (stdin is a terminal)."""
    stream = sys.stdin
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed
        return False


def unlock_keystore(found, alias: str, settings: Settings) -> None:
    """Unlock a keystore account (an Ape ``KeyfileAccount``) once, before anything is sent. Hardware
    wallets and other plugin accounts are left to their device, which confirms each transaction.

    The passphrase comes from ``APE_ACCOUNTS_<alias>_PASSPHRASE`` (see :func:`passphrase_variables`), or
    from a prompt when there is a terminal. With ``settings.assume_yes`` (``--yes``) the account signs
    without Ape's "Sign: [y/N]" question; without it Ape asks for every transaction, which needs a
    terminal: with none, this refuses now rather than half-way through a run.
    """
    variables = passphrase_variables(alias)
    passphrase = next((os.environ[name] for name in variables if os.environ.get(name)), None)
    terminal = has_terminal()
    if not terminal and (passphrase is None or not settings.assume_yes):
        # Ape would prompt, read end-of-file and stop as if interrupted (exit 130): say what is missing.
        missing = []
        if passphrase is None:
            missing.append(f"set {variables[-1]} (its passphrase)")
        if not settings.assume_yes:
            missing.append("give --yes (`ledger --yes ...`: sign without Ape's 'Sign: [y/N]' question)")
        raise AccountLocked(
            f"account {alias!r} is a keystore account and there is no terminal to ask on; to run unattended, "
            f"{' and '.join(missing)}. Nothing was sent"
        )
    from ape.exceptions import AccountsError

    try:
        if settings.assume_yes:
            found.set_autosign(True, passphrase=passphrase)
        else:
            found.unlock(passphrase=passphrase)
    except AccountsError as err:
        where = f"the passphrase in {_which(variables)}" if passphrase is not None else "the passphrase given"
        raise AccountLocked(f"{where} does not unlock account {alias!r} ({_first_line(err)})") from None


def _which(variables: list[str]) -> str:
    return next((name for name in variables if os.environ.get(name)), variables[-1])


def secure_keyfile(path) -> None:
    """A keystore file readable by anyone but its owner is made owner-only (0600), its folder 0700;
    a note on stderr says so. Ape writes them with the process umask (often 0644)."""
    from pathlib import Path

    path = Path(path)
    for item, private in ((path, 0o600), (path.parent, 0o700)):
        try:
            mode = stat.S_IMODE(item.stat().st_mode)
            if mode & 0o077:
                item.chmod(private)
                print(
                    f"note: {item} was readable by others ({mode:04o}); made it owner-only ({private:04o})",
                    file=sys.stderr,
                )
        except OSError:  # not ours to change: Ape still reads it
            pass


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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else err.__class__.__name__
