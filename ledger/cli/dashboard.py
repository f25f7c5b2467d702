"""``ledger dashboard``: the read-only transparency view, served on this machine."""

from __future__ import annotations

import click

from .context import App, pass_app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDRESS",
              help="Address to listen on (127.0.0.1: this machine only).")  # fmt: skip
@click.option("--port", "http_port", type=click.IntRange(1, 65535), default=8750, show_default=True,
              help="Port of the web page (the chain's port is the global --port).")  # fmt: skip
@click.option("--refresh", type=click.IntRange(0), default=30, show_default=True, metavar="SECONDS",
              help="The page reloads itself this often (0: never).")  # fmt: skip
@click.option("--runs", "recent", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="Recent settlement transactions shown.")  # fmt: skip
@click.option("--page-size", type=click.IntRange(1), default=50_000, show_default=True, metavar="BLOCKS",
              help="Blocks per eth_getLogs request.")  # fmt: skip
@pass_app
def dashboard(app: App, host, http_port, refresh, recent, page_size):
    """Serve a read-only web page with the ledger as the chain has it: every alliance with its parties,
    shares, tiers, version and status; each period's revenue against its target; what each ME was
    credited per period, with charts; the latest settlement runs; and the audit's verdict.

    Every page load reads the chain again (a load at the same final block reuses the last read). The
    page holds no keys and sends no transaction; it loads nothing from the internet. /api/overview
    serves the same data as JSON (amounts as exact decimal strings and base units).

    \b
    Example:
      ledger dashboard                      # then open http://127.0.0.1:8750
      ledger dashboard --port 8751 --refresh 0
    """
    from ledger.errors import LedgerError
    from ledger.services.audit.checkpoint import checkpoint_path
    from ledger.services.overview import LiveOverview

    with app.reader() as s:
        chain, record = s.chain, s.record
        source = LiveOverview(
            chain, chain.rpc, from_block=record.block, confirmations=app.settings.confirmation_depth,
            recent=recent, page_size=page_size, index=s.synced_index(),
            audit_checkpoint=checkpoint_path(app.settings.data_dir, record.chain_id, record.ledger, record.block),
        )  # fmt: skip
        source()  # the first read now: a chain that cannot be read is an error before anything is served
        server = _server(source, host, http_port, refresh, LedgerError)
        url = f"http://{host}:{http_port}/"
        click.echo(f"serving the ledger dashboard at {url} (read-only; Ctrl-C stops it)", err=False)
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
        click.echo("dashboard stopped")


def _server(source, host: str, port: int, refresh: int, error):
    """A waitress server on (host, port); a taken or unusable address is one line."""
    import waitress

    from ledger.web.app import create_app

    web = create_app(source, refresh=refresh)
    try:
        # One worker thread: one read of the chain at a time.
        return waitress.create_server(web, host=host, port=port, threads=1, ident="ledger-dashboard")
    except OSError as err:
        reason = "is taken by another program" if err.errno == 98 else f"cannot be used ({err.strerror or err})"
        raise error(f"{host}:{port} {reason}; choose another with --port") from None
