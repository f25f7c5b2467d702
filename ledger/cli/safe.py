"""``ledger safe create|show``: Safe multisigs on the local chain, for teams."""

from __future__ import annotations

import click

from .context import App, pass_app
from .output import json_option


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
        from ledger.chain.writer import LedgerWriter

        addresses = [s.address(o, "--owner") for o in owners]
        sender = s.account(account_alias or (owners[0] if owners[0][:2] != "0x" else "dev0"))
        chain = LedgerWriter(None)
        made = safes.create(chain, safes.SafeStore(app.settings.data_dir), name, addresses, threshold, sender=sender)
    click.echo(f"Safe {name!r} created at {made.address}: {made.threshold} of {len(made.owners)} owners")
    for owner in made.owners:
        click.echo(f"  owner {owner}")


@safe.command()
@click.argument("name")
@json_option
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


def _open_file(s, app: App, path):
    """The Safe transaction file at ``path``, checked against itself and this deployment, and its Safe."""
    from ledger.services import safe_tx

    f = safe_tx.load(path)
    return f, _checked(s, app, f)


def _checked(s, app: App, f):
    from ledger.errors import InputError
    from ledger.services import safe_tx, safes

    if f.chain_id != s.chain.chain_id:
        raise InputError(f"the file is for chain {f.chain_id}; this chain is {s.chain.chain_id}")
    found = safes.safe_or_none(s.chain, f.safe)
    if found is None:
        raise InputError(f"the file's Safe {f.safe} is not a Safe on this chain")
    name = next((n for n, a in safes.SafeStore(app.settings.data_dir).safes(f.chain_id).items()
                 if a.lower() == f.safe.lower()), None)  # fmt: skip
    if name:
        found = safes.SafeInfo(name, found.address, found.owners, found.threshold, found.nonce)
    safe_tx.check(s.chain, s.record, f, found)
    return found


def _describe(s, f, found, st) -> None:
    from ledger.services import safe_tx

    click.echo(f"{found.label()} on chain {f.chain_id}, ledger {f.ledger}: {found.threshold} of "
               f"{len(found.owners)} owners sign, nonce {found.nonce}")  # fmt: skip
    for i, p in enumerate(f.transactions):
        state = "ran" if i in st.done else f"{len(st.valid[i])} of {found.threshold} signatures"
        click.echo(f"  nonce {p.tx.nonce} ({state}): {safe_tx.describe(s.chain, s.record, p)}")


def _ran(f):
    """Says each Safe transaction as it lands (a later one may still be refused)."""

    def report(i, receipt) -> None:
        nonce = f.transactions[i].tx.nonce
        click.echo(f"ran Safe transaction nonce {nonce} in {receipt.tx_hash} ({receipt.gas_used:,} gas)")

    return report


@safe.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--account", "account_alias", required=True, metavar="ACCOUNT",
              help="The owner who signs (Ape alias): their key signs here and never leaves this machine.")  # fmt: skip
@click.option("--exec", "run", is_flag=True,
              help="Once the threshold is reached with this signature, send the Safe transactions "
                   "(this account pays).")  # fmt: skip
@pass_app
def sign(app: App, file, account_alias, run):
    """Sign the Safe transactions of FILE (written by a command's `--export`) as an owner, and write the
    signature into FILE. Everything in FILE is checked first (chain, ledger, Safe, each transaction's
    hash against its fields, each signature against its owner); what is signed is shown decoded from the
    transactions' data. Pass FILE on to the next owner, or to whoever runs `ledger safe exec`.

    \b
    Example:
      ledger safe sign mes.safe.json --account dev13
      ledger safe sign mes.safe.json --account dev14 --exec
    """
    from ledger.services import safe_tx

    with app.session() as s:
        f, found = _open_file(s, app, file)
        account = s.account(account_alias)
        added = safe_tx.sign(s.chain, f, found, account)
        f.save(file)
        st = safe_tx.status(s.chain, f, found)
        _describe(s, f, found, st)
        click.echo(f"signed {added} Safe transaction{'s' if added != 1 else ''} as {account.address}; wrote {file}")
        why = safe_tx.missing(f, st, found)
        if why:
            click.echo(f"waiting: {why.split(': ', 1)[1]}")
            return
        if not run:
            click.echo(f"the threshold is reached: `ledger safe exec {file} --account ACCOUNT` sends it")
            return
        safe_tx.execute(s.chain, s.record, f, found, account, progress=_ran(f))


@safe.command(name="exec")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True), metavar="FILE...")
@click.option("--account", "account_alias", required=True, metavar="ACCOUNT",
              help="The account that sends execTransaction and pays its gas (any account).")  # fmt: skip
@pass_app
def exec_(app: App, files, account_alias):
    """Run the Safe transactions of FILE once the Safe's threshold of current owners has signed each, in
    nonce order. Several FILEs are copies of one export signed by different owners: their signatures are
    merged. Everything is checked before anything is sent; a transaction the Safe has run already is
    skipped, so running it again after an interruption sends only the rest.

    \b
    Example:
      ledger safe exec mes.safe.json --account dev13
      ledger safe exec from-dev13.json from-dev14.json --account dev1
    """
    from ledger.services import safe_tx

    loaded = [(path, safe_tx.load(path)) for path in files]
    f = safe_tx.merge(loaded)
    with app.session() as s:
        found = _checked(s, app, f)
        st = safe_tx.status(s.chain, f, found)
        if not st.todo:
            click.echo(f"every Safe transaction of {files[0]} has run already; nothing sent")
            return
        if st.done:
            click.echo(f"{len(st.done)} of {len(f.transactions)} Safe transactions ran already; sending the rest")
        safe_tx.execute(s.chain, s.record, f, found, s.account(account_alias), progress=_ran(f))


@safe.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@pass_app
def review(app: App, file):
    """Show the Safe transactions of FILE decoded, who has signed each and what has run (checks FILE as
    `sign` does; sends nothing).

    \b
    Example:
      ledger safe review mes.safe.json
    """
    from ledger.services import safe_tx

    with app.reader() as s:
        f, found = _open_file(s, app, file)
        st = safe_tx.status(s.chain, f, found)
        _describe(s, f, found, st)
        why = "" if not st.todo else safe_tx.missing(f, st, found)
    click.echo(st.void or (f"waiting: {why.split(': ', 1)[1]}" if why else "ready to run" if st.todo else "all ran"))
