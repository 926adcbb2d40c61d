"""`policyauth lint --openapi`: the FastAPI example app's own description against its policy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from policyauth.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policies" / "github-ci.policy"


@pytest.fixture(scope="module")
def spec() -> dict[str, object]:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import fastapi_app
    finally:
        sys.path.pop(0)
    return fastapi_app.app.openapi()  # type: ignore[no-any-return]


def write(folder: Path, document: object) -> Path:
    path = folder / "openapi.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_the_example_app_is_covered_and_its_public_health_check_is_an_info_line(
    spec, tmp_path, capsys
):
    assert main(["lint", "--openapi", str(write(tmp_path, spec)), str(POLICY)]) == 0
    error = capsys.readouterr().err
    assert (
        f"info PA221 operation GET /healthz (healthz_healthz_get) is taken only by the public "
        f"route at {POLICY}:33"
    ) in error


def test_an_operation_no_route_takes_is_a_warning_naming_403_no_route(spec, tmp_path, capsys):
    document = json.loads(json.dumps(spec))
    document["paths"]["/reports/{day}"] = {"get": {"operationId": "report"}}
    assert main(["lint", "--openapi", str(write(tmp_path, document)), str(POLICY)]) == 1
    output = capsys.readouterr().out
    assert "PA220" in output
    assert (
        f"operation GET /reports/{{day}} (report) is taken by no route of {POLICY}: "
        "it would answer 403 no_route"
    ) in output


def test_a_route_no_operation_uses_is_a_warning_and_the_base_path_is_honoured(
    spec, tmp_path, capsys
):
    document = json.loads(json.dumps(spec))
    document["servers"] = [{"url": "https://ci.example.com/v2"}]
    assert main(["lint", "--openapi", str(write(tmp_path, document)), str(POLICY)]) == 1
    output = capsys.readouterr().out
    assert "operation GET /v2/healthz (healthz_healthz_get) is taken by no route" in output
    path = write(tmp_path, document)
    assert (
        f"{POLICY}:33:11: PA222 route `GET /healthz` takes no operation of {path}: dead or a typo"
    ) in output
    assert (
        main(["lint", "--openapi", str(write(tmp_path, document)), "--base-path", "", str(POLICY)])
        == 0
    )


def test_yaml_descriptions_are_read(tmp_path, capsys):
    path = tmp_path / "openapi.yaml"
    path.write_text(
        "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n  /nowhere:\n    get: {}\n",
        encoding="utf-8",
    )
    assert main(["lint", "--openapi", str(path), str(POLICY)]) == 1
    assert "operation GET /nowhere is taken by no route" in capsys.readouterr().out


def test_a_file_that_is_not_a_description_exits_2_with_one_line(tmp_path, capsys):
    path = write(tmp_path, {"swagger": "2.0"})
    assert main(["lint", "--openapi", str(path), str(POLICY)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"policyauth: {path}: not an OpenAPI 3.0 or 3.1 description (no `openapi: 3.x`)"
    )
