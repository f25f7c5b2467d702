"""What every command shares: settings from options and the environment, the connection to the chain,
the deployment, accounts by alias, and amounts in token units.

Nothing here imports Ape at module level: ``ledger --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ledger.config import Settings

from ledger.errors import LedgerError

ROLE_DEFAULTS_LOCAL = {"admin": "dev0", "platform": "dev1", "finance": "dev2"}


@dataclass
class App:
    """The root click context object."""

    settings: Settings
    debug: bool = False

    @contextmanager
    def session(self, *, deployed: bool = True) -> Iterator[Session]:
        from ledger.chain.connect import connected, quiet_ape_log

        quiet_ape_log(self.debug)
        with connected(self.settings):
            yield Session(self.settings, deployed)

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only session. On the local chain it reads straight over JSON-RPC, without starting Ape
        (about 3 s less per command); elsewhere it goes through Ape's network like :meth:`session`."""
        if not self.settings.is_local:
            with self.session() as s:
                yield s
            return
        yield Session(self.settings, rpc_url=self.settings.node_url)

    @contextmanager
    def sender(self, read: Session) -> Iterator[Session]:
        """``read`` (from :meth:`reader`), able to send from now on: Ape connects (its accounts sign)
        and the chain read over JSON-RPC gets the transaction policy; its raw calldata, pipeline and
        transactor need no Ape contract object (the deployment is not opened again)."""
        if read.rpc_url is None:  # already an Ape session
            yield read
            return
        from ledger.chain.connect import connected, quiet_ape_log
        from ledger.chain.transact import TxPolicy

        quiet_ape_log(self.debug)
        with connected(self.settings):
            read.chain.policy = TxPolicy.from_settings(self.settings)
            yield read


