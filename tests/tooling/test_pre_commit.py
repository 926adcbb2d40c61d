"""`.pre-commit-hooks.yaml`: `pre-commit try-repo <this repository> policyauth-lint --all-files`
works in another repository, passing clean policies and failing broken ones with the location.

pre-commit installs the hook as its users get it: it clones the repository, builds and installs
the package with its dependencies from PyPI into a fresh virtual environment (PRE_COMMIT_HOME is
a temporary folder), and runs `policyauth lint` there. `try-repo` takes only committed files
and tracked changes, so the test tries a snapshot: a git repository holding exactly this
working tree (tracked and untracked files, less what .gitignore excludes), committed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600  # the first run builds the package and installs its dependencies

CLEAN = """\
route GET /status {
  public
}
"""

BROKEN = """\
route GET /reports {
  auth corp
  allow
}
"""


def git(cwd: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-c", "user.name=policyauth tests", "-c", "user.email=tests@invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return completed.stdout


def snapshot(target: Path) -> Path:
    """A git repository at `target` whose one commit is this working tree."""
    listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    git(target, "init", "--quiet")
    git(target, "add", "--all")
    git(target, "commit", "--quiet", "--no-verify", "--message", "snapshot")
    return target


def try_repo(repository: Path, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    env.pop("PRE_COMMIT", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pre_commit",
            "try-repo",
            str(repository),
            "policyauth-lint",
            "--all-files",
            "--verbose",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_the_manifest_offers_lint_and_fmt_as_python_hooks_on_policy_files():
    hooks = {
        hook["id"]: hook for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    }
    assert set(hooks) == {"policyauth-lint", "policyauth-fmt"}
    assert hooks["policyauth-lint"]["entry"] == "policyauth lint"
    assert hooks["policyauth-fmt"]["entry"] == "policyauth fmt"
    for hook in hooks.values():
        assert hook["language"] == "python"
        assert hook["files"] == r"\.policy$"


def test_try_repo_lint_passes_a_clean_repository_and_fails_a_broken_file(tmp_path: Path):
    repository = snapshot(tmp_path / "policyauth")
    work = tmp_path / "work"
    (work / "policies").mkdir(parents=True)
    (work / "policies" / "ok.policy").write_text(CLEAN, encoding="utf-8")
    (work / "README.md").write_text("not a policy\n", encoding="utf-8")
    git(work, "init", "--quiet")
    git(work, "add", "--all")
    home = tmp_path / "pre-commit-home"

    clean = try_repo(repository, work, home)
    output = clean.stdout + clean.stderr
    assert clean.returncode == 0, output
    assert "policyauth lint" in output
    assert "Passed" in output
    assert "1 file clean" in output  # only the .policy file was passed to the hook

    (work / "policies" / "broken.policy").write_text(BROKEN, encoding="utf-8")
    git(work, "add", "--all")
    broken = try_repo(repository, work, home)
    output = broken.stdout + broken.stderr
    assert broken.returncode == 1, output
    assert "Failed" in output
    assert "policies/broken.policy:2:8: PA110 " in output, output
    assert "1 error in 2 files" in output
