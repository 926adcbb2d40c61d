"""What `preset = "NAME"` means: the facts about each identity provider, as data.

A preset fills in what every user of that provider would otherwise have to look up: where its
userinfo endpoint is, which parameters the URL needs, the headers it insists on, what a
successful response looks like, where the username and groups are, and which token prefixes it
issues (so that a route with several providers can send each token to the right one).
Sources for every fact are in shared/reference/providers.md; a provider block can override any
of them.
"""

from __future__ import annotations

import enum
from urllib.parse import quote

import attrs


class TokenTransport(enum.Enum):
    """How the access token reaches the userinfo endpoint."""

    HEADER = "header"  # Authorization: Bearer <token> (RFC 6750 2.1), the default
    FORM = "form"  # POST body token=<token> (Slack accepts the header too; kept for completeness)
    QUERY = "query"  # ?access_token=<token>: Facebook's Graph API documents only this


class Audience(enum.Enum):
    """How a provider lets us check that a token was issued to our client (security rule 7).

    A userinfo call proves only that *some* client holds a live token for the user; each of
    these is the provider's own way to ask which client it was issued to.
    """

    NONE = "none"  # userinfo only: any client's token passes; the linter warns (PA202)
    GOOGLE_TOKENINFO = "google-tokeninfo"  # tokeninfo `aud`/`azp` against `client_id`
    GITLAB_TOKEN_INFO = "gitlab-token-info"  # /oauth/token/info `application.uid`
    GITHUB_APPLICATION = "github-application"  # POST /applications/{client_id}/token: 200 or 404
    FACEBOOK_DEBUG_TOKEN = "facebook-debug-token"  # debug_token `data.app_id`, `data.is_valid`
    INTROSPECTION = "introspection"  # RFC 7662: `active` and `client_id`/`azp`/`aud`


@attrs.frozen
class JwtMode:
    """What `validate = "jwt"` means for a preset: where its issuer and keys are, and what its
    access tokens carry (they are not shaped like its userinfo answers, so the claim map is
    its own; production.md section 1).

    `issuers` and `jwks` are URL templates filled like `userinfo` (every issuer template is
    filled: Entra ID signs v1.0 and v2.0 tokens with different issuers); an empty `jwks` means
    discovery from the first issuer. `fallbacks` are claims tried, in order, when the claim of
    the same name is missing (Entra v1.0 tokens carry `upn` where v2.0 tokens carry
    `preferred_username`). `audience_claim` is where the audience is (Cognito: `client_id`);
    `required_claims` are values a token must carry to be an access token at all (Cognito's
    `token_use`, Keycloak's `typ`), which is how those providers tell ID tokens apart.
    """

    required: tuple[str, ...]
    issuers: tuple[str, ...]
    jwks: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    claims: tuple[tuple[str, str], ...] = ()
    fallbacks: tuple[tuple[str, str], ...] = ()
    audience_claim: str = "aud"
    required_claims: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Preset:
    """One provider's facts. `userinfo` holds URL templates, tried in order: the first whose
    `{parameters}` are all given is used (GitHub.com versus GitHub Enterprise, say)."""

    name: str
    userinfo: tuple[str, ...]
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    method: str = "GET"
    transport: TokenTransport = TokenTransport.HEADER
    headers: tuple[tuple[str, str], ...] = ()
    success: tuple[str, bool] | None = None  # (JSONPath, value it must equal)
    claims: tuple[tuple[str, str], ...] = ()
    token_prefix: tuple[str, ...] = ()
    audience: Audience = Audience.NONE
    # Where the audience check is made, tried like `userinfo`; for `oidc`, discovery says.
    audience_url: tuple[str, ...] = ()
    audience_needs_secret: bool = False  # the check authenticates as the client itself
    discovery: bool = False  # `oidc`: the userinfo URL comes from the issuer's discovery document
    jwt: JwtMode | None = None  # how `validate = "jwt"` works, for presets whose tokens are JWTs

    @property
    def parameters(self) -> tuple[str, ...]:
        return self.required + self.optional


