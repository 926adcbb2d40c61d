// oauth2-mock-server 8.x on loopback, with userinfo answers the tests control. Started by
// tests/integration/conftest.py; not for any other use.
//
//   node mock_server.mjs [PORT]     (or PORT=... in the environment; 0 or nothing: any free port)
//
// Prints `ready http://127.0.0.1:PORT` (the issuer) once it accepts connections; exits on
// SIGTERM or SIGINT, or, with EXIT_WITH_STDIN=1, when its stdin closes.
//
// The mock's own userinfo endpoint answers `{"sub": "johndoe"}` to anyone. Here its event hooks
// make it behave like a provider that knows its tokens:
//   beforeTokenSigning  gives every token a `jti`, and honours an `expires_in` form field (seconds,
//                       may be negative) on the token request, so a test can mint a token that
//                       is already expired or about to expire, and a `sub` form field (the
//                       client credentials grant sets none), for JWT validation tests;
//   beforeResponse      remembers each access token it hands out, with the userinfo claims
//                       given as a JSON object in a `userinfo` form field of the token request
//                       (default: USERINFO_CLAIMS from the environment, a JSON object, else
//                       `{"sub": <the token's sub>}`);
//   beforeUserinfo      answers for the bearer token: 401 invalid_token for a token it never
//                       issued or one past its `exp`, otherwise the status and claims on record.
// Admin endpoints, for the tests only:
//   PUT  /admin/userinfo  {"token": ..., "claims": {...}, "status": 200}  change a token's answer
//   GET  /admin/stats     {"userinfo_calls": n, "tokens": n}
//   POST /admin/reset     forget the call count

import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';

import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';

const requestedPort = Number(process.argv[2] ?? process.env.PORT ?? 0);

function defaultClaims() {
  const raw = process.env.USERINFO_CLAIMS;
  if (raw === undefined || raw === '') return undefined;
  const claims = JSON.parse(raw);
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
    throw new Error('USERINFO_CLAIMS must be a JSON object');
  }
  return claims;
}

const fixedClaims = defaultClaims();
const tokens = new Map(); // access token -> { exp, status, claims }
let userinfoCalls = 0;

const issuer = new OAuth2Issuer();
const service = new OAuth2Service(issuer);

function tokenField(req, name) {
  const value = req.body?.[name];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

service.on('beforeTokenSigning', (token, req) => {
  token.payload.jti = randomUUID();
  const expiresIn = tokenField(req, 'expires_in');
  if (expiresIn !== undefined) {
    token.payload.exp = Math.floor(Date.now() / 1000) + Number(expiresIn);
  }
  const sub = tokenField(req, 'sub');
  if (sub !== undefined) token.payload.sub = sub;
});

service.on('beforeResponse', (response, req) => {
  const accessToken = response.body?.access_token;
  if (response.statusCode !== 200 || typeof accessToken !== 'string') return;
  const payload = JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url').toString());
  const given = tokenField(req, 'userinfo');
  let claims = given === undefined ? fixedClaims : JSON.parse(given);
  if (claims === undefined) claims = payload.sub === undefined ? {} : { sub: payload.sub };
  tokens.set(accessToken, { exp: payload.exp, status: 200, claims });
  const expiresIn = tokenField(req, 'expires_in');
  if (expiresIn !== undefined) response.body.expires_in = Number(expiresIn);
});

service.on('beforeUserinfo', (response, req) => {
  userinfoCalls += 1;
  const match = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
  const record = match ? tokens.get(match[1]) : undefined;
  if (record === undefined || record.exp <= Date.now() / 1000) {
    response.statusCode = 401;
    response.body = { error: 'invalid_token', error_description: 'unknown or expired token' };
    return;
  }
  response.statusCode = record.status;
  response.body = record.claims;
});

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      try {
        resolve(chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : {});
      } catch (error) {
        reject(error);
      }
    });
    req.on('error', reject);
  });
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function admin(req, res) {
  const route = `${req.method} ${new URL(req.url, 'http://x').pathname}`;
  if (route === 'GET /admin/stats') {
    reply(res, 200, { userinfo_calls: userinfoCalls, tokens: tokens.size });
  } else if (route === 'POST /admin/reset') {
    userinfoCalls = 0;
    reply(res, 200, {});
  } else if (route === 'PUT /admin/userinfo') {
    const body = await readJson(req);
    const record = tokens.get(body.token);
    if (record === undefined) {
      reply(res, 404, { error: 'unknown token' });
      return;
    }
    if (body.claims !== undefined) record.claims = body.claims;
    if (body.status !== undefined) record.status = body.status;
    reply(res, 200, {});
  } else {
    reply(res, 404, { error: 'no such admin endpoint' });
  }
}

const server = createServer((req, res) => {
  if (req.url.startsWith('/admin/')) {
    admin(req, res).catch((error) => reply(res, 400, { error: String(error) }));
  } else {
    service.requestHandler(req, res);
  }
});

server.on('error', (error) => {
  console.error(`cannot listen: ${error.message}`);
  process.exit(1);
});

await issuer.keys.generate('RS256');
server.listen(requestedPort, '127.0.0.1', () => {
  issuer.url = `http://127.0.0.1:${server.address().port}`;
  console.log(`ready ${issuer.url}`);
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
