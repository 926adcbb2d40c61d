"""`policyauth lint`: exit codes, the exact shape of findings, JSON output, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import policyauth
from policyauth.cli import Command
from policyauth.cli import lint as lint_module
from policyauth.cli.main import COMMANDS, load_command

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"

CLEAN = """\
route GET /status {
  public
}
"""

# One error (unknown claim) and one warning (an unanchored suffix).
FINDINGS = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.preferred_username
}

route GET /a {
  auth corp
  allow if username endswith "example.com"
  allow if "admins" in groupz
}
"""


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- results ------------------------------------------------------------------------------------


def test_a_clean_file_exits_0_and_says_so_on_stderr(run, tmp_path):
    path = write(tmp_path, "ok.policy", CLEAN)
    result = run("lint", str(path))
    assert result.code == 0
    assert result.out == ""
    assert result.err == "1 file clean\n"


def test_findings_are_printed_in_full_form_and_exit_1(run, tmp_path):
    path = write(tmp_path, "bad.policy", FINDINGS)
    result = run("lint", str(path))
    assert result.code == 1
    blocks = result.out.rstrip("\n").split("\n\n")
    assert blocks == [
        f'{path}:8:30: PA203 `endswith "example.com"` also matches `evilexample.com` (warning)\n'
        '8 |   allow if username endswith "example.com"\n'
        "                                 ^^^^^^^^^^^^^\n"
        'help: anchor it at a boundary: `endswith "@example.com"` or `endswith ".example.com"`',
        f"{path}:9:24: PA111 claim `groupz` is not declared by `corp`\n"
        '9 |   allow if "admins" in groupz\n'
        "                           ^^^^^^\n"
        "help: declare it in a provider block (`groupz = $.path`), or write a string in quotes: "
        '`"groupz"`',
    ]
    assert result.err == "1 error, 1 warning in 1 file\n"


def test_a_folder_means_every_policy_below_it_sorted_and_hidden_folders_are_skipped(run, tmp_path):
    write(tmp_path, "b.policy", CLEAN)
    write(tmp_path, "a/z.policy", FINDINGS)
    write(tmp_path, "a/readme.txt", "not a policy")
    write(tmp_path, ".cache/old.policy", "route {")
    result = run("lint", "--format", "json", str(tmp_path))
    assert result.code == 1
    files = {finding["file"] for finding in json.loads(result.out)}
    assert files == {str(tmp_path / "a" / "z.policy")}


def test_summary_counts_every_file_and_each_file_once(run, tmp_path):
    one = write(tmp_path, "one.policy", CLEAN)
    write(tmp_path, "two.policy", CLEAN)
    write(tmp_path, "sub/three.policy", FINDINGS)
    result = run("lint", str(tmp_path), str(one))
    assert result.code == 1
    assert result.err == "1 error, 1 warning in 3 files\n"
    assert result.out.startswith(f"{tmp_path / 'sub' / 'three.policy'}:8:30: PA203 ")


def test_json_output_is_one_array_with_every_field(run, tmp_path):
    path = write(tmp_path, "bad.policy", FINDINGS)
    result = run("lint", "--format", "json", str(path))
    assert result.code == 1
    assert result.err == ""
    findings = json.loads(result.out)
    assert [f["code"] for f in findings] == ["PA203", "PA111"]
    assert findings[1] == {
        "code": "PA111",
        "severity": "error",
        "message": "claim `groupz` is not declared by `corp`",
        "file": str(path),
        "line": 9,
        "column": 24,
        "end_line": 9,
        "end_column": 30,
        "help": "declare it in a provider block (`groupz = $.path`), or write a string in quotes: "
        '`"groupz"`',
    }
    assert findings[0]["severity"] == "warning"


def test_json_output_for_clean_files_is_an_empty_array(run, tmp_path):
    path = write(tmp_path, "ok.policy", CLEAN)
    result = run("lint", "--format", "json", str(path))
    assert (result.code, json.loads(result.out)) == (0, [])


def test_a_file_that_is_not_utf8_is_a_finding_not_a_crash(run, tmp_path):
    path = write(tmp_path, "latin1.policy", "# caf\xe9\n".encode("latin-1"))
    result = run("lint", str(path))
    assert result.code == 1
    assert result.out == f"{path}:1:6: PA011 the file is not valid UTF-8\n"
    assert result.err == "1 error in 1 file\n"


def test_a_syntax_error_is_reported_with_its_location(run, tmp_path):
    path = write(tmp_path, "syntax.policy", "route GET /x { publik }\n")
    result = run("lint", str(path))
    assert result.code == 1
    assert result.out.splitlines()[0] == (
        f"{path}:1:16: PA002 unexpected `publik`; expected one of `auth`, `public`"
    )


