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
