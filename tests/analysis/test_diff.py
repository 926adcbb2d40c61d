"""`policyauth diff`: flipping classes come with rules and lines; equivalent edits say nothing."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from policyauth.analysis import diff_policies, load_for_diff
from policyauth.cli.main import main

PROVIDER = """\
provider corp {
  userinfo = "https://sso.example.com/userinfo"
  username = $.sub
  groups   = $.groups[*]
  email    = $.email
}

"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(PROVIDER + text, encoding="utf-8")
    return path


def run_diff(tmp_path: Path, old: str, new: str, *extra: str) -> tuple[int, str]:
    a, b = write(tmp_path, "old.policy", old), write(tmp_path, "new.policy", new)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["diff", str(a), str(b), *extra])
    return code, buffer.getvalue()


BASE = """\
route GET /docs/** {
  public
}

route GET, DELETE /files/{id} {
  auth corp
  deny if param.id == "root"
  allow if "admins" in groups
  allow if email endswith "@corp.example"
}

route POST /files {
  auth corp
  allow if "writers" in groups
}
"""


@pytest.mark.parametrize(
    ("name", "new"),
    [
        (
            "reformatting",
            BASE.replace("deny if", "deny   if").replace("\n\nroute POST", "\n\n\nroute POST"),
        ),
        (
            "reordered allows",
            BASE.replace(
                'allow if "admins" in groups\n  allow if email endswith "@corp.example"',
                'allow if email endswith "@corp.example"\n  allow if "admins" in groups',
            ),
        ),
        (
            "an or split into two allows",
            BASE.replace(
                'allow if "admins" in groups\n  allow if email endswith "@corp.example"',
                'allow if "admins" in groups or email endswith "@corp.example"',
            ),
        ),
        (
            "a redundant and-not after a matching deny",
            BASE.replace(
                'allow if "admins" in groups\n',
                'allow if "admins" in groups and not (param.id == "root")\n',
            ),
        ),
        (
            "a route moved below a disjoint one",
            BASE.replace("route GET /docs/** {\n  public\n}\n\n", "")
            + "\nroute GET /docs/** {\n  public\n}\n",
        ),
    ],
)
def test_equivalent_edits_report_nothing_and_exit_0(tmp_path, name, new):
    code, output = run_diff(tmp_path, BASE, new)
    assert (code, output.strip()) == (0, "no decision changes"), name


def test_a_widened_allow_is_reported_with_identity_statuses_and_both_rules(tmp_path):
    new = BASE.replace(
        'allow if "writers" in groups', 'allow if "writers" in groups or "interns" in groups'
    )
    code, output = run_diff(tmp_path, BASE, new)
    assert code == 1
    lines = output.splitlines()
    assert lines[0] == (
        'POST /files (e.g. /files) if provider == "corp" and not ("writers" in groups) and '
        '"interns" in groups: 403 not_allowed -> 200 allowed'
    )
    assert lines[1] == f"  old: `POST /files` ({tmp_path / 'old.policy'}:19)"
    rule = 'allow if "writers" in groups or "interns" in groups'
    assert lines[2] == f"  new: `{rule}` ({tmp_path / 'new.policy'}:21)"
    assert lines[-1] == "1 class of requests change"


def test_a_deny_removed_reports_the_literal_param_value_as_the_example(tmp_path):
    new = BASE.replace('  deny if param.id == "root"\n', "")
    code, output = run_diff(tmp_path, BASE, new, "--format", "json")
    assert code == 1
    changes = json.loads(output)["changes"]
    assert {c["example"] for c in changes} == {"/files/root"}
    assert {tuple(c["methods"]) for c in changes} == {("GET", "DELETE")}
    assert all(c["old"]["status"] == 403 and c["old"]["reason"] == "denied" for c in changes)
    assert all(c["old"]["rule"] == 'deny if param.id == "root"' for c in changes)
    assert sorted((c["new"]["status"], c["new"]["rule"]) for c in changes) == [
        (200, 'allow if "admins" in groups'),
        (200, 'allow if email endswith "@corp.example"'),
        (403, "GET, DELETE /files/{id}"),
    ]


def test_a_route_made_public_flips_no_credentials_and_names_the_public_route(tmp_path):
    new = BASE.replace(
        'route POST /files {\n  auth corp\n  allow if "writers" in groups\n}',
        "route POST /files {\n  public\n}",
    )
    code, output = run_diff(tmp_path, BASE, new, "--format", "json")
    assert code == 1
    changes = json.loads(output)["changes"]
    nocred = [c for c in changes if c["identity"] == "no credentials"]
    assert len(nocred) == 1
    assert nocred[0]["old"]["reason"] == "no_credentials"
    assert (nocred[0]["new"]["status"], nocred[0]["new"]["reason"]) == (200, "allowed")


def test_a_provider_setting_change_is_listed_without_a_rule_change(tmp_path):
    a = write(tmp_path, "a.policy", BASE)
    b = tmp_path / "b.policy"
    b.write_text((PROVIDER + BASE).replace("$.sub", "$.preferred_username"), encoding="utf-8")
    report = diff_policies(load_for_diff(a), load_for_diff(b))
    assert report.changes == ()
    assert [(s.name, s.fields) for s in report.settings] == [("provider corp", ("claims",))]
    assert report.flips


def test_markdown_is_a_table(tmp_path):
    new = BASE.replace('  deny if param.id == "root"\n', "")
    code, output = run_diff(tmp_path, BASE, new, "--format", "markdown")
    assert code == 1
    assert "| methods | pattern | example | identity | old | new | old rule | new rule |" in output
    assert "| GET, DELETE | `/files/*` | `/files/root` |" in output


