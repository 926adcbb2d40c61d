"""The wheel is complete: the grammar ships inside it and is read from there, and so does the
`py.typed` marker, so a user's own program type-checks against the installed package.

Builds a wheel of this project once, installs it into a temporary folder, and uses it from a
fresh interpreter (and a fresh mypy) whose working directory and paths hold no source tree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path
from typing import NamedTuple

import pytest

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


class Installed(NamedTuple):
    wheel: Path
    names: list[str]  # the files in the wheel
    site: Path  # the folder the wheel was installed into with `pip install --target`
    elsewhere: Path  # an empty working directory, outside the source tree


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel of this checkout, built offline and installed into a folder of its own."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    assert (ROOT / "pyproject.toml").is_file()
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

    installed = run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
        "--target", str(site), str(wheel),
        cwd=elsewhere,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return Installed(wheel, names, site, elsewhere)


def test_grammar_is_read_from_the_installed_wheel(installed: Installed) -> None:
    assert (ROOT / "grammar" / "policy.lark").is_file()
    site, elsewhere, names = installed.site, installed.elsewhere, installed.names
    assert "policyauth/grammar/policy.lark" in names
    assert not any(name.startswith("grammar/") for name in names)
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


USER_PROGRAM = textwrap.dedent(
    """
    import policyauth
    from policyauth.asgi import PolicyAuthMiddleware

    policy: policyauth.Policy = policyauth.loads('route GET /status {\\n  public\\n}\\n')
    engine = policyauth.Engine(policy)
    decision: policyauth.Decision = engine.authorize_sync("GET", "/status", [])
    status: int = decision.status
    reason: str = decision.reason.value
    middleware_class: type = PolicyAuthMiddleware
    """
)


def test_a_user_program_type_checks_against_the_installed_wheel(installed: Installed) -> None:
    """`mypy --strict` on a user's program sees policyauth's own types (`py.typed`), not
    `import-untyped`; a wrong use of them is an error, which proves they are not `Any`."""
    assert "policyauth/py.typed" in installed.names
    # A bare environment whose only site-packages entries are the installed wheel and this
    # interpreter's dependencies (no editable install of the checkout), as a user's would be.
    env_dir = installed.elsewhere.parent / "user-venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", str(env_dir), cwd=installed.elsewhere)
    assert made.returncode == 0, made.stderr
    python = env_dir / "bin" / "python"
    site_packages = run(
        str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        cwd=installed.elsewhere,
    ).stdout.strip()  # fmt: skip
    dependencies = sysconfig.get_paths()["purelib"]
    (Path(site_packages) / "user.pth").write_text(f"{installed.site}\n{dependencies}\n")

    def mypy(program: str) -> subprocess.CompletedProcess[str]:
        (installed.elsewhere / "app.py").write_text(program, encoding="utf-8")
        return run(
            sys.executable, "-m", "mypy", "--strict", "--no-incremental",
            "--python-executable", str(python), "app.py",
            cwd=installed.elsewhere,
        )  # fmt: skip

    clean = mypy(USER_PROGRAM)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "import-untyped" not in clean.stdout
    wrong = mypy(USER_PROGRAM + "text: str = decision.status\n")
    assert wrong.returncode == 1
    assert (
        'app.py:11: error: Incompatible types in assignment (expression has type "int", '
        'variable has type "str")  [assignment]'
    ) in wrong.stdout
