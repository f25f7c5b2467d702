"""``ledger index``: the local index of the chain's logs (:mod:`ledger.index`)."""

from __future__ import annotations

import click

from .context import App, pass_app
from .output import json_option


@click.group()
def index():
    """The local index of the ledger's logs: settled references, credits, withdrawals, the ME registry.

    Every command brings it up to date from the logs of new blocks only, after checking that the block
    it last read is still canonical (a reorganisation rewinds it). It is never a source of truth: it
    can be rebuilt from the chain at any time, and a damaged file is rebuilt. It lives in
    DATA_DIR/index/CHAIN_ID/LEDGER.sqlite3. LEDGER_INDEX=0 turns it off (every command reads every log).

    \b
    Example:
      ledger index status
      ledger index rebuild
    """


@index.command()
@json_option
@pass_app
def status(app: App, as_json):
    """Bring the index up to date and show what it holds and the block it reaches.

    \b
    Example:
      ledger index status --json
    """
    with app.reader() as s:
        report = s.ledger_index.sync(s.chain.rpc)
        info = s.ledger_index.status()
        info["head"] = s.chain.head()
        info["last_update"] = {"blocks_read": max(0, report.to_block - report.from_block + 1) if report.pages else 0,
                               "logs": report.logs, "seconds": round(report.seconds, 3),
                               "rewound_to": report.rewound_to, "rebuilt": report.rebuilt}  # fmt: skip
    _show(info, as_json)


@index.command()
@json_option
@pass_app
def rebuild(app: App, as_json):
    """Read the whole history again from the deployment block into a new index, then replace the old.

    \b
    Example:
      ledger index rebuild
    """
    with app.reader() as s:
        report = s.ledger_index.rebuild(s.chain.rpc)
        info = s.ledger_index.status()
        info["last_update"] = {"logs": report.logs, "references": report.references, "pages": report.pages,
                               "seconds": round(report.seconds, 3)}  # fmt: skip
    _show(info, as_json)


def _show(info: dict, as_json: bool) -> None:
    if as_json:
        from .output import echo_json

        echo_json(info)
        return
    block = "nothing read yet" if info["block"] is None else f"block {info['block']} ({info['hash']})"
    click.echo(f"index {info['path']} ({info['bytes']:,} bytes)")
    click.echo(f"  ledger {info['ledger']} on chain {info['chain_id']}, from block {info['from_block']}, up to {block}")
    click.echo(f"  {info['references']:,} settled references in {info['batches']:,} batches, "
               f"{info['other_events']:,} other events")  # fmt: skip
    last = info["last_update"]
    extra = ""
    if last.get("rewound_to") is not None:
        extra = f"; rewound to block {last['rewound_to']} (reorganisation)"
    click.echo(f"  update: {last['logs']:,} logs in {last['seconds']} s{extra}")
