"""Opening a deployment (``ledger.chain.open``): one module reads the deployment records and checks them
against the chain, with the same sentences whichever way a command connects. And the package's layers
import one way: config/models/errors -> chain -> services -> web -> cli; inside the chain layer only the
write side (``writer.py``, and ``connect.py`` which connects Ape) uses Ape, the read side never."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.chain.deployment import DeploymentRecord, DeploymentStore
from ledger.chain.open import open_over_rpc, recorded
from ledger.errors import ChainUnavailable

PACKAGE = Path(__file__).resolve().parents[1] / "ledger"
LAYERS = {"chain": 1, "index": 1, "services": 2, "web": 3, "cli": 4}  # the rest of ledger/ is layer 0
NO_CODE = "0x00000000000000000000000000000000DeaDBeef"


def test_a_missing_record_names_the_chain_the_folder_and_what_to_do(tmp_path):
    store = DeploymentStore(tmp_path)
    with pytest.raises(ChainUnavailable) as info:
        recorded(store, 31337, remedy="give --ledger ADDRESS")
    assert str(info.value) == f"no deployment recorded for chain 31337 in {tmp_path}; give --ledger ADDRESS"
    with pytest.raises(ChainUnavailable) as info:
        recorded(store, 5)
    assert str(info.value) == f"no deployment recorded for chain 5 in {tmp_path}; deploy first"


def test_chain_status_lists_a_record_with_fields_missing_as_unreadable_instead_of_failing(tmp_path):
    from click.testing import CliRunner

    from ledger.cli import cli

    (tmp_path / "deployments").mkdir()
    (tmp_path / "deployments" / "1.json").write_text('{"chain_id": 1, "ledger": "0xabc"}')
    (tmp_path / "deployments" / "5.json").write_text("{not json")
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "--port", "1", "chain", "status"])
    assert result.exit_code == 0, result.output
    assert f"deployment record {tmp_path / 'deployments' / '1.json'}: unreadable" in result.output
    assert f"deployment record {tmp_path / 'deployments' / '5.json'}: unreadable" in result.output


@pytest.mark.http_node("opens the deployment over the node's HTTP endpoint")
def test_over_json_rpc_a_record_opens_a_read_only_ledger_and_one_without_code_says_deploy_again(
    tmp_path, ledger, admin, platform, finance
):
    import ape

    url = ape.chain.provider.http_uri
    store = DeploymentStore(tmp_path)
    chain_id = ledger.chain_id
    with pytest.raises(ChainUnavailable) as info:
        open_over_rpc(store, url)
    assert str(info.value) == f"no deployment recorded for chain {chain_id} in {tmp_path}; deploy first"

    record = DeploymentRecord(
        chain_id=chain_id, ledger=ledger.address, token=ledger.token.address, block=0, deployer=admin.address,
        admin=admin.address, platform=platform.address, finance=finance.address,
    )  # fmt: skip
    store.save(record)
    opened, found = open_over_rpc(store, url)
    assert found == record
    assert opened.address == ledger.address and opened.chain_id == chain_id
    assert opened.head() == ape.chain.blocks.head.number  # it reads over JSON-RPC

    store.save(record.model_copy(update={"ledger": NO_CODE}))
    with pytest.raises(ChainUnavailable) as info:
        open_over_rpc(store, url)
    assert str(info.value) == f"chain {chain_id} has no contract at {NO_CODE} (a fresh chain?); deploy again"


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at module level or inside functions, relative ones made absolute."""
    here = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: -node.level] if node.level else []
            names.append(".".join(base + ([node.module] if node.module else [])))
    return names


def test_no_module_of_the_ledger_package_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        folder = path.relative_to(PACKAGE).parts
        own = LAYERS.get(folder[0], 0) if len(folder) > 1 else 0
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "ledger" and len(parts) > 1 and LAYERS.get(parts[1], 0) > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert upward == []
    assert [name for name in _imports(PACKAGE / "config.py") if name.startswith("ledger")] == []


def test_the_command_line_reaches_ape_and_the_node_only_through_the_chain_layer():
    direct = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for folder in ("cli", "web")
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in ("ape", "web3")
    ]
    assert direct == []


def test_only_the_chain_writer_and_the_connection_import_ape_and_the_reader_needs_neither_ape_nor_web3():
    users = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] == "ape" for name in _imports(path))
    )
    assert users == ["chain/connect.py", "chain/writer.py"]
    reader = _imports(PACKAGE / "chain" / "reader.py")
    assert [name for name in reader if name.split(".")[0] in ("ape", "web3") or name == "ledger.chain.writer"] == []
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, ledger.chain.reader, ledger.chain.transact, ledger.services.audit; "
         "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ape', 'web3')))"],
        capture_output=True, text=True, check=True, cwd=PACKAGE.parent,
    )  # fmt: skip
    assert loaded.stdout.strip() == "[]"
