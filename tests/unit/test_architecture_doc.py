"""docs/architecture.md stays true to the code it describes and the code that cites it.

Code comments point to the design document as ``docs/architecture.md, "<heading>"``; a
citation of a heading that does not exist sends a reader nowhere. The defaults table is
generated from `kubefaas.limits`, so the document never retypes a number that could drift.
"""

from __future__ import annotations

import re
from pathlib import Path

from kubefaas import limits

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
CITATION = re.compile(r'docs/architecture\.md,\s+"([^"]+)"')
SCANNED_SUFFIXES = {".py", ".md", ".toml", ".yaml", ".yml", ".txt", ".tpl"}
SKIPPED_DIRS = {".git", ".venv", ".cluster", ".state", "node_modules", "__pycache__"}
# Still cite the old numbered sections until they are moved to the headings below; once
# they are, this set is empty and the check covers the whole tree.
NOT_YET_MOVED = {ROOT / "operator" / "kubefaas_operator", ROOT / "gateway" / "kubefaas_gateway"}
TABLE_BEGIN = "<!-- limits-table:begin -->"
TABLE_END = "<!-- limits-table:end -->"


def _headings() -> set[str]:
    return {
        line.lstrip("#").strip()
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


def _repository_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        if any(part in SKIPPED_DIRS or part.endswith(".egg-info") for part in path.parts):
            continue
        if path.is_file() and (path.suffix in SCANNED_SUFFIXES or path.name == "Dockerfile"):
            files.append(path)
    return files


def limits_table() -> str:
    """The markdown table of every constant of `kubefaas.limits`, in source order.

    A row's note is the constant's own trailing comment; the comment that opens a group of
    constants (between blank lines), which names the platform the numbers follow, goes
    with the group's first row.
    """
    lines = Path(limits.__file__).read_text(encoding="utf-8").splitlines()
    rows = ["| constant | value | note |", "|---|---|---|"]
    group_note = ""
    for number, line in enumerate(lines):
        if not line.strip():
            group_note = ""
            continue
        if line.startswith("#"):
            if not lines[number - 1].startswith("#"):
                group_note = ""
            group_note = f"{group_note} {line.lstrip('#').strip()}".strip()
            continue
        match = re.match(r"^([A-Z][A-Z0-9_]*): Final = .*?(?:#\s*(.*))?$", line)
        if not match:
            continue
        value = getattr(limits, match.group(1))
        shown = f"{value:,}" if isinstance(value, int) else repr(value)
        note = " ".join(n for n in (group_note, match.group(2) or "") if n).replace("|", "/")
        group_note = ""
        rows.append(f"| `{match.group(1)}` | `{shown}` | {note} |")
    return "\n".join(rows)


def test_headings_are_unique_so_a_citation_names_one_place() -> None:
    lines = [line for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    titles = [line.lstrip("#").strip() for line in lines]
    assert sorted(t for t in set(titles) if titles.count(t) > 1) == []


def test_every_citation_names_an_existing_heading() -> None:
    headings = _headings()
    dangling = []
    cited = 0
    for path in _repository_files():
        for match in CITATION.finditer(path.read_text(encoding="utf-8", errors="replace")):
            cited += 1
            # A heading may wrap onto the next line of a docstring or a comment.
            heading = " ".join(re.sub(r"\n\s*#", " ", match.group(1)).split())
            if heading != "<heading>" and heading not in headings:
                dangling.append(f"{path.relative_to(ROOT)}: {heading!r}")
    assert dangling == []
    assert cited > 0  # the pattern still matches how the tree cites the document


def test_no_numbered_design_section_is_cited() -> None:
    # The numbered sections belonged to a document that is not in the repository.
    old = re.compile(r"DESIGN §\d")
    offenders = [
        str(path.relative_to(ROOT))
        for path in _repository_files()
        if not any(folder in path.parents for folder in NOT_YET_MOVED)
        and old.search(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []


def test_the_defaults_table_is_generated_from_limits() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    expected = limits_table()
    assert table == expected, f"replace the table in {DOC} with:\n{expected}"


def test_the_readme_links_the_architecture_document() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
