"""A Django project with `FORCE_SCRIPT_NAME = "/api"` and policyauth.django's middleware.

Under ASGI, Django cuts the script prefix from `path` before routing, so `/api/admin/x` runs
the admin view; under WSGI it routes on PATH_INFO whole. Views record what they served
(`/health`, public, lists it).
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.http import JsonResponse
from django.urls import path, re_path

served: list[str] = []

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests-only",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    FORCE_SCRIPT_NAME="/api",
    MIDDLEWARE=["policyauth.django.PolicyAuthMiddleware"],
    POLICYAUTH={"POLICY": os.environ["POLICYAUTH_POLICY"]},
)
django.setup()


def health(request: Any) -> JsonResponse:
    return JsonResponse({"hits": served})


def _view(name: str) -> Any:
    def view(request: Any, rest: str) -> JsonResponse:
        served.append(f"{name} {request.path_info}")
        return JsonResponse(
            {
                "view": name,
                "path_info": request.path_info,
                "user": request.principal.username,
                "judged": request.policyauth_decision.route_text,
            }
        )

    return view


urlpatterns = [
    path("health", health),
    re_path(r"^admin/(?P<rest>.*)$", _view("admin")),
    re_path(r"^(?P<rest>.*)$", _view("anything")),
]

application = get_wsgi_application()
asgi_application = get_asgi_application()