@dataclass
class Session:
    settings: Settings
    needs_deployment: bool = True
    _decimals: dict[str, int] = field(default_factory=dict)
    _symbols: dict[str, str] = field(default_factory=dict)
    rpc_url: str | None = None  # a read-only session straight over JSON-RPC (App.reader)

    def __post_init__(self):
        if self.needs_deployment:
            _ = self.chain  # fail early, with the deployment hint, before any other work

    @cached_property
    def store(self):
        from ledger.chain.deployment import DeploymentStore

        return DeploymentStore(self.settings.deployments_dir)

    @cached_property
    def _opened(self):
        if self.rpc_url:
            from ledger.chain.node import LocalNode
            from ledger.chain.open import open_over_rpc

            return open_over_rpc(self.store, self.rpc_url, node=LocalNode(self.settings))
        from ledger.chain.open import open_deployment
        from ledger.chain.transact import TxPolicy

        chain, record = open_deployment(self.store)
        chain.policy = TxPolicy.from_settings(self.settings)
        return chain, record

    @property
    def chain(self):
        return self._opened[0]

    @property
    def record(self):
        return self._opened[1]

    @cached_property
    def signatures(self):
        from ledger.services.alliances import SignatureStore

        return SignatureStore(self.settings.signatures_dir, self.record.chain_id, self.record.ledger)

    @cached_property
    def ledger_index(self):
        """The local index of this deployment (:mod:`ledger.index`), not yet brought up to date."""
        from ledger.index import LedgerIndex, index_path

        chain, record = self.chain, self.record
        return LedgerIndex(
            index_path(self.settings.data_dir, record.chain_id, record.ledger),
            chain_id=record.chain_id, ledger=record.ledger, from_block=record.block, abi=chain.abi_json,
            notice=lambda text: click.echo(text, err=True),
        )  # fmt: skip

    def synced_index(self):
        """The local index brought up to date from the new blocks' logs and attached to the chain, so the
        chain's log reads come from it (None when ``LEDGER_INDEX=0``: every read goes to the node)."""
        if not self.settings.index:
            return None
        index = self.usable_index()
        if index is not None:
            self.chain.index = index
        return index

    def usable_index(self):
        """The local index brought up to date, or None when its file cannot be written (a read-only data
        folder, a full disk): the index is only a cache of the chain's logs, so the command then reads
        the logs from the node, as with ``LEDGER_INDEX=0``, and says so on stderr."""
        from ledger.errors import StorageUnwritable, storage_problem

        index = self.ledger_index
        try:
            index.sync(self.chain.rpc)
        except Exception as err:
            reason = str(err) if isinstance(err, StorageUnwritable) else storage_problem(err)
            if reason is None:
                raise
            index.close()
            where = "" if isinstance(err, StorageUnwritable) else f"the local index {index.path} cannot be written: "
            click.echo(f"note: {where}{reason}; reading the chain's logs directly (as LEDGER_INDEX=0 does)", err=True)
            return None
        return index

    def account(self, alias: str, *, signing: bool = True):
        """``signing=False``: only the address is needed (a keystore account stays locked)."""
        from ledger.chain.connect import account

        return account(alias, self.settings, signing=signing)

    def address(self, value: str, option: str = "address") -> str:
        """An address typed as ``0x...`` (a mixed-case one with a valid checksum, see
        :func:`ledger.chain.connect.checked_address`), the name of a Safe made with ``ledger safe create``,
        or an account alias; ``option`` names the option in errors."""
        if value[:2] in ("0x", "0X"):
            from ledger.chain.connect import checked_address

            return checked_address(value, option)
        from ledger.services.safes import SafeStore

        safe = SafeStore(self.settings.data_dir).address(value)
        if safe is not None:
            return safe
        return self.account(value, signing=False).address

    def role_account(self, role: str, alias: str | None, *, signing: bool = True):
        """The account for a role: ``--account`` if given, else the alias recorded at deployment."""
        if alias:
            return self.account(alias, signing=signing)
        recorded = self.record.aliases.get(role) if self.needs_deployment else None
        if recorded:
            from ledger.services.safes import SafeStore

            if SafeStore(self.settings.data_dir).address(recorded):
                raise LedgerError(
                    f"the {role} role is held by the Safe {recorded!r}: give --safe {recorded} and --account for "
                    f"each owner that signs"
                )
            return self.account(recorded, signing=signing)
        if self.settings.is_local:
            return self.account(ROLE_DEFAULTS_LOCAL[role], signing=signing)
        raise LedgerError(f"give --account: the account that holds the {role} role")

    def role_actor(self, role: str, aliases: tuple[str, ...], safe: str | None, export: str | None = None):
        """Who acts for ``role``: with ``--safe``, the Safe through the owners given with ``--account``
        (they sign the Safe transaction, the last one sends it); with ``--export FILE`` too, the Safe
        transactions are written to FILE for owners elsewhere to sign (:mod:`ledger.services.safe_tx`);
        else the one ``--account`` (or the recorded role account)."""
        from ledger.errors import InputError

        if export and not safe:
            raise InputError("--export writes Safe transactions: give --safe too")
        if safe and export:
            from pathlib import Path

            from ledger.services import safe_tx, safes

            if Path(export).exists():  # it may hold owners' signatures already: never overwritten
                raise InputError(f"--export {export}: the file exists; give a new name (or remove it first)")

            found = safes.resolve(self.chain, safes.SafeStore(self.settings.data_dir), safe)
            context = click.get_current_context(silent=True)
            command = context.command_path if context else "ledger"
            owners = [self.account(a) for a in aliases]
            return safe_tx.SafeExporter(self.chain, self.record, found, owners, export, command)
        if safe:
            from ledger.services import safes

            if not aliases:
                raise InputError("--safe needs --account for each owner that signs (at least the Safe's threshold)")
            found = safes.resolve(self.chain, safes.SafeStore(self.settings.data_dir), safe)
            return safes.SafeActor(self.chain, found, [self.account(a) for a in aliases])
        if len(aliases) > 1:
            raise InputError("--account is given more than once; several accounts sign only as owners with --safe")
        return self.role_account(role, aliases[0] if aliases else None)

    def decimals(self, token: str) -> int:
        if token not in self._decimals:
            from ledger.chain.codec import ERC20

            self._decimals[token] = int(self.chain.call(token, ERC20["decimals"]))
        return self._decimals[token]

    def symbol(self, token: str) -> str:
        if token not in self._symbols:
            from ledger.chain.codec import ERC20
            from ledger.names import shown

            try:  # a token's symbol is anyone's text, shown like a name (control and bidi characters escaped)
                self._symbols[token] = shown(str(self.chain.call(token, ERC20["symbol"])))
            except Exception:  # noqa: BLE001 - a token without symbol() is shown by address
                self._symbols[token] = token[:10]
        return self._symbols[token]

    def units(self, amount: int, token: str) -> str:
        from ledger.money import format_amount

        return format_amount(amount, self.decimals(token))

    def parse_units(self, text: str, token: str, what: str) -> int:
        from ledger.errors import InputError
        from ledger.money import AmountError, parse_amount

        try:
            return parse_amount(text, self.decimals(token))
        except AmountError as err:
            raise InputError(f"{what} {err}") from None


