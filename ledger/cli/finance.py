"""``ledger period close``, ``payouts``, ``balance``, ``withdraw`` and ``token``: money after settlement."""

from __future__ import annotations

from pathlib import Path

import click

from .context import App, account_option, export_option, exporting, pass_app, role_options


@click.group()
def period():
    """Close an alliance's period: no revenue can be settled into it afterwards.

    \b
    Example:
      ledger period close smart-kitchen 202611
    """


@period.command()
@click.argument("alliance")
@click.argument("period_number", metavar="PERIOD", type=click.IntRange(1, 2**32 - 1))
@click.option("--force", is_flag=True, help="Close it even though no revenue was settled into it (closing is final).")
@role_options("finance")
@export_option
@pass_app
def close(app: App, alliance, period_number, account_alias, force, safe, export):
    """Close PERIOD of ALLIANCE (finance role). Closing is final: no revenue can be settled into the
    period afterwards. A period with no settled revenue (a typo such as 202701 for 202612, or a period
    whose revenue is still to come) is refused unless `--force`.

    \b
    Example:
      ledger period close smart-kitchen 202611
    """
    from ledger.errors import LedgerError
    from ledger.terms import CREDIT_EVENTS, DEBIT_EVENTS

    with app.session() as s:
        agreement = s.chain.agreement(alliance)
        revenue, closed = s.chain.period(agreement.id, period_number)
        if closed:
            raise LedgerError(f"period {period_number} of alliance {alliance!r} is already closed")
        if revenue == 0 and not force:
            # Periods with revenue settled into them, or reversals booked into them (which can leave a
            # period's revenue at 0): such a period had activity and is closed like any other.
            booked = {
                int(log.args["period"])
                for log in s.chain.logs(
                    [*CREDIT_EVENTS, *DEBIT_EVENTS], from_block=s.record.block, topic1=[agreement.id]
                )
            }
            if period_number not in booked:
                latest = max(booked, default=None)
                if latest is None:
                    why = "no revenue has been settled into any period of it yet"
                elif period_number > latest:
                    why = f"it is after {latest}, the latest period with settled revenue"
                else:
                    why = "no revenue was settled into it"
                raise LedgerError(
                    f"period {period_number} of alliance {alliance!r} has no settled revenue: {why}; closing is "
                    f"final, so settle its revenue first, or give --force to close it empty"
                )
        actor = s.role_actor("finance", account_alias, safe, export)
        with exporting(actor):  # --export: the Safe transaction is written for owners elsewhere, not sent
            s.chain.close_period(agreement.id, period_number, sender=actor)
        shown = s.units(revenue, agreement.token)
        click.echo(f"closed period {period_number} of {alliance!r}: revenue {shown} {s.symbol(agreement.token)}")


@click.command()
@click.option("--me", "me_name", metavar="NAME", help="Only this ME.")
@click.option("--alliance", metavar="NAME", help="Only this alliance.")
@click.option("--period", "period_number", type=int, metavar="PERIOD", help="Only this period (e.g. 202611).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "html"]), default="table",
              show_default=True)  # fmt: skip
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="With --format html: one file per ME and period in DIR (statement-PERIOD-ME.html).")  # fmt: skip
@pass_app
def payouts(app: App, me_name, alliance, period_number, fmt, output, output_dir):
    """What each ME was credited, per alliance, period and tier, read from the chain's events.

    The CSV is a statement finance can hand out (and `ledger audit --statement` can check):
    alliance,period,me_id,me,tier,token,symbol,amount,amount_base_units.

    --format html writes payout statements to send as they are: one per ME and period, each with its
    lines per alliance and tier, the total, and a chart of the ME's payouts per period; self-contained
    (no external files, prints one statement per page). With -o FILE (or on stdout) every statement
    the filters select is a section of one document; with --output-dir DIR each is a file of its own.

    \b
    Example:
      ledger payouts
      ledger payouts --me fridge --period 202611
      ledger payouts --format csv -o statement-2026-11.csv
      ledger payouts --format html --me fridge --period 202611 -o fridge-2026-11.html
      ledger payouts --format html --period 202611 --output-dir statements/
    """
    from ledger.services.reports import payouts as read_payouts

    if output_dir is not None and (fmt != "html" or output is not None):
        raise click.UsageError("--output-dir goes with --format html, instead of -o")
    with app.reader() as s:
        s.synced_index()  # the credits come from the local index, brought up to date first
        if me_name:
            s.chain.me_id_by_name(me_name)  # an unknown ME is an error, not an empty report
        if alliance:
            s.chain.agreement(alliance)
        # No payout from a block that is not final yet (the confirmation depth: 0 locally).
        final = max(0, s.chain.head() - app.settings.confirmation_depth)
        if fmt == "html":  # every period is read: a statement's chart shows the ME's earlier periods
            lines = read_payouts(s.chain, from_block=s.record.block, to_block=final, me=me_name, alliance=alliance)
            _write_statements(s, lines, period_number, final, output, output_dir)
            return
        lines = read_payouts(
            s.chain, from_block=s.record.block, to_block=final, me=me_name, alliance=alliance, period=period_number
        )
        rendered = [
            {**line.model_dump(), "symbol": s.symbol(line.token), "amount": s.units(line.amount, line.token),
             "amount_base_units": str(line.amount)}
            for line in lines
        ]  # fmt: skip
        totals_by_me: dict[tuple[str, str], int] = {}
        for line in lines:
            totals_by_me[(line.me, line.token)] = totals_by_me.get((line.me, line.token), 0) + line.amount
        totals: dict[str, int] = {}
        for line in lines:
            totals[line.token] = totals.get(line.token, 0) + line.amount
        me_totals = [
            {"me": me, "token": token, "amount": s.units(units, token), "amount_base_units": str(units)}
            for (me, token), units in sorted(totals_by_me.items())
        ]
        grand = {token: {"amount": s.units(units, token), "amount_base_units": str(units), "symbol": s.symbol(token)}
                 for token, units in totals.items()}  # fmt: skip
    text = _render(fmt, rendered, me_totals, grand)
    if output:
        output.write_text(text)
        click.echo(f"wrote {len(rendered)} payout lines to {output}")
    else:
        click.echo(text, nl=not text.endswith("\n"))