def test_a_policy_with_errors_exits_2_with_diagnostics_and_no_traceback(tmp_path, capsys):
    a = write(tmp_path, "a.policy", BASE)
    b = tmp_path / "b.policy"
    b.write_text("route GET /x {\n  auth nobody\n}\n", encoding="utf-8")
    assert main(["diff", str(a), str(b)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"policyauth: {b}:1:1: PA117 route `GET /x` has no `allow` rule")
    assert "Traceback" not in error


def test_a_token_store_identity_always_has_groups_so_no_missing_groups_class_is_reported(
    tmp_path,
):
    """A token record is a username and a list of groups: `"g1" in groups` never errors for it
    (found by the oracle in test_diff_oracle.py)."""
    (tmp_path / "bots.tokens").write_text("", encoding="utf-8")
    tokens = 'tokens bots {\n  store = "bots.tokens"\n}\n\n'
    old = tokens + "route GET /a {\n  public\n}\n"
    new = tokens + 'route GET /a {\n  auth bots\n  allow if not ("g1" in groups)\n}\n'
    code, output = run_diff(tmp_path, old, new, "--format", "json")
    assert code == 1
    changes = json.loads(output)["changes"]
    assert [(c["identity"], c["new"]["status"], c["new"]["reason"]) for c in changes] == [
        ("no credentials", 401, "no_credentials"),
        ("a credential no authenticator of the route takes", 401, "invalid_token"),
        ('provider == "bots" and "g1" in groups', 403, "not_allowed"),
    ]


def test_a_regex_with_a_negated_character_gets_a_witness_and_a_definite_answer(tmp_path):
    """`[^@]` has a witness, so the class is a definite change, not "possibly changes"."""
    new = BASE.replace(
        'allow if "writers" in groups',
        'allow if "writers" in groups or username matches /[^@]+@corp/',
    )
    code, output = run_diff(tmp_path, BASE, new, "--format", "json")
    assert code == 1
    changes = json.loads(output)["changes"]
    assert [(c["possibly"], c["old"]["reason"], c["new"]["reason"]) for c in changes] == [
        (False, "not_allowed", "allowed")
    ]
    assert changes[0]["identity"] == (
        'provider == "corp" and ("writers" in groups) does not hold'
        " and username matches /[^@]+@corp/"
    )


def test_a_value_compared_with_a_claim_can_take_the_claims_regex_witness(tmp_path):
    """`param.id == username and username matches /.*ob/` holds for user `aob` on `/files/aob`:
    the parameter gets the regex's witness too, else removing that deny reported no change
    (found by the oracle)."""
    new = BASE.replace('  deny if param.id == "root"\n', "")
    old = BASE.replace(
        '  deny if param.id == "root"\n',
        "  deny if param.id == username and username matches /.*ob/\n",
    )
    code, output = run_diff(tmp_path, old, new, "--format", "json")
    assert code == 1
    changes = json.loads(output)["changes"]
    assert {c["example"] for c in changes} == {"/files/aob"}
    assert all(c["old"]["rule"].startswith("deny if param.id == username") for c in changes)
    assert all(c["old"]["reason"] == "denied" for c in changes)
    assert all("param.id == username and username matches /.*ob/" in c["identity"] for c in changes)


def test_a_parameter_on_a_literal_segment_of_the_region_holds_that_literal(tmp_path):
    """On `/a/b`, `{id}` of `/{id}/b` is "a", which `/b.*/` does not match: every caller is
    denied there, and no class claims the regex holds (found by the oracle: the atom was
    evaluated on a candidate value while the request used the path's own segment)."""
    old = "route GET /a/b/c {\n  auth corp\n  allow\n}\n"
    new = old + (
        "\nroute GET /{id}/b {\n  auth corp\n  deny if not (param.id matches /b.*/)\n"
        '  allow if param.id == "a"\n}\n'
    )
    code, output = run_diff(tmp_path, old, new, "--format", "json")
    assert code == 1
    changes = json.loads(output)["changes"]
    at_a = [(c["identity"], c["new"]["reason"]) for c in changes if c["pattern"] == "/a/b"]
    assert sorted(at_a) == [
        ("a credential no authenticator of the route takes", "invalid_token"),
        ("no credentials", "no_credentials"),
        ('provider == "corp"', "denied"),
    ]


def test_a_claim_compared_with_a_parameter_on_a_literal_segment_can_equal_that_literal(tmp_path):
    """On `/x/a`, `{id}` is "a", so `param.id == username` holds for the user named "a": that
    user flips from allowed to not allowed (found by the oracle)."""
    old = 'route GET /*/a {\n  auth corp\n  allow if username != "bob"\n}\n'
    new = "route GET /*/{id} {\n  auth corp\n  allow if not (param.id == username)\n}\n"
    code, output = run_diff(tmp_path, old, new, "--format", "json")
    assert code == 1
    changes = json.loads(output)["changes"]
    flips = {
        (c["identity"], c["old"]["reason"], c["new"]["reason"])
        for c in changes
        if c["pattern"] == "/*/a"
    }
    assert flips == {
        (
            'provider == "corp" and username != "bob" and param.id == username',
            "allowed",
            "not_allowed",
        ),
        (
            'provider == "corp" and not (username != "bob") and not (param.id == username)',
            "not_allowed",
            "allowed",
        ),
    }
