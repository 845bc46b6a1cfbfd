"""The docs hold each fact once (STYLE.md, principle 17): measured figures only on the generated
benchmarks page, README links that resolve, generated tables equal to their generators.

`make docs` (mkdocs --strict) checks the links between the guides; README.md sits outside
docs/, so its links are checked here. The figure check is textual: a measured figure is a
number with a rate, time or percent unit, or a ratio like 1.84x; design facts (format version
2, a 256 x 64 x 64 array, 1024x1024, max_open_parts 64) do not match those shapes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
GENERATED = DOCS / "benchmarks.md"  # the one page that may hold measured figures
FIGURES = {  # what a measured figure looks like; each pattern names its kind
    "ratio": r"(?<![\w.])\d+(?:\.\d+)?x(?!\w)",
    "rate": r"\d[\d,.]*\s?(?:samples|images|masks|requests|[kKMGT]i?B)/s\b",
    "time": r"(?<![\w.])\d[\d,.]*\s?(?:ns|µs|us|ms|s|min|h)\b(?![/\w])",
    "percent": r"\d(?:\.\d+)?\s?%",
}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def guides() -> list[Path]:
    """README.md and the guides: everything a reader meets except the generated page (and
    docs/decisions/, which keeps the frozen figures of its experiments with their commands)."""
    return [README, *sorted(p for p in DOCS.glob("*.md") if p != GENERATED)]


def figures(text: str) -> list[tuple[int, str, str]]:
    """(line number, kind, match) of every measured-looking figure in ``text``."""
    return [(n, kind, m.group(0)) for n, line in enumerate(text.splitlines(), 1)
            for kind, pattern in FIGURES.items() for m in re.finditer(pattern, line)]  # fmt: skip


def test_figure_patterns_catch_measurements_and_spare_design_facts() -> None:
    measured = ["2 threads give 1.84x one thread", "120 samples/s", "at 483 MB/s",
                "13.2 ms per part", "43 s per shard", "+40.1 % of RSS", "34.0%", "24x faster",
                "2.6 GB/s", "0.14 ms", "~29 h"]  # fmt: skip
    for text in measured:
        assert figures(text), text
    design = ["format version 2", "256 x 64 x 64 float16, 2 MiB per image", "(B, 3, 1024, 1024)",
              "segmentation.size 7x9 (h x w)", "<f2 256x64x64", "max_open_parts 64",
              "1/2, 1/4 or 1/8 scale", "sa_000000.tar", "8,192 rows", "~10.5 GB shards",
              "(32² and 96² px on 640 x 480)", "window 8 = 8 parts, ~84 GB",
              "--jobs 2"]  # fmt: skip
    for text in design:
        assert not figures(text), (text, figures(text))


def test_no_measured_figure_outside_the_benchmarks_page() -> None:
    found = [f"{path.relative_to(ROOT)}:{n}: {kind} {match!r}"
             for path in guides() for n, kind, match in figures(path.read_text())]  # fmt: skip
    assert not found, (
        "measured figures belong on docs/benchmarks.md only (make bench generates it); link "
        "to its anchors instead:\n" + "\n".join(found)
    )


def test_readme_is_short_and_its_links_resolve() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    local = [u for u in LINK.findall(text) if not re.match(r"[a-z]+:", u)]
    assert local, "README links to the guides"
    for url in local:
        path, _, anchor = url.partition("#")
        target = (ROOT / path).resolve()
        assert target.exists(), f"README.md: link {url!r}: no such file"
        if anchor:
            page = target.read_text()
            heads = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                     for h in re.findall(r"^#+ (.+)$", page, re.M)}  # fmt: skip
            assert anchor in heads or f'id="{anchor}"' in page, f"README.md: {url!r}: no anchor"


def test_every_guide_is_in_the_site_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    assert [p for p in pages if f" {p}" not in nav] == []


def test_bad_input_table_is_its_generators_output() -> None:
    """docs/reliability.md shows the table tests/store/bad_inputs.py prints, unedited."""
    script = str(ROOT / "tests/store/bad_inputs.py")
    out = subprocess.run([sys.executable, script], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=True).stdout  # fmt: skip
    table = [line for line in out.splitlines() if line.startswith("|")]
    page = [
        line for line in (DOCS / "reliability.md").read_text().splitlines() if line.startswith("|")
    ]  # fmt: skip (the page's only table)
    assert len(table) > 40 and page == table


def test_benchmarks_page_is_generated_from_the_newest_run(tmp_path: Path) -> None:
    """Nobody edits docs/benchmarks.md by hand: it is what report.py makes of the newest run."""
    out = tmp_path / "benchmarks.md"
    subprocess.run([sys.executable, str(ROOT / "benchmarks/report.py"), "--out", str(out)],
                   cwd=ROOT, capture_output=True, check=True, timeout=300)  # fmt: skip
    assert GENERATED.read_text() == out.read_text()
