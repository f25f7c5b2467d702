"""``ledger``: the command line for MEs, finance staff and auditors.

Each command group lives in its own module and is imported only when used, so ``ledger --help`` does
not load Ape. Errors: one line on stderr; exit 1 when an operation is refused, 2 for usage errors or
when the chain cannot be reached; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import click

from ledger.errors import InputError, LedgerError

COMMANDS = {
    "chain": ("ledger.cli.chain", "chain", "Start, stop and inspect the local chain."),
    "deploy": ("ledger.cli.deploy", "deploy", "Deploy the contracts, or reuse this chain's deployment."),
    "me": ("ledger.cli.me", "me", "Register, list, show and dissolve micro-enterprises."),
    "safe": ("ledger.cli.safe", "safe", "Create and show Safe multisigs for teams (local chain)."),
    "alliance": ("ledger.cli.alliance", "alliance", "Propose, sign, submit, amend and end alliance agreements."),
    "settle": ("ledger.cli.settle", "settle", "Settle revenue events from a CSV or JSON-lines file."),
    "period": ("ledger.cli.finance", "period", "Close an alliance's period."),
    "payouts": ("ledger.cli.finance", "payouts", "What each ME was credited, from the chain's events."),
    "balance": ("ledger.cli.finance", "balance", "What the ledger owes each ME, and the conservation check."),
    "withdraw": ("ledger.cli.finance", "withdraw", "Pay an ME's balance out to its payout address."),
    "payout": ("ledger.cli.payout", "payout", "Pay many MEs their balances at once (payout runs)."),
    "token": ("ledger.cli.finance", "token", "The local settlement test token (mint, balance)."),
    "index": ("ledger.cli.index", "index", "The local index of the chain's logs (status, rebuild)."),
    "audit": ("ledger.cli.audit", "audit", "Verify the whole payout history from the chain alone."),
    "dashboard": ("ledger.cli.dashboard", "dashboard", "Serve a read-only web page of the ledger (transparency view)."),
    "demo": ("ledger.cli.demo", "demo", "Run the smart-kitchen alliance end to end on the local chain."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        """Errors become one line and an exit code here, so every way of running the CLI (the console
        script, ``python -m ledger.cli``, click's test runner) behaves the same."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # the reader of stdout went away: every command stops the same quiet way
            ctx.exit(stdout_closed())
        except LedgerError as err:
            if _debug(ctx):
                raise
            report(err)
            ctx.exit(err.exit_code)
        except Exception as err:  # noqa: BLE001 - the last line of defence: one line, no traceback
            if _debug(ctx):
                raise
            if (storage := storage_error(err, getattr(ctx.obj, "settings", None))) is not None:
                report(storage)
                ctx.exit(storage.exit_code)
            click.echo(
                f"error: {err.__class__.__name__}: {_one_line(err)[:300]} (run with --debug for details)", err=True
            )
            ctx.exit(1)

    def format_commands(self, ctx, formatter):
        # Short help without importing every module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, _, text) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--network",
    metavar="NETWORK",
    help="'local' (the node of `ledger chain up`, default) or an Ape network such as ethereum:sepolia:node.",
)
@click.option(
    "--data-dir", type=click.Path(file_okay=False), help="Where records and node state live (LEDGER_DATA_DIR)."
)
@click.option("--port", type=int, help="Port of the local chain (LEDGER_PORT, default 8547).")
@click.option(
    "--yes", "-y", "assume_yes", is_flag=True, default=None,
    help="Keystore accounts sign without asking 'Sign: [y/N]' (LEDGER_ASSUME_YES); for unattended runs.",
)  # fmt: skip
@click.option("--debug", is_flag=True, help="Show tracebacks, Python's warnings and Ape's own log.")
@click.version_option("0.1.0", prog_name="ledger")
@click.pass_context
def cli(ctx, network, data_dir, port, assume_yes, debug):
    """ME Alliance Ledger: alliance agreements between micro-enterprises, settled on an EVM chain.

    \b
    Start here:
      ledger demo                  the smart-kitchen alliance, end to end, on the local chain
      ledger chain up              start the local chain (state kept in .ledger/node/)
      ledger deploy                deploy the contracts (or reuse them)
      ledger COMMAND --help        every command has an example

    Accounts are Ape account aliases; on the local chain dev0 ... dev19 are Anvil's funded dev
    accounts (dev0 admin, dev1 platform, dev2 finance by default). A keystore account reads its
    passphrase from APE_ACCOUNTS_<ALIAS>_PASSPHRASE; with --yes it signs without asking, so
    `ledger --yes settle FILE --account NAME` runs unattended (cron, CI).
    """
    from ledger.config import Settings

    from .context import App

    if not debug:
        quiet_warnings()
    try:
        settings = Settings.from_env(network=network, data_dir=data_dir, port=port, assume_yes=assume_yes)
    except ValueError as err:
        first = err.errors()[0]
        reason = first["msg"].removeprefix("Value error, ")
        raise click.UsageError(f"bad setting: {first['loc'][0]}: {reason}") from None
    ctx.obj = App(settings=settings, debug=debug)


