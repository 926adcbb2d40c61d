"""A build-artifact service on Django, in one file, guarded by policies/github-ci.policy.

`policyauth.django.PolicyAuthMiddleware` decides every request before any view runs; it is
configured by the `POLICYAUTH` setting below and leaves the caller in `request.user` (this app
has no django.contrib.auth) and in `request.principal`.

    .venv/bin/python examples/django_app.py              # runserver on http://127.0.0.1:8000
    TOKEN=$(.venv/bin/policyauth token create --store policies/ci.tokens --user job-1 \\
        --groups widgets)
    curl -i -X PUT -H "Authorization: Bearer $TOKEN" --data 'v1' \\
        http://127.0.0.1:8000/api/artifacts/widgets/w.tgz          # 201: job-1 may publish
    curl -i http://127.0.0.1:8000/api/artifacts/widgets/w.tgz      # 401: no credentials
    curl -i -X PUT -H "Authorization: Bearer $TOKEN" --data 'v1' \\
        http://127.0.0.1:8000/api/artifacts/gadgets/g.tgz          # 403: not job-1's project

Any other arguments go to Django's command line (`python examples/django_app.py check`).
`application` is the WSGI application, for a production server
(`waitress-serve --app-dir examples django_app:application`). Set POLICYAUTH_POLICY to use
another copy of the policy (its token store sits next to it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse, JsonResponse
from django.urls import path

POLICY = Path(__file__).resolve().parent.parent / "policies" / "github-ci.policy"

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="examples-only-not-secret",  # noqa: S106 (no sessions or signing here)
        ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["policyauth.django.PolicyAuthMiddleware"],
        POLICYAUTH={"POLICY": os.environ.get("POLICYAUTH_POLICY") or str(POLICY)},
    )
    django.setup()

artifacts: dict[tuple[str, str], bytes] = {}


def healthz(request: Any) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def artifact(request: Any, project: str, name: str) -> HttpResponse:
    key = (project, name)
    if request.method == "PUT":
        artifacts[key] = request.body
        return JsonResponse(
            {"stored": f"{project}/{name}", "by": request.user.username}, status=201
        )
    if request.method == "DELETE":
        return HttpResponse(status=204 if artifacts.pop(key, None) is not None else 404)
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405)
    if key not in artifacts:
        return JsonResponse({"error": "no such artifact"}, status=404)
    response = HttpResponse(artifacts[key], content_type="application/octet-stream")
    response["X-Served-To"] = request.user.username
    return response


urlpatterns = [
    path("healthz", healthz),
    path("api/artifacts/<str:project>/<path:name>", artifact),
]

application = get_wsgi_application()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    arguments = sys.argv[1:] or ["runserver", "127.0.0.1:8000", "--noreload"]
    execute_from_command_line([sys.argv[0], *arguments])
