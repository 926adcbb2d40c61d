"""Golden outputs of `policyauth diff` in its three formats, for realistic edits of policies/.

Each case diffs a copy of a policy of policies/ (golden/NAME.old.policy, a snapshot, so that
later edits of the examples do not move these outputs) against an edited copy (NAME.policy: a
group renamed, a route added above another, a public route widened, a provider's claim path or
`token_prefix` changed, two disjoint routes swapped), and compares the text, json and markdown
outputs and the exit status with the files stored beside them. Both versions are copied into one
folder and named `old.policy` and `new.policy`, so token store paths resolve alike and the
`file:line` references do not depend on where the repository lives.

After an intended change of the output, regenerate the files with
`POLICYAUTH_REGENERATE_GOLDEN=1 pytest tests/analysis/test_diff_golden.py` and review the diff.
"""

from __future__ import annotations

import io
import os
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from policyauth.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden")
REGENERATE = os.environ.get("POLICYAUTH_REGENERATE_GOLDEN") == "1"
FORMATS = {"text": "txt", "json": "json", "markdown": "md"}

# name of the edited copy in golden/ -> (the example of policies/ it edits, the exit status)
CASES = {
    "keycloak-group-renamed": ("keycloak.policy", 1),
    "confluence-route-added-above": ("confluence.policy", 1),
    "slack-public-route-widened": ("slack.policy", 1),
    "confluence-claim-path-changed": ("confluence.policy", 1),
    "mixed-token-prefix-changed": ("mixed.policy", 1),
    "keycloak-disjoint-routes-swapped": ("keycloak.policy", 0),
}


def run(folder: Path, style: str) -> tuple[int, str]:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["diff", "old.policy", "new.policy", "--format", style])
    return code, buffer.getvalue()


@pytest.mark.parametrize("style", FORMATS)
@pytest.mark.parametrize("name", CASES)
def test_diff_output_matches_the_stored_one(tmp_path, monkeypatch, name, style):
    _, status = CASES[name]
    shutil.copy(GOLDEN / f"{name}.old.policy", tmp_path / "old.policy")
    shutil.copy(GOLDEN / f"{name}.policy", tmp_path / "new.policy")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEYCLOAK_URL", raising=False)  # env() defaults keep the output stable
    code, output = run(tmp_path, style)
    expected = GOLDEN / f"{name}.{FORMATS[style]}"
    if REGENERATE:
        expected.write_text(output, encoding="utf-8")
    assert code == status, output
    assert output == expected.read_text(encoding="utf-8")


def test_every_stored_file_belongs_to_a_case():
    """A renamed or dropped case leaves no stale expectation behind."""
    names = {p.name for p in GOLDEN.iterdir()}
    wanted = {f"{n}.policy" for n in CASES} | {f"{n}.old.policy" for n in CASES}
    wanted |= {f"{n}.{e}" for n in CASES for e in FORMATS.values()}
    assert names == wanted


def test_an_edit_that_does_not_load_exits_2_with_its_diagnostic_and_prints_nothing(
    tmp_path, monkeypatch, capsys
):
    shutil.copy(ROOT / "policies" / "slack.policy", tmp_path / "old.policy")
    broken = (ROOT / "policies" / "slack.policy").read_text(encoding="utf-8")
    (tmp_path / "new.policy").write_text(
        broken.replace(
            "route GET /status {\n  public", "route GET /status {\n  auth nobody\n  allow"
        ),
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    assert main(["diff", "old.policy", "new.policy", "--format", "markdown"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "new.policy:" in captured.err
    assert "nobody" in captured.err
    assert "Traceback" not in captured.err