def storage_error(err: BaseException, settings=None) -> LedgerError | None:
    """A file the command had to write could not be (a read-only data folder, a full disk): in words,
    naming the file and the data folder, exit 2 (it could not run; fix the folder and run again)."""
    from ledger.errors import StorageUnwritable, storage_problem

    reason = storage_problem(err)
    if reason is None:
        return None
    from pathlib import Path

    filename = str(err.filename) if isinstance(err, OSError) and err.filename else ""
    folder = Path(settings.data_dir).resolve() if settings is not None else None
    if (
        filename
        and folder is not None
        and folder != Path(filename).resolve()
        and folder not in Path(filename).resolve().parents
    ):  # a file of the user's own (a statement, an output file): no data folder advice
        return StorageUnwritable(f"cannot use {filename}: {reason}")
    where = f" {filename}" if filename else ""
    named = f" {settings.data_dir}" if settings is not None else ""
    return StorageUnwritable(
        f"cannot write{where}: {reason}; the data folder{named} must be writable and have free space "
        f"(or choose another: --data-dir, LEDGER_DATA_DIR)"
    )


def _debug(ctx) -> bool:
    return bool(getattr(ctx.obj, "debug", False))


MAX_ERROR_LINE = 400  # characters of one error line; a hostile file's 100 KB cell is cut in the middle


def _one_line(text: str) -> str:
    """One line, with control and bidi characters (from names on the chain) escaped for the terminal, and
    at most ``MAX_ERROR_LINE`` characters: the start (row and field) and the end (the reason) are kept."""
    from ledger.names import escape_hidden

    line = escape_hidden(" ".join(str(text).split()))
    if len(line) <= MAX_ERROR_LINE:
        return line
    head, tail = line[: MAX_ERROR_LINE // 2], line[-(MAX_ERROR_LINE // 2 - 60) :]
    return f"{head} ... ({len(line) - len(head) - len(tail):,} characters left out) ... {tail}"


def report(error: LedgerError) -> None:
    if isinstance(error, InputError) and len(error.problems) > 1:
        shown = error.problems[:50]
        head = f"{error.source}: " if error.source else ""
        for problem in shown:
            click.echo(f"error: {head}{_one_line(problem)}", err=True)
        more = error.total - len(shown)
        tail = f" ({more} more not shown)" if more > 0 else ""
        click.echo(f"error: {error.total} problems{tail}; nothing was changed", err=True)
    else:
        click.echo(f"error: {_one_line(error)}", err=True)


def quiet_warnings() -> None:
    """Python's warnings (deprecations inside Ape, web3 and their dependencies) are for developers:
    shown with --debug only, never mixed into a command's output."""
    warnings.simplefilter("ignore")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if not debug:
        quiet_warnings()
    try:
        code = _main(args, debug)
        sys.stdout.flush()  # a reader that has gone shows here, not as "Exception ignored" at exit
        return code
    except BrokenPipeError:
        return stdout_closed()
    except SystemExit:
        from click.utils import PacifyFlushWrapper

        if isinstance(sys.stdout, PacifyFlushWrapper):  # click met the closed pipe itself (help text)
            return stdout_closed()
        raise


def stdout_closed() -> int:
    """The reader of stdout went away (``ledger chain up | head -1``): stop quietly, as ``cat`` does.
    Python would otherwise print a BrokenPipeError when it flushes stdout at exit, so stdout is pointed
    at /dev/null first. Exit 141 (128 + SIGPIPE), the code a shell shows for a command stopped so."""
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (click's test runner): nothing will flush to a pipe
        pass
    return 141


def _main(args: list[str], debug: bool) -> int:
    try:
        result = cli.main(args=args, prog_name="ledger", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except click.exceptions.Exit as done:
        return done.exit_code
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx else "ledger"
        click.echo(f"error: {_one_line(err.format_message())} (see `{where} -h`)", err=True)
        return err.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("error: interrupted; nothing is half-applied: run the same command again to finish", err=True)
        return 130
    except LedgerError as err:
        if debug:
            raise
        report(err)
        return err.exit_code
    except Exception as err:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if debug:
            raise
        click.echo(f"error: {err.__class__.__name__}: {_one_line(err)[:300]} (run with --debug for details)", err=True)
        return 1


def run() -> None:
    sys.exit(main())