pass_app = click.make_pass_decorator(App)


def account_option(role: str | None = None, help_text: str | None = None):
    """``--account ALIAS``; for a role, the help names its default (recorded at deployment, or the dev account)."""
    if help_text is None:
        help_text = "Ape account alias."
        if role:
            help_text = (
                f"Ape account alias that sends the transaction (default: the {role} account recorded at "
                f"deployment; {ROLE_DEFAULTS_LOCAL[role]} on the local chain)."
            )
    return click.option("--account", "account_alias", metavar="ACCOUNT", help=help_text)


@contextmanager
def exporting(actor):
    """Around a command's sending: when ``actor`` writes Safe transactions to a file (``--export``), write
    it once the command has made its calls, say what is next, and end the command there."""
    from ledger.services.safe_tx import Exported, SafeExporter

    if not isinstance(actor, SafeExporter):
        yield
        return
    with suppress(Exported):  # a single call, recorded: the command stops there
        yield
    if not actor.calls:
        click.echo("nothing to send: no Safe transaction written")
        raise click.exceptions.Exit(0)
    f = actor.write()
    first, last = f.transactions[0].tx.nonce, f.transactions[-1].tx.nonce
    nonces = f"nonce {first}" if first == last else f"nonces {first}-{last}"
    count = len(f.transactions)
    click.echo(
        f"wrote {actor.path}: {count} Safe transaction{'s' if count != 1 else ''} of {actor.safe.label()} "
        f"({nonces}), signed by {len(actor.owners)} of the {actor.safe.threshold} owners it needs; nothing sent"
    )
    click.echo(
        f"next: each owner `ledger safe sign {actor.path} --account OWNER` on their machine, then "
        f"`ledger safe exec {actor.path} --account ACCOUNT` (or `safe sign ... --exec` by the last one)"
    )
    raise click.exceptions.Exit(0)


def export_option(func):
    """``--export FILE`` beside ``--safe``: write the Safe transactions for owners on other machines."""
    return click.option(
        "--export", "export", metavar="FILE", type=click.Path(dir_okay=False),
        help="With --safe: write the Safe transaction(s) to FILE instead of sending, signed by the owners given "
        "with --account (none is fine); owners elsewhere add theirs with `ledger safe sign FILE`.",
    )(func)  # fmt: skip


def role_options(role: str):
    """``--account ACCOUNT`` (repeatable with ``--safe``) and ``--safe ADDRESS|NAME`` for a role's command."""

    def decorate(func):
        func = click.option(
            "--safe", "safe", metavar="ADDRESS|NAME",
            help=f"The Safe that holds the {role} role: the owners given with --account (repeat it, at least the "
            f"Safe's threshold) sign one Safe transaction and the last of them sends it.",
        )(func)  # fmt: skip
        return click.option(
            "--account", "account_alias", multiple=True, metavar="ACCOUNT",
            help=f"Ape account alias that sends the transaction (default: the {role} account recorded at "
            f"deployment; {ROLE_DEFAULTS_LOCAL[role]} on the local chain); with --safe, an owner who signs.",
        )(func)  # fmt: skip

    return decorate
