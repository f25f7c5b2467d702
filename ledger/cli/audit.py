"""``ledger audit``: verify the whole payout history from the chain alone."""

from __future__ import annotations

from pathlib import Path

import click

from .context import App, pass_app


def _address(ctx, param, value):
    if value is None:
        return value
    from ledger.chain.connect import checked_address
    from ledger.errors import InputError

    try:
        return checked_address(value, "--ledger")
    except InputError as err:
        raise click.BadParameter(str(err).removeprefix("--ledger ")) from None


@click.command()
@click.option("--ledger", "ledger_address", metavar="ADDRESS", callback=_address,
              help="The ledger contract (default: this chain's deployment record).")  # fmt: skip
@click.option("--rpc", metavar="URL", help="JSON-RPC endpoint to read (default: the --network's node).")
@click.option("--from-block", type=click.IntRange(0), metavar="N",
              help="The ledger's deployment block (default: from the deployment record, else 0).")  # fmt: skip
@click.option("--page-size", type=click.IntRange(1), default=50_000, show_default=True, metavar="BLOCKS",
              help="Blocks per eth_getLogs request; a page the node refuses is halved and retried.")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--statement", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Reconcile this payout statement (the CSV of `ledger payouts --format csv`).")  # fmt: skip
@click.option("--full", is_flag=True,
              help="Replay from the first block, not from this machine's checkpoint (then renewed).")  # fmt: skip
@click.option("--me", "me_name", metavar="NAME", help="The statement covers only this ME.")
@click.option("--alliance", metavar="NAME", help="The statement covers only this alliance.")
@click.option("--period", "period_number", type=int, metavar="PERIOD", help="The statement covers only this period.")
@pass_app
def audit(app: App, ledger_address, rpc, from_block, page_size, fmt, statement, full, me_name, alliance,
          period_number):  # fmt: skip
    """Rebuild the ledger's history from the chain's event logs and check it.

    \b
    Checks, in code that does not call the contract:
      signatures     every agreement version (and its termination) was signed by each party's
                     signer registered at that block; ME signer changes carried the consent
      credits        every revenue event split again from the terms in force and the period's
                     cumulative revenue (tiers), with the rounding rule; compared with each credit
      exactly-once   no reference credited twice, no sequence number reused, nothing settled into
                     a closed period
      conservation   per token and per ME: settled == credited; credited - withdrawn == owed ==
                     the MEs' balances == tokens held
      statement      with --statement, every line that differs, is missing or is extra

    Needs only a JSON-RPC endpoint and the ledger's address. Exit code 0: clean; 1: findings;
    2: the audit could not run (no node, no ledger at the address, unreadable statement).

    \b
    Example:
      ledger audit
      ledger audit --statement statement-2026-11.csv --period 202611
      ledger audit --rpc https://rpc.example.org --ledger 0x5FbDB2315678afecb367f032d93F642f64180aa3 \\
                   --from-block 1200000 --page-size 2000 --format json
    """
    from ledger.chain.connect import http_endpoint
    from ledger.chain.rpc import HttpRpc
    from ledger.services.reconcile import Scope, read_statement, reconcile

    if statement is not None:
        read_statement(statement)  # an unreadable statement stops the audit before any work
    client = HttpRpc(rpc or http_endpoint(app.settings))
    chain_id = client.chain_id()
    if ledger_address is None:
        from ledger.chain.deployment import DeploymentStore
        from ledger.chain.open import recorded

        record = recorded(DeploymentStore(app.settings.deployments_dir), chain_id, remedy="give --ledger ADDRESS")
        ledger_address, from_block = record.ledger, record.block if from_block is None else from_block
    from ledger.errors import StorageUnwritable
    from ledger.services.audit import Auditor
    from ledger.services.audit.checkpoint import Checkpoint, checkpoint_path

    try:
        checkpoint = Checkpoint(checkpoint_path(app.settings.data_dir, chain_id, ledger_address, from_block or 0))
    except StorageUnwritable as err:  # the audit only reads: it replays everything, without a checkpoint
        click.echo(f"note: {err}; replaying every block without one", err=True)
        checkpoint = None
    try:
        report = Auditor(
            client, ledger_address, from_block=from_block or 0, page_size=page_size,
            confirmations=app.settings.confirmation_depth, checkpoint=checkpoint, full=full,
        ).run()  # fmt: skip
    finally:
        if checkpoint is not None:
            checkpoint.close()
    if statement is not None:
        report.counts.update(reconcile(statement, report, Scope(me_name, alliance, period_number)))
    if fmt == "json":
        from .output import echo_json

        echo_json(report.as_dict())
    else:
        from ledger.names import escape_hidden

        # Findings quote names from the chain: no control or bidi character reaches the terminal.
        click.echo("\n".join(escape_hidden(line) for line in render(report).split("\n")))
    if not report.clean:
        raise click.exceptions.Exit(1)


