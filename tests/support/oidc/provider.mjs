// A real OpenID provider for karpor's integration tests: oidc-provider (the
// certified Node.js implementation) over TLS, with one public client (PKCE,
// device flow, refresh tokens) and users whose groups are in a claim.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {issuer, port, cert, key (PEM file paths), clientId, redirectUris,
//          idTokenTtl (seconds), users: {login: [groups...]}}
// Prints "oidc-provider serving ISSUER" once it listens. The development
// login form (devInteractions) accepts any password for the users named.
import fs from 'node:fs';
import https from 'node:https';
import Provider from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const users = config.users;

const provider = new Provider(config.issuer, {
  clients: [{
    client_id: config.clientId,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: ['code'],
    redirect_uris: config.redirectUris,
  }],
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
  },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'email', 'groups'],
  claims: { email: ['email', 'email_verified'], groups: ['groups'] },
  conformIdTokenClaims: false,
  ttl: {
    IdToken: config.idTokenTtl,
    AccessToken: 600,
    RefreshToken: 3600,
    DeviceCode: 300,
    Interaction: 300,
    Session: 3600,
    Grant: 3600,
  },
  cookies: { keys: ['karpor-test-cookie-key'] },
  async issueRefreshToken(ctx, client, code) {
    return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
  },
  async findAccount(ctx, id) {
    if (!Object.hasOwn(users, id)) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.com`, email_verified: true, groups: users[id] };
      },
    };
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = https.createServer(
  { cert: fs.readFileSync(config.cert), key: fs.readFileSync(config.key) },
  provider.callback(),
);
server.listen(config.port, '127.0.0.1', () => {
  console.log(`oidc-provider serving ${config.issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
