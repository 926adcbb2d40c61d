"""policyauth.django: the middleware, its settings, and `request.user`.

Django's settings belong to a process, so every Django app here runs in a child process: the
contract against a real waitress serving apps/django_server.py (WSGI), and the same app under
uvicorn (ASGI, the middleware's async path); settings problems are checked in a child too.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from adapter_contract import AdapterContract
from adapter_servers import Deployment, Server, serving

APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(scope="module")
def server(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("django") / "waitress.log"
    with serving("waitress", "django_server:application", deployment.policy, log) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        yield client


class TestDjangoUnderWaitress(AdapterContract):
    def test_without_django_contrib_auth_request_user_is_the_principal(
        self, client: httpx.Client, deployment: Deployment
    ) -> None:
        body = client.get("/reports/q", headers=deployment.bearer(deployment.reporter)).json()
        assert body["principal"] == "ada"
        assert (body["request_user"], body["request_user_name"]) == ("DjangoUser", "ada")


@pytest.fixture(scope="module")
def asgi_server(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("django-asgi") / "uvicorn.log"
    with serving("uvicorn", "django_server:asgi_application", deployment.policy, log) as running:
        yield running


class TestDjangoUnderUvicorn(AdapterContract):
    @pytest.fixture
    def client(self, asgi_server: Server) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=asgi_server.url, timeout=10.0) as client:
            yield client


@pytest.mark.parametrize(
    ("set_user", "request_user"),
    [(None, ("AnonymousUser", "")), ("1", ("DjangoUser", "ada")), ("0", ("AnonymousUser", ""))],
)
def test_with_django_contrib_auth_request_user_is_left_alone_unless_set_user(
    deployment: Deployment,
    tmp_path: Path,
    set_user: str | None,
    request_user: tuple[str, str],
) -> None:
    env = {"POLICYAUTH_WITH_AUTH": "1"}
    if set_user is not None:
        env["POLICYAUTH_SET_USER"] = set_user
    log = tmp_path / "waitress.log"
    with (
        serving("waitress", "django_server:application", deployment.policy, log, env) as server,
        httpx.Client(base_url=server.url, timeout=10.0) as client,
    ):
        response = client.get("/reports/q", headers=deployment.bearer(deployment.reporter))
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["user"], body["principal"]) == ("ada", "ada")
        assert (body["request_user"], body["request_user_name"]) == request_user
        refused = client.get("/reports/q")
        assert refused.status_code == 401


SETTINGS_CHECK = """
import sys
import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

settings.configure(MIDDLEWARE=["policyauth.django.PolicyAuthMiddleware"], ROOT_URLCONF=[], **{})
django.setup()
from django.core.wsgi import get_wsgi_application
try:
    get_wsgi_application()
except ImproperlyConfigured as problem:
    print("ImproperlyConfigured:", problem)
else:
    print("configured")
"""


def _configure(options: str) -> str:
    """What loading the middleware says, in a child process, for `settings.configure(...)`."""
    script = SETTINGS_CHECK.replace("**{}", options)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ("", "exactly one of"),
        ("POLICYAUTH={}", "exactly one of"),
        ("POLICYAUTH=[]", "must be a dict"),
        ("POLICYAUTH={'POLICIES': 'x'}", "unknown keys: POLICIES"),
        ("POLICYAUTH={'ENGINE': 'x'}", "must be a policyauth.Engine"),
        ("POLICYAUTH={'POLICY': FILE, 'SET_USER': 'yes'}", "must be True, False or None"),
        ("POLICYAUTH={'POLICY': FILE, 'RELOAD': 'yes'}", 'POLICYAUTH["RELOAD"] must be True or'),
    ],
)
def test_unusable_settings_stop_django_when_it_loads_the_middleware(
    deployment: Deployment, options: str, said: str
) -> None:
    assert said in _configure(options.replace("FILE", repr(str(deployment.policy))))


@pytest.mark.parametrize(
    "options", ["POLICYAUTH_POLICY=FILE", "POLICYAUTH={'POLICY': FILE, 'SET_USER': False}"]
)
def test_the_policy_setting_has_two_spellings(deployment: Deployment, options: str) -> None:
    assert _configure(options.replace("FILE", repr(str(deployment.policy)))) == "configured"
