"""``ledger payout ...``: payout runs (pay many MEs at once, to their own payout addresses)."""

from __future__ import annotations

import click

from ledger import words

from .context import App, export_option, exporting, pass_app


@click.group()
def payout():
    """Pay MEs their balances in batches, to each ME's own payout address.

    \b
    Example:
      ledger payout run --dry-run
      ledger payout run --alliance smart-kitchen --min 10
    """


@payout.command(name="run")
@click.option("--alliance", metavar="NAME", help="Only the parties of this alliance (any of its versions).")
@click.option("--me", "me_names", multiple=True, metavar="NAME", help="Only this ME (repeatable).")
@click.option("--min", "minimum", metavar="AMOUNT", help="Only balances of at least AMOUNT token units.")
@click.option("--token", metavar="ADDRESS", help="The token to pay (default: the deployment's token).")
@click.option("--batch-size", default=100, show_default=True, type=int, help="MEs per transaction.")
@click.option("--dry-run", is_flag=True, help="Show what each ME would receive; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--account", "account_alias", multiple=True, metavar="ACCOUNT",
              help="Ape account alias that sends the run: any account (default: the finance account); with "
                   "--safe, an owner who signs (repeat it).")  # fmt: skip
@click.option("--safe", "safe", metavar="ADDRESS|NAME",
              help="Send the run from this Safe (the finance role held by a Safe): the owners given with --account "
                   "sign one Safe transaction per batch and the last of them sends it.")  # fmt: skip
@export_option
@pass_app
def run_(app: App, alliance, me_names, minimum, token, batch_size, dry_run, as_json, account_alias, safe, export):
    """Pay every selected ME's whole balance to its registered payout address, in batches, from any
    account. Nobody can redirect money: the contract pays only the ME's own payout address. An ME whose
    payout address refuses the transfer (a contract that reverts, a token's blocklist) is skipped, keeps
    its balance and is listed; the others are paid. Running it again pays nothing twice.

    \b
    Example:
      ledger payout run --dry-run
      ledger payout run --alliance smart-kitchen --min 10 --account dev5
      ledger payout run --me fridge --me oven
      ledger payout run --safe finance-safe --account dev2 --account dev13
    """
    from ledger.errors import LedgerError
    from ledger.services import payout_run

    session = app.reader() if dry_run else app.session()
    with session as s:
        token_address = s.address(token, "--token") if token else s.record.token
        if not token_address:
            raise LedgerError("give --token: this deployment records no token")
        least = s.parse_units(minimum, token_address, "--min:") if minimum else 0
        mes = payout_run.select_mes(s.chain, names=me_names, alliance=alliance, from_block=s.record.block)
        lines = payout_run.plan(s.chain, token_address, mes, minimum=least)
        symbol = s.symbol(token_address)
        total = sum(line.amount for line in lines)
        if dry_run:
            _show_plan(s, lines, token_address, symbol, total, as_json)
            return
        outcome = None
        if lines:
            sender = s.role_actor("finance", account_alias, safe, export)
            with exporting(sender):
                outcome = payout_run.run(s.chain, sender, token_address, lines, batch_size=batch_size)
        _show_outcome(s, lines, outcome, token_address, symbol, as_json)
        if outcome and (outcome.skipped or outcome.failed):
            raise click.exceptions.Exit(1)


def _show_plan(s, lines, token, symbol, total, as_json):
    if as_json:
        from .output import echo_json

        echo_json({"dry_run": True, "token": token, "total": s.units(total, token),
                   "mes": [{"me": x.name, "id": x.me_id, "payout": x.payout, "amount": s.units(x.amount, token)}
                           for x in lines]})  # fmt: skip
        return
    if not lines:
        click.echo("dry run: nothing to pay (no selected ME has a balance at or above the minimum)")
        return
    from .output import table

    rows = [[x.me_id, x.name, x.payout, s.units(x.amount, token)] for x in lines]
    click.echo(table(["id", "me", "payout address", f"would receive ({symbol})"], rows, right={0, 3}))
    click.echo(f"dry run: {len(lines)} MEs would receive {s.units(total, token)} {symbol}; nothing was sent")


def _show_outcome(s, lines, outcome, token, symbol, as_json):
    names = {x.me_id: x.name for x in lines}
    if as_json:
        from .output import echo_json

        def rows(items):
            return [{"me": names.get(i, str(i)), "id": i, "to": to, "amount": s.units(a, token)} for i, to, a in items]

        echo_json({"token": token,
                   "paid": rows(outcome.paid) if outcome else [],
                   "skipped": rows(outcome.skipped) if outcome else [],
                   "failed": [{"me": names.get(i, str(i)), "id": i, "why": w}
                              for i, w in (outcome.failed if outcome else [])],
                   "total_paid": s.units(outcome.total_paid if outcome else 0, token),
                   "transactions": outcome.transactions if outcome else 0,
                   "gas": outcome.gas if outcome else 0})  # fmt: skip
        return
    if outcome is None:
        click.echo("nothing to pay (no selected ME has a balance at or above the minimum)")
        return
    for me_id, to, amount in outcome.skipped:
        click.echo(f"skipped {names.get(me_id, me_id)}: its payout address {to} refused {s.units(amount, token)} "
                   f"{symbol}; the ME keeps its balance (a later run, or `ledger withdraw`)")  # fmt: skip
    for me_id, why in outcome.failed:
        click.echo(f"failed {names.get(me_id, me_id)}: {why}; the ME keeps its balance")
    paid = words.count(len(outcome.paid), "ME", "MEs")
    sent = words.count(outcome.transactions, "transaction")
    click.echo(f"paid {paid} {s.units(outcome.total_paid, token)} {symbol} in {sent} ({outcome.gas:,} gas); "
               f"skipped {len(outcome.skipped)}, failed {len(outcome.failed)}")  # fmt: skip
