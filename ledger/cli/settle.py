"""``ledger settle FILE``."""

from __future__ import annotations

from pathlib import Path

import click

from ledger import words

from .context import App, pass_app, role_options


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print what each ME would receive; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (or the dry run) as JSON.")
@click.option("--yes", "-y", "assume_yes", is_flag=True,
              help="A keystore account signs without asking 'Sign: [y/N]' (same as `ledger --yes`).")  # fmt: skip
@role_options("finance")
@pass_app
def settle(app: App, file: Path, dry_run, as_json, assume_yes, account_alias, safe):
    """Settle the revenue events in FILE (CSV or JSON lines).

    \b
    CSV: a header row, then one event per row (UTF-8, BOM and CRLF allowed):
      reference,alliance,amount,period
      INV-2026-11-0001,smart-kitchen,129.90,202611
    JSON lines: {"reference": "INV-2026-11-0001", "alliance": "smart-kitchen", "amount": "129.90", "period": 202611}

    Amounts are decimal strings in token units, converted exactly with the token's decimals. The whole
    file is checked first: if any row is wrong, every problem is listed by row and nothing is settled.
    A reference is settled once, ever: running the same file again settles nothing new, and a run
    that was interrupted (Ctrl-C, node down) completes when run again.

    Unattended (cron, CI) with a keystore account: the passphrase from APE_ACCOUNTS_<ALIAS>_PASSPHRASE
    and --yes; without --yes and with no terminal it refuses before sending anything.

    \b
    Example:
      ledger settle revenue-2026-11.csv --dry-run
      ledger settle revenue-2026-11.csv
      APE_ACCOUNTS_TREASURY_PASSPHRASE=... ledger settle revenue.csv --account treasury --yes
      ledger settle revenue-2026-11.csv --safe finance-safe --account dev2 --account dev13
    """
    from ledger.errors import InputError, LedgerError, named
    from ledger.revenue_file import SpooledEvents, check_file, check_start
    from ledger.services.settlement import InsufficientFunds, Settler, Summary, preview

    if assume_yes:
        app.settings = app.settings.model_copy(update={"assume_yes": True})
    try:
        check_start(file)  # an empty file or a bad header is refused before connecting
    except InputError as err:
        raise InputError(err.problems, source=file.name) from None
    # Everything up to the first transaction reads the chain over JSON-RPC (on the local chain without
    # starting Ape: a file with nothing new, or a dry run, never needs it); Ape starts to send.
    with app.reader() as s, SpooledEvents() as spool:
        tokens: dict[str, str] = {}

        def decimals_of(name: str) -> int:
            if name not in tokens:
                tokens[name] = s.chain.agreement(name).token
            return s.decimals(tokens[name])

        # First the file alone, read once as a stream with bounded memory (a 1 GB file with a bad row
        # 48,211 is refused without loading it); its sound rows go to a spool on disk, by alliance. When
        # the file is sound, the events are checked against the chain one alliance at a time.
        problems, total = check_file(file, decimals_of, spool=spool)
        if problems:
            raise InputError(problems, source=file.name, total=total)
        index = s.usable_index() if app.settings.index else None  # None when its file cannot be written
        s.chain.index = index
        settler = Settler(s.chain, None, batch_gas=app.settings.batch_gas, from_block=s.record.block, index=index)
        try:
            prepared = settler.prepare(spool)
        except InputError as err:
            raise InputError(err.problems, source=file.name) from None
        work, skipped = prepared
        if dry_run:
            _print_preview(s, preview(s.chain, work), skipped, as_json)
            if not as_json:
                _print_blank_rows(spool.blank_rows, file)
            return
        total = sum(item.count for item in work)
        summary = Summary()
        if total == 0:
            summary.skipped = skipped
            _print_summary(s, summary, len(spool), as_json, file, spool.blank_rows)
            return
        with app.sender(s) as tx:
            settler.chain, settler.finance = tx.chain, tx.role_actor("finance", account_alias, safe)
            tx.chain.index = index
            settler.check_role()  # before the funds advice, and before the approval is sent
            try:
                settler.check_funds(work)
            except InsufficientFunds as err:
                hint = " (`ledger token mint AMOUNT`)" if err.token == s.record.token else ""
                raise LedgerError(
                    f"the finance account {named(err.holder)} holds {s.units(err.have, err.token)} "
                    f"{s.symbol(err.token)}; this file needs {s.units(err.need, err.token)}: fund it first{hint}"
                ) from None
            try:
                with click.progressbar(length=total, label="settling", file=click.get_text_stream("stderr"),
                                       show_pos=True) as bar:  # fmt: skip
                    settler.run(prepared=prepared, progress=bar.update, summary=summary)
            except KeyboardInterrupt:
                click.echo(
                    f"\ninterrupted after {summary.settled} of {words.count(total, 'event')} in "
                    f"{words.count(summary.batches, 'batch')}; "
                    f"nothing is paid twice: run the same command again to settle the rest",
                    err=True,
                )
                raise click.exceptions.Exit(130) from None
        _print_summary(s, summary, len(spool), as_json, file, spool.blank_rows)


