"""Scheduled runs with a keystore account and no terminal (cron, CI), end to end.

A real encrypted keystore (eth-account's scrypt keyfile, the format ``ape accounts import`` writes) in
this module's own Ape data folder is the finance account of a chain of its own: ``ledger deploy
--finance treasury``, funded with gas from a dev account. Every command that signs with it runs as a
subprocess whose stdin is closed, as under cron. With the passphrase in ``APE_ACCOUNTS_<alias>_PASSPHRASE``
and ``--yes`` it mints and settles without a question; without either it refuses before anything is
sent (the chain's head does not move), saying what to set, instead of Ape's prompt reading end-of-file
and the command stopping as "interrupted" (exit 130).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from decimal import Decimal

import pytest
from eth_account import Account

from ledger.chain.node import rpc

from .cli_support import InProcessCLI, LedgerCLI, Result, free_port, write_csv

PASSPHRASE = "correct horse battery staple"
ALIAS = "treasury"
OWN_VAR = f"APE_ACCOUNTS_{ALIAS}_PASSPHRASE"  # Ape's own name: the alias as it is spelled
CAPS_VAR = f"APE_ACCOUNTS_{ALIAS.upper()}_PASSPHRASE"  # the one a shell script would write


class Unattended(LedgerCLI):
    """``ledger`` as cron runs it: a subprocess with its stdin closed (no terminal, nothing to read)."""

    def run(self, *args: str, ok: bool = True, env: dict | None = None, timeout: float = 300) -> Result:
        proc = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
            preexec_fn=lambda: os.close(0),  # noqa: PLW1509 - single-threaded here; closes stdin in the child
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if ok:
            assert result.code == 0, f"ledger {' '.join(args)} -> {result.code}\n{result.text}"
        return result


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("unattended")
    ape_data = root / "ape"
    (ape_data / "accounts").mkdir(parents=True)
    key = Account.create()
    keyfile = ape_data / "accounts" / f"{ALIAS}.json"
    keyfile.write_text(json.dumps(Account.encrypt(key.key, PASSPHRASE)))
    keyfile.chmod(0o644)  # as Ape writes it under the usual umask
    cron = Unattended(root / "data", free_port())
    cron.env = {k: v for k, v in cron.env.items() if not k.startswith("APE_ACCOUNTS_")}
    cron.env["APE_DATA_FOLDER"] = str(ape_data)
    cron.run("chain", "up")
    try:
        # Only the address is needed: no passphrase is asked. Loading the keystore makes it owner-only.
        deployed = cron.run("deploy", "--finance", ALIAS)
        assert key.address in deployed.out, deployed.text
        assert f"note: {keyfile} was readable by others (0644); made it owner-only (0600)" in deployed.err
        url = f"http://127.0.0.1:{cron.port}"
        rpc(url, "eth_sendTransaction", [{"from": rpc(url, "eth_accounts")[0], "to": key.address,
                                          "value": hex(10**19)}])  # fmt: skip
        cli = InProcessCLI(cron.data_dir, cron.port)
        cli.run("me", "register", "fridge", "--signer", "dev3")
        cli.run("me", "register", "oven", "--signer", "dev4")
        cli.run("alliance", "propose", "night-run", "--party", "fridge=6000", "--party", "oven=4000")
        cli.run("alliance", "sign", "night-run", "--account", "dev3", "--account", "dev4")
        cli.run("alliance", "submit", "night-run")
        yield cron, cli, key, keyfile, url
    finally:
        cron.run("chain", "down", ok=False)


def head(url: str) -> tuple[int, str]:
    block = rpc(url, "eth_getBlockByNumber", ["latest", False])
    return int(block["number"], 16), block["hash"]


def test_a_keystore_account_settles_with_no_terminal_given_its_passphrase_variable_and_yes(world, tmp_path):
    cron, cli, key, keyfile, _ = world
    # The global --yes and Ape's own variable name; then the per-command --yes and the capitals form.
    minted = cron.run("--yes", "token", "mint", "1000", env={OWN_VAR: PASSPHRASE})
    assert f"to {key.address} ({ALIAS})" in minted.out, minted.text
    rows = [("N-1", "night-run", "10.00", 202611), ("N-2", "night-run", "2.50", 202611)]
    rows.append(("N-3", "night-run", "0.01", 202611))
    path = write_csv(tmp_path / "night.csv", rows)
    settled = cron.run("settle", str(path), "--yes", env={CAPS_VAR: PASSPHRASE})
    assert "settled 3 events in 1 batch (" in settled.out, settled.text
    for prompt in ("Sign:", "passphrase", "unlocked", "Traceback"):
        assert prompt not in settled.text, settled.text
    credited = json.loads(cli.run("payouts", "--alliance", "night-run", "--format", "json").out)["payouts"]
    assert sum(Decimal(p["amount"]) for p in credited) == Decimal("12.51")
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600  # made owner-only when deploy first loaded it
    assert stat.S_IMODE(keyfile.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (("settle", "{file}"), {CAPS_VAR: PASSPHRASE}, ["no terminal to ask on", "give --yes"]),
        (("settle", "{file}"), {}, [f"set {CAPS_VAR}", "and give --yes"]),
        pytest.param(
            ("--yes", "settle", "{file}"),
            {OWN_VAR: "not the passphrase"},
            [f"the passphrase in {OWN_VAR} does not unlock"],
            marks=pytest.mark.slow,
            id="wrong-passphrase",
        ),
    ],
    ids=["no-yes", "neither", "wrong-passphrase"],
)
def test_without_what_an_unattended_run_needs_a_keystore_run_refuses_before_sending_anything(
    world, tmp_path, args, env, words
):
    cron, _, _, _, url = world
    path = write_csv(tmp_path / "refused.csv", [("R-1", "night-run", "1.00", 202611)])
    before = head(url)
    result = cron.run(*[str(path) if a == "{file}" else a for a in args], ok=False, env=env)
    assert result.code == 2, result.text  # not 130 ("interrupted"): a setting is missing
    [line] = [line for line in result.err.splitlines() if line.strip()]
    assert line.startswith(f"error: account '{ALIAS}' ") or "does not unlock account" in line, result.text
    for word in words:
        assert word in line, line
    assert "Traceback" not in result.text and result.out == "", result.text
    assert head(url) == before  # nothing was sent