def test_a_missing_env_variable_is_a_finding(run, tmp_path, monkeypatch):
    monkeypatch.delenv("POLICYAUTH_TEST_CLIENT", raising=False)
    text = (
        CLEAN
        + 'provider g {\n  preset = "google"\n  client_id = env("POLICYAUTH_TEST_CLIENT")\n}\n'
    )
    path = write(tmp_path, "env.policy", text)
    result = run("lint", str(path))
    assert result.code == 1
    assert result.out.splitlines()[0] == (
        f"{path}:6:15: PA107 environment variable `POLICYAUTH_TEST_CLIENT` is not set"
    )
    monkeypatch.setenv("POLICYAUTH_TEST_CLIENT", "123.apps.googleusercontent.com")
    assert run("lint", str(path)).code == 0


def test_an_ignore_comment_silences_a_warning_on_its_line(run, tmp_path):
    text = 'provider gh {  # policyauth: ignore[PA202]\n  preset = "github"\n}\n'
    path = write(tmp_path, "gh.policy", text + CLEAN)
    result = run("lint", str(path))
    assert (result.code, result.out) == (0, "")
    unsilenced = write(tmp_path, "gh2.policy", text.replace("  # policyauth: ignore[PA202]", ""))
    result = run("lint", str(unsilenced))
    assert result.code == 1
    assert result.out.splitlines()[0].startswith(f"{unsilenced}:1:10: PA202 ")


# --- usage and I/O errors -------------------------------------------------------------------------


def test_a_missing_path_is_a_usage_error_with_one_line(run, tmp_path):
    missing = tmp_path / "nope.policy"
    result = run("lint", str(missing))
    assert result.code == 2
    assert result.out == ""
    assert result.err == f"policyauth: cannot read {missing}: No such file or directory\n"


def test_a_missing_path_stops_before_any_output(run, tmp_path):
    good = write(tmp_path, "bad.policy", FINDINGS)
    result = run("lint", str(good), str(tmp_path / "typo"))
    assert result.code == 2
    assert result.out == ""


def test_a_folder_without_policies_is_a_usage_error(run, tmp_path):
    write(tmp_path, "notes.txt", "hello")
    result = run("lint", str(tmp_path))
    assert result.code == 2
    assert result.err == f"policyauth: no .policy files in {tmp_path}\n"


def test_no_path_is_an_argparse_usage_error(run):
    result = run("lint")
    assert result.code == 2
    assert "the following arguments are required: PATH" in result.err


def test_an_unknown_format_is_a_usage_error(run, tmp_path):
    path = write(tmp_path, "ok.policy", CLEAN)
    assert run("lint", "--format", "xml", str(path)).code == 2


def test_ctrl_c_exits_130_without_a_traceback(run, tmp_path, monkeypatch):
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(lint_module, "lint_file", interrupted)
    path = write(tmp_path, "ok.policy", CLEAN)
    result = run("lint", str(path))
    assert result.code == 130
    assert result.err == "policyauth: interrupted\n"


# --- the command line as a whole ------------------------------------------------------------------


def test_help_lists_every_subcommand(run):
    result = run("--help")
    assert result.code == 0
    for name in COMMANDS:
        assert name in result.out


def test_no_subcommand_or_an_unknown_one_is_a_usage_error(run):
    assert run().code == 2
    assert run("frobnicate").code == 2


def test_every_registered_subcommand_is_a_module_with_a_command():
    for name in COMMANDS:
        command = load_command(name)
        assert isinstance(command, Command)
        assert command.name == name


def test_the_installed_console_script_lints_the_shipped_policies():
    script = Path(sys.executable).with_name("policyauth")
    if not script.exists():
        pytest.skip("the policyauth console script is not installed (pip install -e .)")
    env = {**os.environ, "GOOGLE_CLIENT_ID": "1234567890-docs.apps.googleusercontent.com"}
    completed = subprocess.run(
        [str(script), "lint", "policies/"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    count = len(list(POLICIES.glob("*.policy")))
    assert (completed.returncode, completed.stdout) == (0, "")
    assert completed.stderr == f"{count} files clean\n"


def test_the_console_script_reports_a_missing_file_without_a_traceback(tmp_path):
    script = Path(sys.executable).with_name("policyauth")
    if not script.exists():
        pytest.skip("the policyauth console script is not installed (pip install -e .)")
    completed = subprocess.run(
        [str(script), "lint", "missing.policy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr == (
        "policyauth: cannot read missing.policy: No such file or directory\n"
    )


def test_an_ignore_comment_silences_a_checker_warning_too(run, tmp_path):
    """PA201 comes from the checker, not a lint rule; its line's ignore comment silences it."""
    text = (
        "provider local {\n"
        '  userinfo = "http://127.0.0.1:9000/userinfo"  # policyauth: ignore[PA201]\n'
        "  username = $.sub\n"
        "}\n"
    )
    path = write(tmp_path, "local.policy", text + CLEAN)
    result = run("lint", str(path))
    assert (result.code, result.out) == (0, "")
    loud = write(tmp_path, "loud.policy", text.replace("  # policyauth: ignore[PA201]", "") + CLEAN)
    result = run("lint", str(loud))
    assert result.code == 1
    assert result.out.splitlines()[0] == (
        f"{loud}:2:14: PA201 `userinfo` uses http on a loopback address (warning)"
    )
    policy = policyauth.load(path)
    assert [w.code for w in policy.warnings] == []
