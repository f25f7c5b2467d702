"""``ledger chain up|down|status``: the persistent local chain."""

from __future__ import annotations

import click

from .context import App, pass_app


@click.group()
def chain():
    """Start, stop and inspect the local chain (Anvil, kept durable on disk; or Hardhat's node, in
    memory only, with LEDGER_NODE=hardhat).

    \b
    Example:
      ledger chain up
      ledger chain status
      ledger chain down
    """


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@chain.command()
@click.option(
    "--reset", is_flag=True, help="Keep the current store (or old state file) aside, renamed, and start an empty chain."
)
@pass_app
def up(app: App, reset: bool):
    """Start the local chain in the background.

    On Anvil (the default) a supervisor process keeps the chain durable in DATA_DIR/node/store/: a journal
    of every block, on disk within about half a second, and snapshots. After any crash (of the node, of the
    supervisor, of the machine) `ledger chain up` restores the chain and says which block it restored;
    at most the last 2 seconds of blocks are lost (docs/local-chain.md). With LEDGER_NODE=hardhat,
    Hardhat's node runs instead: it keeps nothing, and its chain is gone when it stops.

    \b
    Example:
      ledger chain up
    """
    from ledger.chain.node import LocalNode

    node = LocalNode(app.settings)
    status, started = node.start(reset=reset)
    if not started:
        click.echo(f"the local chain already runs (pid {status.pid}) at {status.url}, block {status.block}")
        return
    click.echo(
        f"local chain started (pid {status.pid}) at {status.url}: chain id {status.chain_id}, block {status.block}"
    )
    if node.persistent:
        restored = status.restored or {}
        if restored.get("message"):
            click.echo(restored["message"])
        click.echo(
            f"store: {node.store.folder} (every block on disk within about 0.5 s; supervisor pid "
            f"{status.supervisor_pid}); log: {node.log_file}"
        )
    else:
        click.echo(f"{node.name} keeps no state: the chain is lost when it stops; log: {node.log_file}")


@chain.command()
@pass_app
def down(app: App):
    """Stop the local chain (on Anvil the store is already current: it stops at once; a Hardhat chain is
    discarded).

    \b
    Example:
      ledger chain down
    """
    from ledger.chain.node import LocalNode

    node = LocalNode(app.settings)
    persistent, name = node.persistent, node.name
    if node.stop():
        if persistent:
            block, _ = node.durable()
            click.echo(f"local chain stopped; its history is kept in {node.store.folder} (up to block {block})")
        else:
            click.echo(f"local chain stopped; {name} keeps no state, so its chain is gone")
    else:
        click.echo("the local chain is not running; nothing to stop")


@chain.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_app
def status(app: App, as_json: bool):
    """Whether the local chain runs, its block height and chain id, what is on disk, and the deployments
    recorded.

    \b
    Example:
      ledger chain status
    """
    import time

    from ledger.chain.deployment import DeploymentStore
    from ledger.chain.node import NODE_NAMES, LocalNode

    node = LocalNode(app.settings)
    state = node.status()
    records = DeploymentStore(app.settings.deployments_dir).listing()
    age = time.time() - state.durable_at if state.durable_at else None
    if as_json:
        from .output import echo_json

        echo_json(
            {
                "running": state.running,
                "node": state.node,
                "persistent": state.persistent,
                "pid": state.pid,
                "supervisor_pid": state.supervisor_pid,
                "url": state.url,
                "block": state.block,
                "chain_id": state.chain_id,
                "store": str(state.store) if state.store else None,
                "store_bytes": state.store_bytes,
                "durable_block": state.durable_block,
                "durable_age_s": round(age, 3) if age is not None else None,
                "note": state.note,
                "deployments": records,
            }
        )
        return
    if state.running:
        sup = f", supervisor pid {state.supervisor_pid}" if state.supervisor_pid else ""
        click.echo(f"running: yes ({NODE_NAMES[state.node]}, pid {state.pid}{sup}) at {state.url}")
        click.echo(f"chain id: {state.chain_id}   block: {state.block}" + (f"   ({state.note})" if state.note else ""))
    else:
        click.echo(f"running: no (start it with `ledger chain up`){'; ' + state.note if state.note else ''}")
    if not state.persistent:
        click.echo(f"store: none ({NODE_NAMES[state.node]} keeps its chain in memory only; not persistent)")
    elif state.store:
        click.echo(f"store: {state.store} ({state.store_bytes / 1e6:.2f} MB on disk: snapshots and journal)")
        if state.durable_block is not None and age is not None:
            click.echo(f"last durable block: {state.durable_block} (seen {_age(age)} ago)")
    if not records:
        click.echo("deployments: none recorded (run `ledger deploy`)")
    for record in records:
        if "error" in record:
            click.echo(f"deployment record {record['file']}: unreadable")
            continue
        token = f", token {record['token']}" if record.get("token") else ""
        click.echo(
            f"deployment on chain {record['chain_id']}: ledger {record['ledger']}{token} (block {record['block']})"
        )
