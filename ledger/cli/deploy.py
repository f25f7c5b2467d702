"""``ledger deploy``."""

from __future__ import annotations

import click

from .context import ROLE_DEFAULTS_LOCAL, App, pass_app


@click.command()
@click.option("--admin", metavar="ACCOUNT", help="Admin role holder (alias or address; dev0 on the local chain).")
@click.option("--platform", metavar="ACCOUNT", help="Platform role: registers MEs (dev1 on the local chain).")
@click.option("--finance", metavar="ACCOUNT", help="Finance role: settles revenue (dev2 on the local chain).")
@click.option(
    "--account", "sender_alias", metavar="ACCOUNT", help="Account that pays for the deployment (default: admin)."
)
@click.option(
    "--token-decimals",
    type=click.IntRange(0, 18),
    default=6,
    show_default=True,
    help="Decimals of the settlement test token deployed on the local chain.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the addresses as JSON.")
@pass_app
def deploy(app: App, admin, platform, finance, sender_alias, token_decimals, as_json):
    """Deploy the ledger contract (and, on the local chain, a settlement test token that finance can
    mint), or reuse the deployment recorded for this chain id.

    The role accounts given here become the defaults of later commands.

    \b
    Example:
      ledger deploy
      ledger deploy --json
      ledger --network ethereum:sepolia:node deploy --admin ops --platform platform-safe --finance finance-safe
    """
    from ledger.errors import LedgerError
    from ledger.services.deploy import deploy_or_reuse

    roles = {"admin": admin, "platform": platform, "finance": finance}
    if app.settings.is_local:
        roles = {role: value or ROLE_DEFAULTS_LOCAL[role] for role, value in roles.items()}
    missing = [f"--{role}" for role, value in roles.items() if not value]
    if missing:
        raise LedgerError(f"give {', '.join(missing)} (the accounts or addresses that hold those roles)")
    with app.session(deployed=False) as session:
        addresses = {role: session.address(value, f"--{role}") for role, value in roles.items()}
        sender_alias = sender_alias or roles["admin"]
        sender = session.account(sender_alias)
        aliases = {role: value for role, value in roles.items() if not value.startswith("0x")}
        chain, record, reused = deploy_or_reuse(
            session.store,
            admin=addresses["admin"],
            platform=addresses["platform"],
            finance=addresses["finance"],
            sender=sender,
            token_decimals=token_decimals if app.settings.is_local else None,
            aliases=aliases,
        )
    if as_json:
        from .output import echo_json

        echo_json({**record.model_dump(), "reused": reused})
        return
    verb = "reused the deployment" if reused else "deployed"
    click.echo(f"{verb} on chain {record.chain_id}: ledger {record.ledger} (block {record.block})")
    if record.token:
        click.echo(f"settlement test token: {record.token} (finance can mint it: `ledger token mint AMOUNT`)")
    click.echo(f"roles: admin {record.admin}, platform {record.platform}, finance {record.finance}")
