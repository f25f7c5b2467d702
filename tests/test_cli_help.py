"""The command line without a chain: help for every command, and what needs no node."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from ledger.cli import COMMANDS, cli, main


def every_command() -> list[tuple[str, ...]]:
    paths = []

    def walk(command: click.Command, path: tuple[str, ...]):
        paths.append(path)
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), (*path, name))

    walk(cli, ())
    return paths


def test_the_command_table_lists_every_group():
    assert {path[0] for path in every_command() if path} == set(COMMANDS)


@pytest.mark.parametrize("path", every_command(), ids=lambda p: " ".join(p) or "ledger")
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Example" in result.output or "Start here" in result.output, result.output


def test_ledger_help_does_not_import_ape():
    import subprocess
    import sys

    code = "import sys; from ledger.cli import main; main(['--help']); print('ape' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_chain_status_without_a_chain_says_how_to_start_one(tmp_path):
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--port", "1", "chain", "status"])
    assert result.exit_code == 0, result.output
    assert "running: no (start it with `ledger chain up`)" in result.output
    assert "deployments: none recorded" in result.output


def test_stopping_a_chain_that_does_not_run_is_not_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "chain", "down"])
    assert result.exit_code == 0 and "not running" in result.output


def test_an_empty_settlement_file_is_refused_before_any_connection(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("")
    assert main(["--data-dir", str(tmp_path), "--port", "1", "settle", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: empty.csv: the file is empty; expected a header row reference,alliance,amount,period"


def test_a_usage_mistake_is_one_line_with_exit_code_2(capsys):
    assert main(["alliance", "propose"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Missing argument 'NAME'") and "\n" not in err


def test_a_bad_setting_is_a_usage_error(capsys):
    assert main(["--port", "70000", "chain", "status"]) == 2
    assert "port" in capsys.readouterr().err
