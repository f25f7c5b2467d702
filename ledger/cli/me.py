"""``ledger me ...``: micro-enterprises."""

from __future__ import annotations

import click

from ledger import words

from .context import App, export_option, exporting, pass_app, role_options
from .output import echo_listing, json_option


@click.group()
def me():
    """Register, list, show, update and dissolve micro-enterprises (MEs).

    \b
    Example:
      ledger me register fridge --signer dev3
      ledger me list
      ledger me update fridge --signer dev12 --consent-by dev3
    """


@me.command()
@click.argument("name")
@click.option(
    "--signer", required=True, metavar="ACCOUNT", help="The ME's own key: Ape alias or address; it signs alliances."
)
@click.option("--payout", metavar="ADDRESS", help="Where withdrawals go (alias or address; default: the signer).")
@click.option("--parent", metavar="NAME", help="The ME or platform this ME was spawned from.")
@role_options("platform")
@export_option
@pass_app
def register(app: App, name, signer, payout, parent, account_alias, safe, export):
    """Register ME NAME with its signer key and payout address (platform role).

    NAME is printable text of at most 32 bytes (UTF-8), stored in Unicode NFC form: no control or
    invisible characters, no space at either end, and not a lookalike of an existing ME's name (the
    same after case folding and Unicode's confusable mapping, e.g. Fridge or frіdge beside fridge).

    \b
    Example:
      ledger me register kitchen-platform --signer dev1
      ledger me register fridge --signer dev3 --parent kitchen-platform
      ledger me register oven --signer oven-team --safe platform-safe --account dev1 --account dev12
      ledger me register oven --signer dev6 --safe platform-safe --account dev1 --export oven.safe.json
    """
    from ledger.names import shown
    from ledger.services.registration import register_me

    # The deployment is read over JSON-RPC; Ape starts for the platform account's signature only.
    with app.reader() as read, app.sender(read) as s:
        signer_address = s.address(signer, "--signer")
        payout_address = s.address(payout, "--payout") if payout else signer_address
        parent_id = s.chain.me_id_by_name(parent) if parent else 0
        actor = s.role_actor("platform", account_alias, safe, export)
        with exporting(actor):
            me_id, name = register_me(s.chain, name, payout_address, signer_address, parent_id, sender=actor)
    shown_name = shown(name, quote=True)
    click.echo(f"registered ME {shown_name} as id {me_id}: signer {signer_address}, payout {payout_address}")


@me.command(name="list")
@json_option
@pass_app
def list_(app: App, as_json):
    """Every ME with its status, signer, payout address and parent.

    \b
    Example:
      ledger me list
    """
    with app.reader() as s:
        mes = s.chain.mes()
    names = {m.id: m.name for m in mes}
    data = [{**m.model_dump(), "status": m.status.name.lower()} for m in mes]
    rows = [[m.id, m.name, m.status.name.lower(), m.signer, m.payout, names.get(m.parent, "")] for m in mes]
    empty = "no MEs registered yet (`ledger me register NAME --signer ACCOUNT`)"
    echo_listing(as_json, data, ["id", "name", "status", "signer", "payout", "parent"], rows, empty=empty, right={0})


@me.command()
@click.argument("name")
@json_option
@pass_app
def show(app: App, name, as_json):
    """One ME: keys, status, balances and the alliances it is party to.

    \b
    Example:
      ledger me show fridge
    """
    from ledger.services.alliances import alliance_names

    with app.reader() as s:
        me_ = s.chain.me(s.chain.me_id_by_name(name))
        parent = s.chain.me(me_.parent).name if me_.parent else ""
        memberships = []
        tokens = set()
        for alliance in alliance_names(s.chain, s.record.block):
            agreement = s.chain.agreement(alliance)
            version = agreement.active_version or agreement.latest_version
            terms = s.chain.terms_of(agreement.id, version)
            tokens.add(terms.token)
            if me_.id in terms.parties:
                i = terms.parties.index(me_.id)
                excess = terms.excess_shares[i] if terms.target else None
                memberships.append((alliance, agreement.status.name.lower(), version, terms.shares[i], excess))
        if s.record.token:
            tokens.add(s.record.token)
        balances = {t: s.chain.balance_of(me_.id, t) for t in sorted(tokens)}
        shown = {t: s.units(b, t) for t, b in balances.items()}
        symbols = {t: s.symbol(t) for t in balances}
    if as_json:
        from .output import echo_json

        echo_json(
            {
                **me_.model_dump(),
                "status": me_.status.name.lower(),
                "parent_name": parent,
                "balances": shown,
                "alliances": [
                    {"alliance": a, "status": st, "version": v, "share_bps": sh, "excess_bps": ex}
                    for a, st, v, sh, ex in memberships
                ],
            }
        )
        return
    from ledger.names import shown as safe

    from .output import pct

    click.echo(f"ME {safe(me_.name)} (id {me_.id}), {me_.status.name.lower()}")
    click.echo(f"  signer: {me_.signer}")
    click.echo(f"  payout: {me_.payout}")
    if parent:
        click.echo(f"  parent: {safe(parent)}")
    for token, amount in shown.items():
        click.echo(f"  balance: {amount} {safe(symbols[token])} ({token})")
    if not memberships:
        click.echo("  alliances: none")
    for alliance, status, version, share, excess in memberships:
        tier = f", {pct(excess)} above target" if excess is not None else ""
        click.echo(f"  alliance {safe(alliance)}: {status}, version {version}, share {pct(share)}{tier}")


