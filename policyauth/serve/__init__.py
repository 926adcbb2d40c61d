"""`policyauth serve`: the engine as a forward-auth service for proxies that are not Python.

nginx (`auth_request`), Traefik (ForwardAuth), Caddy (`forward_auth`) and Envoy (`ext_authz`)
send the original request's method, target and headers; the service answers with the same
decision an embedded engine would make (production.md section 3).
"""

from policyauth.serve.app import ForwardAuthApp
from policyauth.serve.trust import TrustedPeers

__all__ = ["ForwardAuthApp", "TrustedPeers"]
