"""The grammar ships inside the wheel and is read from there, not from a source checkout.

Builds a wheel of this project, installs it into a temporary folder, and imports policyauth
from it in a fresh interpreter whose working directory and import path hold no source tree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent(
    """
    import json, sys
    import policyauth
    from policyauth.language.parser import grammar_location

    policy = policyauth.loads(
        'route GET /status {\\n  public\\n}\\n'
        'provider corp {\\n  userinfo = "https://sso.example.com/u"\\n  username = $.sub\\n}\\n'
        'route GET /a/{id} {\\n  auth corp\\n  allow if param.id == username\\n}\\n',
        "probe.policy",
    )
    route = policy.route_for("GET", ["a", "7"])
    print(json.dumps({
        "package": policyauth.__file__,
        "grammar": grammar_location(),
        "routes": [route.text for route in policy.routes],
        "found": route.text if route else None,
        "path": sys.path,
    }))
    """
)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_grammar_is_read_from_the_installed_wheel(tmp_path: Path) -> None:
    assert (ROOT / "pyproject.toml").is_file()
    assert (ROOT / "grammar" / "policy.lark").is_file()
    wheels = tmp_path / "wheels"
    site = tmp_path / "site"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "--quiet", "-w", str(wheels), str(ROOT),
        cwd=elsewhere,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = wheels.glob("policyauth-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "policyauth/grammar/policy.lark" in names
    assert not any(name.startswith("grammar/") for name in names)

    installed = run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
        "--target", str(site), str(wheel),
        cwd=elsewhere,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    shipped = site / "policyauth" / "grammar" / "policy.lark"
    assert shipped.read_text(encoding="utf-8") == (ROOT / "grammar" / "policy.lark").read_text(
        encoding="utf-8"
    )

    # `-S`: no site-packages processing, so no `.pth` file (an editable install of this very
    # checkout) can put the source tree on the path; the dependencies (lark, attrs, ...) come
    # from this interpreter's site-packages, named explicitly after the installed wheel.
    dependencies = sysconfig.get_paths()["purelib"]
    platform_dependencies = sysconfig.get_paths()["platlib"]
    env = {
        "PYTHONPATH": f"{site}:{dependencies}:{platform_dependencies}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PATH": "/usr/bin:/bin",
    }
    probe = subprocess.run(
        [sys.executable, "-S", "-c", PROBE],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    assert Path(report["package"]).is_relative_to(site)
    assert Path(report["grammar"]) == shipped
    assert not any(Path(entry).resolve() == ROOT for entry in report["path"] if entry)
    assert report["routes"] == ["GET /status", "GET /a/{id}"]
    assert report["found"] == "GET /a/{id}"