def _change_options(func):
    options = [
        click.option("--payout", metavar="ADDRESS",
                     help="The new payout address (alias or address; default: unchanged)."),
        click.option("--signer", metavar="ACCOUNT",
                     help="The new signer key (alias or address; default: unchanged)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _plan(s, name, payout, signer):
    from ledger.services.mes import plan_update

    return plan_update(
        s.chain,
        name,
        s.address(payout, "--payout") if payout else None,
        s.address(signer, "--signer") if signer else None,
    )


def _consents(s):
    from ledger.services.mes import ConsentStore

    return ConsentStore(s.settings.signatures_dir, s.record.chain_id, s.record.ledger)


@me.command()
@click.argument("name")
@_change_options
@click.option("--account", "account_alias", required=True, metavar="ACCOUNT",
              help="The ME's current signer (Ape alias): the key that consents.")  # fmt: skip
@pass_app
def consent(app: App, name, payout, signer, account_alias):
    """Consent, as ME NAME's current signer, to a new payout address and/or signer.

    Prints the change and the consent (an EIP-712 `MEUpdate` signature, single-use) and keeps it here;
    the platform then sends it with `ledger me update` (on this machine, or with `--consent 0x...` on
    its own).

    \b
    Example:
      ledger me consent fridge --payout 0x90f79bf6eb2c4f870365e785982e1f101e93b906 --account dev3
    """
    from ledger.services import mes

    with app.session() as s:
        update = _plan(s, name, payout, signer)
        click.echo(f"consenting to {update.describe()}")
        signature = mes.consent(s.chain, _consents(s), update, s.account(account_alias))
    click.echo(f"consent 0x{signature.hex()}")
    options = (f" --payout {update.payout}" if payout else "") + (f" --signer {update.signer}" if signer else "")
    click.echo(f"next, by the platform: `ledger me update {name}{options} --consent 0x{signature.hex()}`")


@me.command()
@click.argument("name")
@_change_options
@click.option(
    "--consent", "consent_hex", metavar="HEX", help="The current signer's consent, as `me consent` printed it."
)
@click.option("--consent-by", "consent_by", metavar="ACCOUNT", multiple=True,
              help="Sign the consent here with this account (the ME's current signer; when that signer is a "
                   "Safe, repeat it for owners up to its threshold), then send.")  # fmt: skip
@role_options("platform")
@export_option
@pass_app
def update(app: App, name, payout, signer, consent_hex, consent_by, account_alias, safe, export):
    """Change ME NAME's payout address and/or signer (platform role), with the consent of its current
    signer: `--consent` as `ledger me consent` printed it, `--consent-by` its account when one operator
    holds both keys, or else a consent kept here by `ledger me consent`. The consent is checked against
    the ME's current signer before anything is sent.

    \b
    Example:
      ledger me update fridge --payout 0x90f79bf6eb2c4f870365e785982e1f101e93b906 --consent 0x5f1c...1b
      ledger me update fridge --signer dev12 --consent-by dev3
    """
    from ledger.errors import InputError
    from ledger.services import mes

    if consent_hex and consent_by:
        raise InputError("give --consent or --consent-by, not both")
    with app.session() as s:
        change = _plan(s, name, payout, signer)
        store = _consents(s)
        signature = mes.parse_consent(consent_hex) if consent_hex else None
        for alias in consent_by:  # kept in the store, which submit reads (and packs, for a Safe signer)
            mes.consent(s.chain, store, change, s.account(alias))
        actor = s.role_actor("platform", account_alias, safe, export)
        with exporting(actor):
            mes.submit(s.chain, store, change, signature=signature, sender=actor)
    click.echo(f"updated {change.describe()}")


@me.command()
@click.argument("name")
@role_options("platform")
@export_option
@pass_app
def dissolve(app: App, name, account_alias, safe, export):
    """Dissolve ME NAME (platform role). Its balance stays withdrawable; alliances naming it must be
    amended before they settle again.

    \b
    Example:
      ledger me dissolve oven
    """
    with app.session() as s:
        me_id = s.chain.me_id_by_name(name)
        actor = s.role_actor("platform", account_alias, safe, export)
        with exporting(actor):
            s.chain.dissolve_me(me_id, sender=actor)
    click.echo(f"dissolved ME {name!r} (id {me_id})")


@me.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check the file against the chain and say what would be registered.")
@role_options("platform")
@export_option
@pass_app
def import_(app: App, file, dry_run, account_alias, safe, export):
    """Register every ME of FILE (platform role): CSV with the header `name,signer,payout,parent`, or JSON
    lines with those keys. `payout` empty: the signer; `parent` empty, or an ME registered before or in an
    earlier row. The whole file is checked first and every problem printed by row; nothing is sent
    then. Rows already registered with the same values are skipped, with other values refused, so
    running it again is safe.

    \b
    Example:
      ledger me import mes.csv --dry-run
      ledger me import mes.csv
      ledger me import mes.csv --safe platform-safe --account dev1 --account dev12
      ledger me import mes.csv --safe platform-safe --account dev1 --export mes.safe.json
    """
    from pathlib import Path

    from ledger.services.imports import import_mes

    with app.session() as s:
        sender = None if dry_run else s.role_actor("platform", account_alias, safe, export)
        with exporting(sender):
            summary = import_mes(s.chain, Path(file), sender=sender, dry_run=dry_run)
    new = summary.rows - summary.skipped
    if dry_run:
        click.echo(
            f"dry run: {words.count(new, 'ME', 'MEs')} would be registered, {summary.skipped} "
            f"{words.plural(summary.skipped, 'is', 'are')} registered already; nothing sent"
        )
    else:
        click.echo(
            f"registered {words.count(summary.sent, 'ME', 'MEs')}; {summary.skipped} "
            f"{words.plural(summary.skipped, 'was', 'were')} registered already (skipped)"
        )
