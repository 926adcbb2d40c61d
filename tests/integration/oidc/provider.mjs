// A real OpenID Connect provider (oidc-provider, OpenID Certified) on loopback, for the
// integration tests. Started by tests/integration/conftest.py; not for any other use.
//
//   node provider.mjs [PORT]        (or PORT=... in the environment; 0 or nothing: any free port)
//
// Prints `ready http://HOST:PORT` (the issuer) once it accepts connections; exits on
// SIGTERM or SIGINT. Knobs, from the environment:
//   ACCESS_TTL        seconds an access token of client `policyauth` lives (default 600)
//   SHORT_ACCESS_TTL  seconds an access token of client `policyauth-short` lives (default 2),
//                     so that a test can watch a token expire without waiting long
//   CLIENT_SECRET     the secret of both clients (default `policyauth-test-secret`)
//   HOST              the loopback address to listen on (default 127.0.0.1; any of 127.0.0.0/8)
//   EXIT_WITH_STDIN   `1`: also exit when stdin closes (the test suite died without stopping us)
//
// Both clients authenticate with client_secret_basic, may use the authorization code grant
// (with PKCE) and client credentials, and redirect to `ISSUER/cb` (nothing listens there: a
// test reads the code from the redirect).
//
// The login and consent pages are oidc-provider's own development interactions (a form that
// takes any password): a test logs in as one of ACCOUNTS by posting the form, as a browser
// would. Access tokens are opaque; only the provider's userinfo endpoint (`/me`) can tell
// who they belong to, which is exactly what policyauth relies on.
//
// Except for resource servers (the resourceIndicators feature, RFC 8707): a token requested
// with `resource=` one of RESOURCES is a JWT access token (RFC 9068, RS256, `typ: at+jwt`)
// whose `aud` is that resource's audience, verified locally with the provider's JWKS.

import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';

import Provider, { errors } from 'oidc-provider';

const ACCOUNTS = {
  alice: {
    preferred_username: 'alice',
    name: 'Alice Liddell',
    email: 'alice@example.com',
    email_verified: true,
    groups: ['engineering', 'confluence-writers'],
  },
  bob: {
    preferred_username: 'bob',
    name: 'Bob Builder',
    email: 'bob@example.com',
    email_verified: false,
    groups: ['contractors'],
  },
};


const RESOURCES = {
  'https://reports.example/api': 'reports-api',
  'https://other.example/api': 'other-api',
};

function seconds(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value <= 0) {
    console.error(`${name} must be a whole number of seconds above zero, not ${raw}`);
    process.exit(2);
  }
  return value;
}

const accessTtl = seconds('ACCESS_TTL', 600);
const shortAccessTtl = seconds('SHORT_ACCESS_TTL', 2);
const requestedPort = Number(process.argv[2] ?? process.env.PORT ?? 0);
const clientSecret = process.env.CLIENT_SECRET || 'policyauth-test-secret';
const host = process.env.HOST || '127.0.0.1';
if (!/^127(\.\d{1,3}){3}$/.test(host)) {
  console.error(`HOST must be an IPv4 loopback address (127.0.0.0/8), not ${host}`);
  process.exit(2);
}

function configuration(callback) {
  const client = (clientId) => ({
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: [callback],
  });
  return {
    clients: [client('policyauth'), client('policyauth-short')],
    scopes: ['openid', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    async findAccount(ctx, sub) {
      const account = ACCOUNTS[sub];
      if (account === undefined) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, ...account };
        },
      };
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined, // no `resource`: the opaque token of before
        useGrantedResource: () => false,
        getResourceServerInfo(ctx, resourceIndicator, client) {
          const audience = RESOURCES[resourceIndicator];
          if (audience === undefined) throw new errors.InvalidTarget();
          return {
            scope: 'reports',
            audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: client.clientId === 'policyauth-short' ? shortAccessTtl : accessTtl,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    ttl: {
      AccessToken(ctx, token, client) {
        return client.clientId === 'policyauth-short' ? shortAccessTtl : accessTtl;
      },
      ClientCredentials(ctx, token, client) {
        return client.clientId === 'policyauth-short' ? shortAccessTtl : accessTtl;
      },
      AuthorizationCode: () => 60,
      IdToken: () => 600,
      Grant: () => 3600,
      Interaction: () => 600,
      Session: () => 3600,
    },
    // oidc-provider accepts a token up to `clockTolerance` (15 s by default) past its expiry;
    // client and server share this machine's clock, so expiry here is exact.
    clockTolerance: 0,
    pkce: { required: () => true },
    cookies: { keys: [randomBytes(32).toString('hex')] },
  };
}

// Listen first, so that port 0 works: the issuer needs the port the system picked.
let handle;
const server = createServer((req, res) => {
  if (handle === undefined) {
    res.writeHead(503).end();
    return;
  }
  handle(req, res);
});

server.on('error', (error) => {
  console.error(`cannot listen: ${error.message}`);
  process.exit(1);
});

server.listen(requestedPort, host, () => {
  const { port } = server.address();
  const issuer = `http://${host}:${port}`;
  const provider = new Provider(issuer, configuration(`${issuer}/cb`));
  provider.on('server_error', (ctx, error) => console.error('server_error', error));
  handle = provider.callback();
  console.log(`ready ${issuer}`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (process.env.EXIT_WITH_STDIN === '1') {
  // The test suite holds our stdin open; if it dies without stopping us, we stop too.
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