def render(report) -> str:
    from ledger.words import count

    from .output import table

    c = report.counts
    lines = [
        f"audit of ledger {report.ledger} on chain {report.chain_id}, blocks {report.from_block}..{report.to_block}"
        f" ({count(c.get('logs', 0), 'log')} in {count(c.get('log_pages', 0), 'page')}, {report.seconds:.2f} s)",
        (
            f"replayed blocks {report.resumed_from + 1}..{report.to_block} after this machine's checkpoint at block "
            f"{report.resumed_from} (`--full` replays everything)"
            if report.resumed_from is not None and report.resumed_from < report.to_block
            else f"no new blocks after this machine's checkpoint at block {report.resumed_from} (`--full` replays "
            f"everything)"
            if report.resumed_from is not None
            else f"replayed every block ({report.checkpoint_note or 'no checkpoint'})"
        ),
        "",
        "checked",
        f"  MEs              {c.get('mes', 0)} ({count(c.get('me_updates', 0), 'signer change')}, "
        f"{count(c.get('consents', 0), 'consent')} recovered, {c.get('mes_dissolved', 0)} dissolved)",
        f"  agreements       {c.get('agreements', 0)} with {count(c.get('versions', 0), 'version')}; "
        f"{count(c.get('activations', 0), 'activation')} and {count(c.get('terminations', 0), 'termination')}, "
        f"{count(c.get('signatures', 0), 'signature')} recovered",
        f"  revenue events   {c.get('events', 0)} in {count(c.get('batches', 0), 'batch')}, recomputed against "
        f"{count(c.get('credit_runs', 0), 'credit run')}",
        f"  periods closed   {c.get('periods_closed', 0)}",
        f"  withdrawals      {c.get('withdrawals', 0)} (by withdraw or payout runs; "
        f"{c.get('payouts_skipped', 0)} payouts skipped, balance kept)",
    ]
    if c.get("contract_signatures") or c.get("contract_signatures_unverifiable"):
        lines.append(
            f"  contract signers {c.get('contract_signatures', 0)} Safe signatures verified offline against the "
            f"owners and threshold rebuilt from the Safe's events; "
            f"{c.get('contract_signatures_unverifiable', 0)} not verifiable offline (docs/teams.md)"
        )
    if c.get("consents_unverifiable"):
        lines.append(f"  (ME updates sent through another contract, consent not read: {c['consents_unverifiable']})")
    if "statement_lines" in c:
        lines.append(
            f"  statement        {count(c['statement_lines'], 'line')}, {c['statement_lines_matching']} matching"
        )
    if report.tokens:
        names = ("settled", "credited", "withdrawn", "owed", "balances", "held")
        rows = [[t.symbol, *(t.as_dict()[n] or "-" for n in names)] for t in report.tokens]
        lines += ["", f"tokens (views at block {report.to_block})",
                  table(["token", "settled", "credited", "withdrawn", "owed", "MEs' balances", "held"], rows,
                        right={1, 2, 3, 4, 5, 6})]  # fmt: skip
    if report.roles:
        holders = [f"{role} {', '.join(who) or '(nobody)'}" for role, who in report.roles.items()]
        lines += ["", "roles: " + "; ".join(holders)]
    lines.append("")
    if report.clean:
        lines.append("result: clean, every check passed")
    else:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(report.findings_by_kind().items()))
        lines.append(f"result: {count(len(report.findings), 'finding')} ({kinds})")
        for finding in report.findings:
            where = []
            if finding.block is not None:
                where.append(f"block {finding.block}")
            if finding.tx:
                where.append(f"tx {finding.tx}")
            lines.append(f"  [{finding.kind}] {finding.message}" + (f"  ({', '.join(where)})" if where else ""))
    return "\n".join(lines)