_JSON = (("Accept", "application/json"),)
_CLIENT = ("client_id", "client_secret")

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="google",
            userinfo=("https://openidconnect.googleapis.com/v1/userinfo",),
            optional=("client_id",),
            claims=(
                ("username", "$.email"),
                ("email", "$.email"),
                ("email_verified", "$.email_verified"),
                ("sub", "$.sub"),
                ("hd", "$.hd"),
            ),
            token_prefix=("ya29.",),
            audience=Audience.GOOGLE_TOKENINFO,
            audience_url=("https://oauth2.googleapis.com/tokeninfo",),
        ),
        Preset(
            name="azure-ad",
            userinfo=("https://graph.microsoft.com/v1.0/me",),
            headers=_JSON,
            claims=(
                ("username", "$.userPrincipalName"),
                ("id", "$.id"),
                ("email", "$.mail"),
                ("name", "$.displayName"),
            ),
            jwt=JwtMode(
                required=("tenant",),
                issuers=(
                    "https://login.microsoftonline.com/{tenant}/v2.0",
                    "https://sts.windows.net/{tenant}/",
                ),
                jwks=("https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys",),
                claims=(
                    ("username", "$.preferred_username"),
                    ("groups", "$.groups[*]"),
                    ("roles", "$.roles[*]"),
                    ("oid", "$.oid"),
                    ("tid", "$.tid"),
                    ("sub", "$.sub"),
                ),
                fallbacks=(("username", "$.upn"), ("username", "$.unique_name")),
            ),
        ),
        Preset(
            name="keycloak",
            userinfo=("{base_url}/realms/{realm}/protocol/openid-connect/userinfo",),
            required=("base_url", "realm"),
            optional=_CLIENT,
            audience=Audience.INTROSPECTION,
            audience_url=("{base_url}/realms/{realm}/protocol/openid-connect/token/introspect",),
            audience_needs_secret=True,
            claims=(
                ("username", "$.preferred_username"),
                ("groups", "$.realm_access.roles[*]"),
                ("email", "$.email"),
                ("email_verified", "$.email_verified"),
                ("sub", "$.sub"),
            ),
            jwt=JwtMode(
                required=("base_url", "realm"),
                issuers=("{base_url}/realms/{realm}",),
                jwks=("{base_url}/realms/{realm}/protocol/openid-connect/certs",),
                claims=(
                    ("username", "$.preferred_username"),
                    ("groups", "$.realm_access.roles[*]"),
                    ("email", "$.email"),
                    ("azp", "$.azp"),
                    ("sub", "$.sub"),
                ),
                required_claims=(("typ", "Bearer"),),
            ),
        ),
        Preset(
            name="okta",
            userinfo=(
                "https://{domain}/oauth2/{authorization_server}/v1/userinfo",
                "https://{domain}/oauth2/v1/userinfo",
            ),
            required=("domain",),
            optional=("authorization_server", *_CLIENT),
            audience=Audience.INTROSPECTION,
            audience_url=(
                "https://{domain}/oauth2/{authorization_server}/v1/introspect",
                "https://{domain}/oauth2/v1/introspect",
            ),
            audience_needs_secret=True,
            claims=(
                ("username", "$.preferred_username"),
                ("groups", "$.groups[*]"),
                ("email", "$.email"),
                ("email_verified", "$.email_verified"),
                ("sub", "$.sub"),
            ),
            jwt=JwtMode(
                required=("domain", "authorization_server"),
                issuers=("https://{domain}/oauth2/{authorization_server}",),
                jwks=("https://{domain}/oauth2/{authorization_server}/v1/keys",),
                claims=(
                    ("username", "$.sub"),
                    ("uid", "$.uid"),
                    ("cid", "$.cid"),
                    ("scopes", "$.scp[*]"),
                    ("sub", "$.sub"),
                ),
            ),
        ),
        Preset(
            name="cognito",
            userinfo=("https://{domain}/oauth2/userInfo",),
            required=("domain",),
            claims=(
                ("username", "$.username"),
                ("email", "$.email"),
                ("email_verified", "$.email_verified"),
                ("sub", "$.sub"),
            ),
            jwt=JwtMode(
                required=("region", "user_pool"),
                issuers=("https://cognito-idp.{region}.amazonaws.com/{user_pool}",),
                jwks=(
                    "https://cognito-idp.{region}.amazonaws.com/{user_pool}/.well-known/jwks.json",
                ),
                claims=(
                    ("username", "$.username"),
                    ("groups", "$['cognito:groups'][*]"),
                    ("client_id", "$.client_id"),
                    ("scope", "$.scope"),
                    ("sub", "$.sub"),
                ),
                audience_claim="client_id",
                required_claims=(("token_use", "access"),),
            ),
        ),
        Preset(
            name="github",
            userinfo=("{base_url}/api/v3/user", "https://api.github.com/user"),
            optional=("base_url", *_CLIENT),
            audience=Audience.GITHUB_APPLICATION,
            audience_url=(
                "{base_url}/api/v3/applications/{client_id}/token",
                "https://api.github.com/applications/{client_id}/token",
            ),
            audience_needs_secret=True,
            headers=(
                ("Accept", "application/vnd.github+json"),
                ("User-Agent", "policyauth"),
                ("X-GitHub-Api-Version", "2022-11-28"),
            ),
            claims=(("username", "$.login"), ("id", "$.id"), ("email", "$.email")),
            token_prefix=("gho_", "ghu_", "ghp_", "github_pat_"),
        ),
        Preset(
            name="slack",
            userinfo=("https://slack.com/api/openid.connect.userInfo",),
            method="POST",
            success=("$.ok", True),
            claims=(
                ("username", "$.email"),
                ("email", "$.email"),
                ("email_verified", "$.email_verified"),
                ("user_id", "$['https://slack.com/user_id']"),
                ("team_id", "$['https://slack.com/team_id']"),
            ),
            # User tokens; `xoxe.xoxp-` is the form of rotated (expiring) user tokens.
            token_prefix=("xoxp-", "xoxe.xoxp-"),
        ),
        Preset(
            name="gitlab",
            userinfo=("{base_url}/oauth/userinfo", "https://gitlab.com/oauth/userinfo"),
            optional=("base_url", "client_id"),
            audience=Audience.GITLAB_TOKEN_INFO,
            audience_url=("{base_url}/oauth/token/info", "https://gitlab.com/oauth/token/info"),
            claims=(
                ("username", "$.nickname"),
                ("groups", "$.groups[*]"),
                ("email", "$.email"),
                ("email_verified", "$.email_verified"),
                ("sub", "$.sub"),
            ),
        ),
        Preset(
            name="facebook",
            userinfo=("https://graph.facebook.com/v19.0/me?fields=id,name,email",),
            transport=TokenTransport.QUERY,
            optional=_CLIENT,
            audience=Audience.FACEBOOK_DEBUG_TOKEN,
            audience_url=("https://graph.facebook.com/debug_token",),
            audience_needs_secret=True,
            claims=(("username", "$.id"), ("email", "$.email"), ("name", "$.name")),
        ),
        Preset(
            name="auth0",
            userinfo=("https://{domain}/userinfo",),
            required=("domain",),
            claims=(
                ("username", "$.email"),
                ("email", "$.email"),
                ("email_verified", "$.email_verified"),
                ("nickname", "$.nickname"),
                ("sub", "$.sub"),
            ),
            jwt=JwtMode(
                required=("domain",),
                issuers=("https://{domain}/",),
                jwks=("https://{domain}/.well-known/jwks.json",),
                claims=(
                    ("username", "$.sub"),
                    ("azp", "$.azp"),
                    ("scope", "$.scope"),
                    ("permissions", "$.permissions[*]"),
                    ("sub", "$.sub"),
                ),
            ),
        ),
        Preset(
            name="oidc",
            userinfo=(),
            required=("issuer",),
            optional=_CLIENT,
            audience=Audience.INTROSPECTION,
            audience_needs_secret=True,
            claims=(
                ("username", "$.sub"),
                ("email", "$.email"),
                ("email_verified", "$.email_verified"),
                ("preferred_username", "$.preferred_username"),
            ),
            discovery=True,
            jwt=JwtMode(
                required=("issuer",),
                issuers=("{issuer}",),
                claims=(
                    ("username", "$.sub"),
                    ("preferred_username", "$.preferred_username"),
                    ("email", "$.email"),
                    ("scope", "$.scope"),
                    ("client_id", "$.client_id"),
                ),
            ),
        ),
    )
}


def userinfo_url(preset: Preset, parameters: dict[str, str]) -> str | None:
    """The userinfo URL for these parameters; None if no template fits (or discovery)."""
    return fill_template(preset.userinfo, parameters)


def fill_template(templates: tuple[str, ...], parameters: dict[str, str]) -> str | None:
    """The first URL template whose parameters are all given, filled in; None if none fits."""
    for template in templates:
        names = [part.split("}", 1)[0] for part in template.split("{")[1:]]
        if all(name in parameters for name in names):
            url = template
            for name in names:
                value = parameters[name].rstrip("/")
                if name not in ("base_url", "issuer"):
                    value = quote(value, safe="")
                url = url.replace("{" + name + "}", value)
            return url
    return None
