"""A one-file Django project with policyauth.django's middleware, for a real waitress in a test.

Views record the path they served; `/health` (public in the policy) lists those paths.
`POLICYAUTH_SET_USER` (unset, "1" or "0") and `POLICYAUTH_WITH_AUTH` ("1": install
django.contrib.auth's middleware first) let a test try the `request.user` choices.
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

_with_auth = os.environ.get("POLICYAUTH_WITH_AUTH") == "1"
_options: dict[str, Any] = {"POLICY": os.environ["POLICYAUTH_POLICY"]}
if os.environ.get("POLICYAUTH_SET_USER"):
    _options["SET_USER"] = os.environ["POLICYAUTH_SET_USER"] == "1"

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests-only",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=(
        ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"]
        if _with_auth
        else []
    ),
    # Cookie sessions: django.contrib.auth's middleware needs a session, this project no database.
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    MIDDLEWARE=[
        *(
            [
                "django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware",
            ]
            if _with_auth
            else []
        ),
        "policyauth.django.PolicyAuthMiddleware",
    ],
    POLICYAUTH=_options,
)
django.setup()


def health(request: Any) -> JsonResponse:
    return JsonResponse({"hits": served})


def handler(request: Any, rest: str) -> JsonResponse:
    served.append(request.path)
    user = request.policyauth_user
    django_user = getattr(request, "user", None)
    return JsonResponse(
        {
            "user": user.username,
            "groups": list(user.groups),
            "principal": request.principal.username,
            # __class__, not type(): django.contrib.auth's user is a lazy proxy.
            "request_user": django_user.__class__.__name__ if django_user is not None else None,
            "request_user_name": getattr(django_user, "username", None),
        }
    )


urlpatterns = [
    path("health", health),
    re_path(r"^reports/(?P<rest>.*)$", handler),
    re_path(r"^admin/(?P<rest>.*)$", handler),
]

application = get_wsgi_application()
asgi_application = get_asgi_application()
