"""The documentation: its figures come from bench/results.json through one generated page, and every
link, file path, make target and Python name it gives exists."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_FOLDERS = ("contracts/", "ledger/", "scripts/", "tests/", "docs/", "forge/", "bench/")


def _perf_table():
    spec = importlib.util.spec_from_file_location("perf_table", ROOT / "scripts" / "perf_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_performance_page_is_what_bench_results_json_gives():
    perf = _perf_table()
    expected = perf.render(json.loads(perf.RESULTS.read_text()))
    assert perf.PAGE.read_text() == expected, "docs/performance.md is stale: run python scripts/perf_table.py"
    scale = perf.SCALE.read_text()
    assert scale == perf.scale_page(json.loads(perf.RESULTS.read_text()), scale), (
        "docs/scale.md's history table is stale"
    )


def test_a_figure_changed_in_bench_results_json_changes_the_performance_page():
    perf = _perf_table()
    results = json.loads(perf.RESULTS.read_text())
    results["gas_per_event"]["n5_k1000"] = 9_876.4
    results["settle"]["settle_events_per_s"] = 1_234_567
    page = perf.render(results)
    assert "**9,876 per event**" in page and "**1,234,567 events/s**" in page
    assert page != perf.PAGE.read_text()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def test_every_link_between_the_pages_reaches_a_file_and_a_heading_that_exist():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_every_repository_path_the_pages_name_exists():
    missing = []
    for page in PAGES:
        for quoted in re.findall(r"`([^`\s]+)`", page.read_text()):
            path = quoted.rstrip(".,:;)")
            if not path.startswith(TOP_FOLDERS) or "<" in path or "..." in path:
                continue
            if not (list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
                missing.append(f"{page.name}: {path}")
    assert missing == []


def test_every_make_target_the_pages_name_is_in_the_makefile():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    named = {
        (page.name, target)
        for page in PAGES  # `make X` in text, or a line of a code block that starts with it
        for target in re.findall(r"(?:`|^)make ([a-z][\w-]*)", page.read_text(), flags=re.M)
    }
    assert sorted((name, t) for name, t in named if t not in targets) == []


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name, None)
            if found is None:
                return False
        return True
    return False


def test_every_python_name_the_pages_give_can_be_imported():
    names = {
        (page.name, m.group(1))
        for page in PAGES
        for m in re.finditer(r"`(ledger(?:\.[A-Za-z_]\w*)+)`", page.read_text())
    }
    assert sorted((page, name) for page, name in names if not _resolves(name)) == []


ROOT_VALUE_OPTIONS = {"--network", "--data-dir", "--port"}


def _ledger_lines(text: str) -> list[str]:
    """Every `ledger ...` the text gives: in backticks, or as a line of a code block (comments cut)."""
    found = re.findall(r"`(ledger [^`]+)`", text)
    for block in re.findall(r"```(?:sh|bash)?\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        found += [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip().startswith("ledger ")]
    return found


def _problem(line: str) -> str | None:
    """Why ``line`` is not a command the CLI has (an unknown command, or an option it does not take)."""
    import click

    from ledger.cli import cli

    words = re.sub(r"<[^>]*>", "VALUE", line).split()[1:]  # a placeholder such as <ape network choice>
    command, ctx = cli, click.Context(cli)
    while words and words[0].startswith("-"):  # options of `ledger` itself
        option = words.pop(0)
        if option in ROOT_VALUE_OPTIONS and words:
            words.pop(0)
    while isinstance(command, click.Group) and words and re.fullmatch(r"[a-z][a-z-]*", words[0]):
        found = command.get_command(ctx, words[0])
        if found is None:
            return f"no command {words[0]!r}"
        command = found
        words.pop(0)
    taken = {
        opt for param in command.params for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])
    }
    taken |= {"--help", "-h"}
    unknown = [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in taken]
    return f"no option {unknown[0]}" if unknown else None


def test_every_ledger_command_the_pages_give_exists_with_its_options():
    wrong = []
    for page in PAGES:
        for line in _ledger_lines(page.read_text()):
            problem = _problem(line)
            if problem:
                wrong.append(f"{page.name}: {line}: {problem}")
    assert wrong == []


def test_every_setting_is_in_the_operations_page():
    from ledger.config import Settings

    page = (ROOT / "docs" / "operations.md").read_text()
    assert [name for name in Settings.model_fields if f"`LEDGER_{name.upper()}" not in page] == []
