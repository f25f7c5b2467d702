"""Error lines of the ``ledger`` command for input an attacker controls: whatever the file holds, each
problem is one short line that keeps the row and field at its start and the reason at its end."""

from __future__ import annotations

from ledger.cli import MAX_ERROR_LINE, report
from ledger.errors import InputError


def test_an_error_naming_a_huge_cell_is_one_short_line_that_keeps_the_row_and_the_reason(capsys):
    # a 100,000-byte name in an ME file was echoed whole: 100 KB on one error line
    name = "a" * 100_000
    report(InputError([f"row 2: name: ME name '{name}' is 100000 bytes; the limit is 64", "row 3: signer is missing"]))
    report(InputError(f"row 7: alliance '{name}' is longer than 32 bytes"))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines
    assert all(len(line) <= MAX_ERROR_LINE + 80 for line in lines), [len(line) for line in lines]
    assert lines[0].startswith("error: row 2: name: ME name 'aaa") and lines[0].endswith("the limit is 64")
    assert "characters left out" in lines[0]
    assert lines[1] == "error: row 3: signer is missing"
    assert lines[2] == "error: 2 problems; nothing was changed"
    assert lines[3].startswith("error: row 7: alliance 'aaa") and lines[3].endswith("longer than 32 bytes")


def test_chain_up_says_the_supervisor_was_killed_rather_than_quoting_its_log(tmp_path):
    # a supervisor killed while restoring was reported as "exited with code -9: ... supervisor: starting"
    from ledger.chain.node import LocalNode
    from ledger.config import Settings

    node = LocalNode(Settings.from_env(data_dir=str(tmp_path)))
    node.folder.mkdir(parents=True)
    node.log_file.write_text("2026-12-06 08:39:30 supervisor: starting (pid 5110)\n")
    text = node._start_failure(-9)
    assert text.startswith("the local chain's supervisor was killed (SIGKILL) before the chain was ready"), text
    assert "exited with code -9" not in text and "supervisor: starting" not in text


def test_a_file_that_cannot_be_written_is_named_and_only_the_data_folder_gets_the_data_folder_advice(tmp_path):
    import errno

    from ledger.cli import storage_error
    from ledger.config import Settings

    settings = Settings.from_env(data_dir=str(tmp_path / "data"))
    inside = storage_error(OSError(errno.EROFS, "Read-only file system", str(tmp_path / "data" / "index")), settings)
    assert str(inside) == (f"cannot write {tmp_path / 'data' / 'index'}: Read-only file system; the data folder "
                           f"{settings.data_dir} must be writable and have free space (or choose another: "
                           f"--data-dir, LEDGER_DATA_DIR)")  # fmt: skip
    assert inside.exit_code == 2
    mine = storage_error(OSError(errno.EACCES, "Permission denied", str(tmp_path / "statement.csv")), settings)
    assert str(mine) == f"cannot use {tmp_path / 'statement.csv'}: Permission denied"
    assert storage_error(OSError(errno.ECONNREFUSED, "Connection refused"), settings) is None
    assert storage_error(ValueError("x"), settings) is None


def test_a_data_folder_setting_that_names_a_file_is_a_bad_setting(tmp_path):
    # LEDGER_DATA_DIR=a-file gave "error: NotADirectoryError: [Errno 20] Not a directory: 'a-file/node'"
    import pytest
    from click.testing import CliRunner

    from ledger.cli import main
    from ledger.config import Settings

    file = tmp_path / "a-file"
    file.write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        Settings.from_env(data_dir=str(file))
    with CliRunner(mix_stderr=False).isolation(env={"LEDGER_DATA_DIR": str(file)}) as (_, err):
        assert main(["chain", "status"]) == 2
    assert f"bad setting: data_dir: {file} is a file, not a folder" in err.getvalue().decode()


def test_a_settled_file_of_reversals_only_does_not_claim_it_moved_at_most_nothing_into_the_ledger(capsys, tmp_path):
    # it printed "moved at most 0.000000 ATD (...) into the ledger (less any debts the credits repaid)"
    from ledger.cli.settle import _print_summary
    from ledger.services.settlement import Summary

    class Session:
        @staticmethod
        def units(amount, token):
            return f"{amount / 10**6:.6f}"

        @staticmethod
        def symbol(token):
            return "ATD"

    token = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
    only = Summary(settled=1, batches=1, gas_used=182_197, moved={token: 0}, reversals=1, reversed={token: 149_560_000})
    _print_summary(Session, only, 1, False, tmp_path / "returns.csv")
    out = capsys.readouterr().out
    assert "moved" not in out and "0.000000" not in out, out
    assert "of them 1 reversal: 149.560000 ATD debited from the MEs" in out
    mixed = Summary(settled=3, batches=2, moved={token: 5_000_000}, reversals=1, reversed={token: 1_000_000})
    _print_summary(Session, mixed, 3, False, tmp_path / "mixed.csv")
    assert "moved at most 5.000000 ATD" in capsys.readouterr().out
