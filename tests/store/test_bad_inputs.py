"""Each bad-input kind, in both error modes: a clear one-line message, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from sa1b_pack.cli import main
from tests.store.bad_inputs import CASES, Case, run


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.group}: {c.name}")
def test_bad_input(case: Case, tmp_path: Path) -> None:
    fail, skip = run(case, tmp_path, "fail"), run(case, tmp_path, "skip")
    for outcome in (fail, skip):
        assert outcome.good_shard_packed, "a bad shard must not stop the others"
        assert outcome.leftovers == [], "a failed shard leaves no part folder"
    if case.expect == "fails":
        for outcome in (fail, skip):
            assert not outcome.ok and outcome.failed.startswith("sa_000000.tar: ")
            assert case.member in outcome.failed and "\n" not in outcome.failed
    elif case.expect == "changed":
        for outcome in (fail, skip):
            assert not outcome.ok and "--repack" in outcome.changed and outcome.images == 2 + 2
    elif case.expect == "duplicate":
        for outcome in (fail, skip):
            assert outcome.ok and outcome.images == 3 + 2
            assert outcome.duplicates == ["sa_000001: 1 image ids also in sa_000000: [100001]"]
    elif case.expect == "damaged":
        assert not fail.ok and fail.failed.startswith("sa_000000.tar: ")
        assert case.member in fail.failed and fail.damage is None
        assert skip.ok and skip.damage is not None and case.member in skip.damage[0]
        assert skip.damage[1] in fail.failed and 2 + 1 <= skip.images <= 2 + 2
    elif case.expect == "sample":
        assert not fail.ok and fail.failed.startswith(f"sa_000000.tar: {case.member}: ")
        assert "\n" not in fail.failed
        assert skip.ok and skip.images == 2 + 2  # images 1 and 3 of the bad shard, 2 good
        assert [m for m, _ in skip.errors] == [case.member]
        assert skip.errors[0][1] in fail.failed
    elif case.expect == "reported":
        for outcome in (fail, skip):
            assert outcome.ok and outcome.images == 2 + 2
            assert case.member in [m for m, _ in outcome.skipped]
    elif case.expect == "warned":
        for outcome in (fail, skip):
            assert outcome.ok and outcome.images == 2 + 3
            assert not outcome.errors and not outcome.skipped
            assert [m for m, _ in outcome.warnings] == [case.member]
            assert "\n" not in outcome.warnings[0][1]
    else:
        assert case.expect == "packed"
        for outcome in (fail, skip):
            assert outcome.ok and not outcome.errors and not outcome.skipped
            assert not outcome.warnings
            assert outcome.images == 2 + (3 if case.group == "valid" else 2)
    uncompressed = case.name.startswith("uncompressed RLE (")
    assert fail.converted == skip.converted == (4 if uncompressed else 0)


def test_cli_reports_bad_data_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = next(c for c in CASES if c.name == "a negative run")
    run(case, tmp_path, "fail")  # writes tmp_path/src
    src, dst = tmp_path / "src", tmp_path / "cli"
    assert main(["pack", str(src), str(dst), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "sa_000000.tar: sa_2.json: " in err
    assert main(["pack", str(src), str(dst), "--quiet", "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert "1 bad samples skipped" in captured.out
    assert main(["errors", str(dst)]) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert listed == [
        f"sa_000000\terror\tsa_2.json\t{run(case, tmp_path / 'x', 'skip').errors[0][1]}"
    ]
