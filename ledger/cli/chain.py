"""``ledger chain up|down|status``: the persistent local chain."""

from __future__ import annotations

import json

import click

from .context import App, pass_app


@click.group()
def chain():
    """Start, stop and inspect the local chain (Anvil, with its state in a file; or Hardhat's node, in
    memory only, with LEDGER_NODE=hardhat).

    \b
    Example:
      ledger chain up
      ledger chain status
      ledger chain down
    """


@chain.command()
@click.option("--reset", is_flag=True, help="Keep the current state file aside (renamed) and start an empty chain.")
@pass_app
def up(app: App, reset: bool):
    """Start the local chain in the background.

    On Anvil (the default) the chain's state is written to DATA_DIR/node/state.json every second and on
    `ledger chain down`, so balances survive restarts; a crash of the node loses at most about one
    second of blocks. With LEDGER_NODE=hardhat, Hardhat's node runs instead: it has no state file, and
    its chain is gone when it stops.

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
    loaded = f", loaded from {status.state_file}" if status.block else ""
    click.echo(
        f"local chain started (pid {status.pid}) at {status.url}: "
        f"chain id {status.chain_id}, block {status.block}{loaded}"
    )
    if node.persistent:
        click.echo(f"state: {node.state_file} (saved every second); log: {node.log_file}")
    else:
        click.echo(f"{node.name} keeps no state file: the chain is lost when it stops; log: {node.log_file}")


@chain.command()
@pass_app
def down(app: App):
    """Stop the local chain cleanly (Anvil saves its state first; a Hardhat chain is discarded).

    \b
    Example:
      ledger chain down
    """
    from ledger.chain.node import LocalNode

    node = LocalNode(app.settings)
    persistent, name = node.persistent, node.name
    if node.stop():
        if persistent:
            click.echo(f"local chain stopped; state saved in {node.state_file}")
        else:
            click.echo(f"local chain stopped; {name} keeps no state, so its chain is gone")
    else:
        click.echo("the local chain is not running; nothing to stop")


@chain.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_app
def status(app: App, as_json: bool):
    """Whether the local chain runs, its block height and chain id, and the deployments recorded.

    \b
    Example:
      ledger chain status
    """
    from ledger.chain.deployment import DeploymentStore
    from ledger.chain.node import NODE_NAMES, LocalNode

    node = LocalNode(app.settings)
    state = node.status()
    records = []
    folder = DeploymentStore(app.settings.deployments_dir)
    for path in sorted(folder.folder.glob("*.json")) if folder.folder.exists() else []:
        try:
            records.append(json.loads(path.read_text()))
        except ValueError:
            records.append({"file": str(path), "error": "unreadable"})
    if as_json:
        from .output import echo_json

        echo_json(
            {
                "running": state.running,
                "node": state.node,
                "persistent": state.persistent,
                "pid": state.pid,
                "url": state.url,
                "block": state.block,
                "chain_id": state.chain_id,
                "state_file": str(state.state_file) if state.state_file else None,
                "state_bytes": state.state_bytes,
                "note": state.note,
                "deployments": records,
            }
        )
        return
    if state.running:
        click.echo(f"running: yes ({NODE_NAMES[state.node]}, pid {state.pid}) at {state.url}")
        click.echo(f"chain id: {state.chain_id}   block: {state.block}" + (f"   ({state.note})" if state.note else ""))
    else:
        click.echo(f"running: no (start it with `ledger chain up`){'; ' + state.note if state.note else ''}")
    if not state.persistent:
        click.echo(f"state file: none ({NODE_NAMES[state.node]} keeps its chain in memory only; not persistent)")
    elif state.state_file:
        click.echo(f"state file: {state.state_file} ({state.state_bytes / 1e6:.2f} MB)")
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