def _print_summary(s, summary, count: int, as_json: bool, file: Path, blank: tuple[int, list[int]] = (0, [])):
    moved = {token: s.units(units, token) for token, units in summary.moved.items()}
    if as_json:
        from .output import echo_json

        data = summary.as_dict()
        data["tokens_moved"] = {token: {"amount": moved[token], "base_units": str(units)}
                                for token, units in summary.moved.items()}  # fmt: skip
        data["file"] = str(file)
        data["events_in_file"] = count
        data["empty_rows_skipped"] = blank[0]
        echo_json(data)
        return
    if summary.settled == 0:
        every = "the only event" if count == 1 else f"all {count} events"
        click.echo(f"nothing new to settle: {every} in {file.name} {words.plural(count, 'was')} settled before")
        _print_blank_rows(blank, file)
        return
    click.echo(
        f"settled {words.count(summary.settled, 'event')} in {words.count(summary.batches, 'batch')} "
        f"({summary.gas_used:,} gas); {summary.skipped} skipped as already settled"
    )
    for token, amount in moved.items():
        if summary.reversals and not summary.moved[token]:
            continue  # a file of reversals only: nothing came in; what went back to finance is said below
        click.echo(f"moved at most {amount} {s.symbol(token)} ({token}) into the ledger (less any debts the "
                   f"credits repaid)" if summary.reversals or any(summary.reversed.values()) else
                   f"moved {amount} {s.symbol(token)} ({token}) into the ledger")  # fmt: skip
    if summary.reversals:
        for token, units in summary.reversed.items():
            click.echo(
                f"of them {words.count(summary.reversals, 'reversal')}: {s.units(units, token)} {s.symbol(token)} "
                f"debited from the MEs (what their balances covered went back to finance; the rest is their debt)"
            )
    _print_blank_rows(blank, file)


def _print_blank_rows(blank: tuple[int, list[int]], file: Path) -> None:
    """The empty rows (``,,,``) the file had: skipped, and said so."""
    count, rows = blank
    if count:
        listed = ", ".join(str(r) for r in rows) + (" ..." if count > len(rows) else "")
        plural = "s" if count > 1 else ""
        click.echo(f"skipped {count} empty row{plural} of {file.name} (row{plural} {listed})")


def _print_preview(s, rows: list[dict], skipped, as_json: bool) -> None:
    from ledger.terms import tier_label, tier_order

    names = {}
    tokens = {}
    for row in rows:
        if row["me_id"] not in names:
            names[row["me_id"]] = s.chain.me(row["me_id"]).name
        if row["alliance"] not in tokens:
            tokens[row["alliance"]] = s.chain.agreement(row["alliance"]).token
    if as_json:
        from .output import echo_json

        echo_json({
            "dry_run": True,
            "events_skipped_already_settled": skipped,
            "credits": [{**row, "me": names[row["me_id"]],
                         **{k: s.units(row[k], tokens[row["alliance"]])
                            for k in ("base", "excess", "reversal", "total")},
                         "tiers": {t: s.units(v, tokens[row["alliance"]]) for t, v in row["tiers"].items()}}
                        for row in rows],
        })  # fmt: skip
        return
    from .output import table

    if not rows:
        before = f"{words.count(skipped, 'event')} {words.plural(skipped, 'was')} settled before"
        click.echo(f"dry run: nothing new to settle ({before})")
        return
    tiers: list[str] = []
    for row in rows:
        tiers += [t for t in row["tiers"] if t not in tiers]
    tiers.sort(key=tier_order)
    nested = any(row["via"] or row["passed_to"] for row in rows)
    lines = []
    for row in rows:
        token = tokens[row["alliance"]]
        alliance = row["alliance"] + (f" (via {row['via']})" if row["via"] else "")
        me = names[row["me_id"]] + (f" -> {row['passed_to']}" if row["passed_to"] else "")
        cells = [s.units(row["tiers"][t], token) if t in row["tiers"] else "" for t in tiers]
        lines.append([alliance, row["period"], me, *cells, s.units(row["reversal"], token),
                      s.units(row["total"], token)])  # fmt: skip
    headers = ["alliance", "period", "ME", *(tier_label(t) for t in tiers), "reversals", "total"]
    click.echo(table(headers, lines, right=set(range(3, len(headers))) | {1}))
    if nested:
        click.echo("ME -> ALLIANCE: the party is an alliance; its credit becomes revenue of ALLIANCE, split by "
                   "ALLIANCE's own terms (rows 'via'), in the same transaction; finance pays in once.")  # fmt: skip
    click.echo(
        f"dry run: nothing was sent. {words.count(skipped, 'event')} skipped as already settled. Each event is "
        f"split by the rotating rounding rule (docs/contract.md, Rounding rule), so every event's credits add up "
        f"to it exactly."
    )
