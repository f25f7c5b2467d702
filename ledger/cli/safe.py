"""``ledger safe create|show``: Safe multisigs on the local chain, for teams."""

from __future__ import annotations

import click

from .context import App, pass_app


@click.group()
def safe():
    """Create and inspect Safe multisigs (Safe 1.4.1 from the pinned npm package) for teams: an ME whose
    signer is a Safe, or a role held by a Safe.

    \b
    Example:
      ledger safe create fridge-team --owner dev3 --owner dev4 --owner dev5 --threshold 2
      ledger me register fridge --signer fridge-team --payout dev3
      ledger safe show fridge-team
    """


@safe.command()
@click.argument("name")
@click.option("--owner", "owners", multiple=True, required=True, metavar="ACCOUNT",
              help="An owner: Ape alias or address; repeat for each owner.")  # fmt: skip
@click.option("--threshold", type=int, required=True, metavar="N", help="Owner signatures the Safe needs.")
@click.option("--account", "account_alias", metavar="ACCOUNT",
              help="Account that deploys (default: the first owner when it is an alias, else dev0).")  # fmt: skip
@pass_app
def create(app: App, name, owners, threshold, account_alias):
    """Deploy a Safe of OWNERS needing THRESHOLD of their signatures and record it as NAME.

    The first time on a chain it also deploys the Safe singleton, its proxy factory and the
    CompatibilityFallbackHandler (ERC-1271 for the owners' signatures), from the npm package's build
    artifacts. NAME is then accepted wherever an address is asked for (`--signer NAME`, `--safe NAME`).

    \b
    Example:
      ledger safe create fridge-team --owner dev3 --owner dev4 --owner dev5 --threshold 2
    """
    from ledger.errors import InputError
    from ledger.services import safes

    safes.check_name(name)
    if threshold < 1:
        raise InputError(f"--threshold {threshold}: must be at least 1")
    with app.session(deployed=False) as s:
        from ledger.chain.ledger import LedgerChain

        addresses = [s.address(o, "--owner") for o in owners]
        sender = s.account(account_alias or (owners[0] if owners[0][:2] != "0x" else "dev0"))
        chain = LedgerChain(None)
        made = safes.create(chain, safes.SafeStore(app.settings.data_dir), name, addresses, threshold, sender=sender)
    click.echo(f"Safe {name!r} created at {made.address}: {made.threshold} of {len(made.owners)} owners")
    for owner in made.owners:
        click.echo(f"  owner {owner}")


@safe.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def show(app: App, name, as_json):
    """A Safe's address, owners, threshold and nonce, read from the chain (NAME or address).

    \b
    Example:
      ledger safe show fridge-team
    """
    from ledger.services import safes

    with app.reader() as s:
        found = safes.resolve(s.chain, safes.SafeStore(app.settings.data_dir), name, "NAME")
    if as_json:
        from .output import echo_json

        echo_json({"name": found.name, "address": found.address, "owners": list(found.owners),
                   "threshold": found.threshold, "nonce": found.nonce})  # fmt: skip
        return
    click.echo(f"{found.label()}: {found.threshold} of {len(found.owners)} owners, nonce {found.nonce}")
    for owner in found.owners:
        click.echo(f"  owner {owner}")
