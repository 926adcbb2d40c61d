"""`policyauth fmt`: rewriting, --check, --diff, exit codes, and what it refuses to do."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from policyauth.cli import fmt as fmt_module
from policyauth.cli.main import COMMANDS
from policyauth.language import ast, formatter

MESSY = 'route GET /a { auth corp allow if "a" in groups }\n'
CANONICAL = """\
route GET /a {
  auth corp
  allow if "a" in groups
}
"""
BROKEN = "route GET /a {\n  public\n"


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_fmt_is_a_registered_subcommand(run):
    assert "fmt" in COMMANDS
    assert "fmt" in run("--help").out


def test_a_canonical_file_is_left_alone_and_exits_0(run, tmp_path, monkeypatch):
    path = write(tmp_path, "ok.policy", CANONICAL)

    def no_write(*args: object) -> None:
        raise AssertionError("an unchanged file must not be written")

    monkeypatch.setattr(fmt_module, "write_atomically", no_write)
    assert run("fmt", str(path)) == (0, "", "1 file left unchanged\n")


def test_a_messy_file_is_rewritten_and_exits_0(run, tmp_path):
    path = write(tmp_path, "messy.policy", MESSY)
    result = run("fmt", str(path))
    assert result == (0, "", f"reformatted {path}\n1 file reformatted\n")
    assert path.read_text(encoding="utf-8") == CANONICAL


def test_check_lists_the_files_that_would_change_and_exits_1(run, tmp_path):
    messy = write(tmp_path, "b.policy", MESSY)
    write(tmp_path, "a.policy", CANONICAL)
    result = run("fmt", "--check", str(tmp_path))
    assert result == (1, f"{messy}\n", "1 file would be reformatted, 1 file already formatted\n")
    assert messy.read_text(encoding="utf-8") == MESSY


def test_check_exits_0_when_everything_is_canonical(run, tmp_path):
    write(tmp_path, "a.policy", CANONICAL)
    assert run("fmt", "--check", str(tmp_path)) == (0, "", "1 file already formatted\n")


def test_diff_prints_a_unified_diff_writes_nothing_and_exits_1(run, tmp_path):
    path = write(tmp_path, "messy.policy", MESSY)
    result = run("fmt", "--diff", str(path))
    assert result.code == 1
    assert result.out == (
        f"--- {path}\n"
        f"+++ {path}\n"
        "@@ -1 +1,4 @@\n"
        '-route GET /a { auth corp allow if "a" in groups }\n'
        "+route GET /a {\n"
        "+  auth corp\n"
        '+  allow if "a" in groups\n'
        "+}\n"
    )
    assert result.err == "1 file would be reformatted\n"
    assert path.read_text(encoding="utf-8") == MESSY


def test_diff_marks_a_missing_final_line_break(run, tmp_path):
    path = write(tmp_path, "messy.policy", MESSY.rstrip("\n"))
    out = run("fmt", "--diff", str(path)).out
    assert (
        '-route GET /a { auth corp allow if "a" in groups }\n\\ No newline at end of file\n' in out
    )


def test_check_and_diff_together_show_the_diff(run, tmp_path):
    path = write(tmp_path, "messy.policy", MESSY)
    result = run("fmt", "--check", "--diff", str(path))
    assert result.code == 1
    assert result.out.startswith(f"--- {path}\n")


def test_the_diff_applies_with_patch(run, tmp_path, monkeypatch):
    patch = Path("/usr/bin/patch")
    if not patch.exists():
        pytest.skip("patch(1) is not installed")
    path = write(tmp_path, "messy.policy", MESSY)
    monkeypatch.chdir(tmp_path)
    diff = run("fmt", "--diff", "messy.policy").out + "\n"
    subprocess.run([str(patch), "-p0", "-s"], input=diff, text=True, cwd=tmp_path, check=True)
    assert path.read_text(encoding="utf-8") == CANONICAL


def test_folders_are_walked_like_lint(run, tmp_path):
    write(tmp_path, "z.policy", MESSY)
    write(tmp_path, "sub/a.policy", MESSY)
    write(tmp_path, ".hidden/h.policy", MESSY)
    write(tmp_path, "notes.txt", "not a policy")
    result = run("fmt", "--check", str(tmp_path))
    assert result.out.splitlines() == [
        str(tmp_path / "sub" / "a.policy"),
        str(tmp_path / "z.policy"),
    ]


def test_a_syntax_error_is_reported_the_file_kept_and_the_others_formatted(run, tmp_path):
    broken = write(tmp_path, "a.policy", BROKEN)
    messy = write(tmp_path, "b.policy", MESSY)
    result = run("fmt", str(tmp_path))
    assert result.code == 2
    assert "PA003 unexpected end of file" in result.err
    assert "Traceback" not in result.err
    assert result.err.endswith("1 file reformatted, 1 file could not be formatted\n")
    assert broken.read_text(encoding="utf-8") == BROKEN
    assert messy.read_text(encoding="utf-8") == CANONICAL


def test_a_file_that_is_not_utf8_exits_2(run, tmp_path):
    path = write(tmp_path, "latin1.policy", b"# caf\xe9\n")
    result = run("fmt", "--check", str(path))
    assert result.code == 2
    assert f"{path}:1:6: PA011 the file is not valid UTF-8" in result.err


def test_a_missing_path_is_a_usage_error_with_one_line(run, tmp_path):
    missing = tmp_path / "missing.policy"
    result = run("fmt", str(missing))
    assert result == (2, "", f"policyauth: cannot read {missing}: No such file or directory\n")


def test_a_folder_without_policies_is_a_usage_error(run, tmp_path):
    result = run("fmt", str(tmp_path))
    assert result == (2, "", f"policyauth: no .policy files in {tmp_path}\n")


def test_changed_meaning_is_pa901_and_the_file_is_not_written(run, tmp_path, monkeypatch):
    path = write(tmp_path, "messy.policy", MESSY + "route GET /b { public }\n")
    real = formatter.render

    def drops_the_last_route(policy: ast.Policy, source: str) -> str:
        return real(attrs.evolve(policy, declarations=policy.declarations[:-1]), source)

    monkeypatch.setattr(formatter, "render", drops_the_last_route)
    result = run("fmt", str(path))
    assert result.code == 2
    assert f"{path}:2:1: PA901 formatter changed the meaning" in result.err
    assert "help: the file was left unchanged" in result.err
    assert path.read_text(encoding="utf-8") == MESSY + "route GET /b { public }\n"


def test_a_lost_comment_is_pa901(run, tmp_path, monkeypatch):
    path = write(tmp_path, "messy.policy", "# keep me\n" + MESSY)
    real = formatter.render

    def drops_comments(policy: ast.Policy, source: str) -> str:
        return real(attrs.evolve(policy, comments=()), source)

    monkeypatch.setattr(formatter, "render", drops_comments)
    result = run("fmt", "--check", str(path))
    assert result.code == 2
    assert f"{path}:1:1: PA901 formatter changed the meaning: it lost or moved this comment" in (
        result.err
    )


def test_output_that_does_not_parse_is_pa901(run, tmp_path, monkeypatch):
    path = write(tmp_path, "messy.policy", MESSY)
    monkeypatch.setattr(formatter, "render", lambda policy, source: "route {\n")
    result = run("fmt", str(path))
    assert result.code == 2
    assert "PA901 formatter changed the meaning: its output does not parse" in result.err
    assert path.read_text(encoding="utf-8") == MESSY


def test_an_unstable_result_is_pa902_and_the_file_is_not_written(run, tmp_path, monkeypatch):
    path = write(tmp_path, "messy.policy", MESSY)
    real = formatter.render
    calls: list[int] = []

    def one_more_blank_line_each_time(policy: ast.Policy, source: str) -> str:
        calls.append(1)
        return "\n" * len(calls) + real(policy, source)

    monkeypatch.setattr(formatter, "render", one_more_blank_line_each_time)
    result = run("fmt", str(path))
    assert result.code == 2
    assert f"{path}:1:1: PA902 formatter is not idempotent" in result.err
    assert path.read_text(encoding="utf-8") == MESSY


def test_windows_line_endings_are_kept(run, tmp_path):
    path = write(tmp_path, "crlf.policy", MESSY.replace("\n", "\r\n"))
    assert run("fmt", str(path)).code == 0
    assert path.read_bytes() == CANONICAL.replace("\n", "\r\n").encode()
    assert run("fmt", "--check", str(path)).code == 0


def test_a_byte_order_mark_is_dropped(run, tmp_path):
    path = write(tmp_path, "bom.policy", b"\xef\xbb\xbf" + CANONICAL.encode())
    assert run("fmt", "--check", str(path)).code == 1
    assert run("fmt", str(path)).code == 0
    assert path.read_bytes() == CANONICAL.encode()


def test_writing_keeps_permissions_and_writes_through_symlinks(run, tmp_path):
    target = write(tmp_path, "real/target.policy", MESSY)
    target.chmod(0o640)
    link = tmp_path / "link.policy"
    link.symlink_to(target)
    assert run("fmt", str(link)).code == 0
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8") == CANONICAL
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["target.policy"]


def test_a_failed_write_leaves_the_file_and_no_temporary_behind(run, tmp_path, monkeypatch):
    path = write(tmp_path, "messy.policy", MESSY)

    def full_disk(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    result = run("fmt", str(path))
    assert result.code == 2
    assert f"policyauth: cannot write {path}: No space left on device\n" in result.err
    assert path.read_text(encoding="utf-8") == MESSY
    assert [p.name for p in tmp_path.iterdir()] == ["messy.policy"]


def test_the_console_script_reports_a_broken_file_without_a_traceback(tmp_path):
    script = Path(sys.executable).with_name("policyauth")
    if not script.exists():
        pytest.skip("the policyauth console script is not installed (pip install -e .)")
    write(tmp_path, "broken.policy", BROKEN)
    completed = subprocess.run(
        [str(script), "fmt", "--check", "broken.policy"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith("broken.policy:2:9: PA003 unexpected end of file")
    assert "Traceback" not in completed.stderr