def _write_statements(s, lines, period_number, block, output, output_dir) -> None:
    from ledger.web.statements import Context, build, render

    statements = build(lines, period=period_number)
    tokens = {t: (s.symbol(t), s.decimals(t)) for t in {line.token for line in lines}}
    context = Context(chain_id=s.record.chain_id, ledger=s.chain.address, block=block, tokens=tokens)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        for statement in statements:
            (output_dir / statement.filename()).write_text(render([statement], context), encoding="utf-8")
        click.echo(f"wrote {_count(statements)} (one file per ME and period) to {output_dir}")
        return
    text = render(statements, context)
    if output:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {_count(statements)} (one per ME and period) to {output}")
    else:
        click.echo(text, nl=not text.endswith("\n"))


def _count(statements) -> str:
    return f"{len(statements)} payout statement{'' if len(statements) == 1 else 's'}"


from ledger.terms import TIER_LABELS, tier_label  # noqa: E402,F401 - the tier words have one owner

CSV_COLUMNS = ["alliance", "period", "me_id", "me", "tier", "token", "symbol", "amount", "amount_base_units"]


def _render(fmt: str, rows: list[dict], me_totals: list[dict], grand: dict) -> str:
    import json

    from .output import table, to_csv

    if fmt == "json":
        return json.dumps({"payouts": rows, "totals_by_me": me_totals, "totals": grand}, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(CSV_COLUMNS, [[row[c] for c in CSV_COLUMNS] for row in rows])
    if not rows:
        return "no payouts yet\n"
    body = table(
        ["alliance", "period", "ME", "tier", "amount", "token"],
        [[r["alliance"], r["period"], r["me"], tier_label(r["tier"]),
          r["amount"], r["symbol"]] for r in rows],
        right={1, 4},
    )  # fmt: skip
    totals = table(["ME", "total", "token"], [[t["me"], t["amount"], grand[t["token"]]["symbol"]] for t in me_totals],
                   right={1})  # fmt: skip
    grand_lines = "\n".join(f"all MEs: {g['amount']} {g['symbol']}" for g in grand.values())
    return f"{body}\n\n{totals}\n\n{grand_lines}\n"


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def balance(app: App, name, as_json):
    """What the ledger owes each ME (or ME NAME), and the check that the tokens it holds equal the
    balances it owes.

    \b
    Example:
      ledger balance
      ledger balance fridge
    """
    from ledger.services.reports import balances

    with app.reader() as s:
        s.synced_index()
        report = balances(s.chain, from_block=s.record.block, extra_tokens=[s.record.token] if s.record.token else [])
        if name:
            me_id = s.chain.me_id_by_name(name)
            report.rows = [r for r in report.rows if r.me_id == me_id]
        rows = [{"me": r.me, "me_id": r.me_id, "status": r.status, "token": r.token, "symbol": s.symbol(r.token),
                 "balance": s.units(r.balance, r.token), "balance_base_units": str(r.balance),
                 "debt": s.units(r.debt, r.token), "debt_base_units": str(r.debt)}
                for r in report.rows]  # fmt: skip
        checks = [{"token": c.token, "symbol": s.symbol(c.token), "held": s.units(c.held, c.token),
                   "owed": s.units(c.owed, c.token), "sum_of_balances": s.units(c.sum_of_balances, c.token),
                   "debt": s.units(c.debt, c.token), "sum_of_debts": s.units(c.sum_of_debts, c.token),
                   "ok": c.ok} for c in report.checks]  # fmt: skip
    if as_json:
        from .output import echo_json

        echo_json({"balances": rows, "checks": checks})
        return
    from .output import table

    if rows:
        if any(r["debt_base_units"] != "0" for r in rows):
            click.echo(table(["ME", "status", "balance", "debt", "token"],
                             [[r["me"], r["status"], r["balance"], r["debt"], r["symbol"]] for r in rows],
                             right={2, 3}))  # fmt: skip
        else:
            click.echo(table(["ME", "status", "balance", "token"],
                             [[r["me"], r["status"], r["balance"], r["symbol"]] for r in rows], right={2}))  # fmt: skip
    else:
        click.echo("no balances")
    for c in checks:
        mark = "OK" if c["ok"] else "MISMATCH"
        click.echo(f"check {c['symbol']}: ledger holds {c['held']}, owes {c['owed']}, "
                   f"balances add up to {c['sum_of_balances']}: {mark}")  # fmt: skip
        if c["debt"] != c["sum_of_debts"] or any(r["debt_base_units"] != "0" for r in rows):
            click.echo(f"debts {c['symbol']}: the MEs owe finance {c['debt']} (sum of debts {c['sum_of_debts']}), "
                       f"netted from their next credits")  # fmt: skip
    if not all(c["ok"] for c in checks):
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("name")
@account_option(help_text="The ME's payout account (Ape alias); only it may withdraw.")
@click.option("--token", metavar="ADDRESS", help="Only this token (default: every token the ME has a balance in).")
@pass_app
def withdraw(app: App, name, account_alias, token):
    """Pay ME NAME's whole balance to its payout address (sent by that address).

    \b
    Example:
      ledger withdraw fridge --account dev3
    """
    from ledger.errors import LedgerError
    from ledger.services.reports import balances

    if not account_alias:
        raise click.UsageError("give --account: the ME's payout account")
    with app.session() as s:
        me_ = s.chain.me(s.chain.me_id_by_name(name))
        sender = s.account(account_alias)
        if sender.address.lower() != me_.payout.lower():
            raise LedgerError(
                f"only the payout address of {name!r} ({me_.payout}) may withdraw; {account_alias} is {sender.address}"
            )
        tokens = [s.address(token, "--token")] if token else [
            r.token for r in balances(s.chain, from_block=s.record.block,
                                      extra_tokens=[s.record.token] if s.record.token else []).rows
            if r.me_id == me_.id and r.balance > 0
        ]  # fmt: skip
        if not tokens or all(s.chain.balance_of(me_.id, t) == 0 for t in tokens):
            raise LedgerError(f"ME {name!r} has nothing to withdraw")
        for t in tokens:
            if s.chain.balance_of(me_.id, t) == 0:
                continue
            amount = s.chain.withdraw(me_.id, t, sender=sender)
            click.echo(f"withdrew {s.units(amount, t)} {s.symbol(t)} to {me_.payout}")


@click.group()
def token():
    """The settlement test token of the local chain: finance mints it to settle revenue.

    \b
    Example:
      ledger token mint 1000000
      ledger token balance dev2
    """


@token.command()
@click.argument("amount")
@click.option("--to", "to", metavar="ACCOUNT", help="Recipient (alias or address; default: the finance account).")
@role_options("finance")
@pass_app
def mint(app: App, amount, to, account_alias, safe):
    """Mint AMOUNT test tokens (token units) to the finance account or --to.

    \b
    Example:
      ledger token mint 500000
    """
    from ledger.errors import LedgerError, named

    with app.session() as s:
        if not s.record.token:
            raise LedgerError("this deployment has no test token (only the local chain gets one)")
        minter = s.role_actor("finance", account_alias, safe)
        recipient = s.address(to, "--to") if to else minter.address
        units = s.parse_units(amount, s.record.token, "amount")
        s.chain.mint(recipient, units, sender=minter)  # simulated first: a refusal mines nothing
        held = s.chain.token_balance(s.record.token, recipient)
        symbol = s.symbol(s.record.token)
        now = s.units(held, s.record.token)
        click.echo(f"minted {amount} {symbol} to {named(recipient)}; it now holds {now} {symbol}")


@token.command(name="balance")
@click.argument("holder")
@pass_app
def token_balance(app: App, holder):
    """Test tokens held by HOLDER (alias or address).

    \b
    Example:
      ledger token balance dev2
    """
    from ledger.errors import LedgerError, named

    with app.session() as s:
        if not s.record.token:
            raise LedgerError("this deployment has no test token")
        address = s.address(holder, "HOLDER")
        held = s.chain.token_balance(s.record.token, address)
        click.echo(f"{named(address)} holds {s.units(held, s.record.token)} {s.symbol(s.record.token)}")
