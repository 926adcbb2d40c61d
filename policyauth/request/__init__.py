"""The request side of policyauth: headers, the canonical request, and credentials.

Pure functions that every integration calls in the same order, so that the path the policy
is matched against and the credential it authenticates are read one way only:
:func:`normalize_headers`, then :func:`canonicalize` (a 400 ``malformed_request`` for
anything ambiguous), then :func:`read_credentials` (a 400 ``invalid_request`` for anything
but one well-formed credential).
"""

from policyauth.request.canonical import (
    DECIDING_HEADERS,
    CanonicalRequest,
    Rejection,
    canonical_target,
    canonicalize,
    encode_path,
    header_problem,
)
from policyauth.request.credentials import (
    BasicCredential,
    BearerCredential,
    Credential,
    NoCredentials,
    is_authorization,
    read_credentials,
)
from policyauth.request.headers import Headers, normalize_headers

__all__ = [
    "DECIDING_HEADERS",
    "BasicCredential",
    "BearerCredential",
    "CanonicalRequest",
    "Credential",
    "Headers",
    "NoCredentials",
    "Rejection",
    "canonical_target",
    "canonicalize",
    "encode_path",
    "header_problem",
    "is_authorization",
    "normalize_headers",
    "read_credentials",
]
