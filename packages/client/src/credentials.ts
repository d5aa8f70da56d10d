/**
 * Which credential a connect presents (reference: windows-companion §1.2), and the record
 * helpers shared by the client, the pairing helpers and the stores.
 *
 * Precedence, per role: this role's device token → the shared gateway token → the setup-code
 * bootstrap token → nothing. A paired device token always wins: falling back would shrink the
 * device's authority or start a re-pair. The one exception is the connect right after a setup
 * code was applied (`forceBootstrap`), so a stale device token or an old shared token cannot
 * beat the code the user just scanned.
 */
import type { GatewayRecord, Role, RoleToken } from './types.js';

export type CredentialKind = 'device-token' | 'shared-token' | 'bootstrap-token' | 'password';

export interface ResolvedCredential {
  kind: CredentialKind;
  /** Exactly one field: the connect's `auth` object. */
  auth: { deviceToken: string } | { token: string } | { bootstrapToken: string } | { password: string };
  /** The secret sent (also the signed token field). */
  secret: string;
  /** Scopes to request. */
  scopes: string[];
}

/** What a setup code's operator profile grants by default; asking for more is pointless. */
export const BOOTSTRAP_OPERATOR_SCOPES = ['operator.approvals', 'operator.read', 'operator.write'];
/** What a shared-token operator asks for: enough to approve other devices. */
export const SHARED_OPERATOR_SCOPES = ['operator.admin', 'operator.pairing'];

function usable(secret: string | undefined): secret is string {
  return typeof secret === 'string' && secret.trim().length > 0;
}

export function resolveCredential(
  record: GatewayRecord,
  role: Role,
  opts: { forceBootstrap?: boolean; scopes?: string[] | undefined } = {},
): ResolvedCredential | null {
  const scopesFor = (fallback: string[]): string[] => (role === 'node' ? [] : [...(opts.scopes ?? fallback)]);
  const bootstrap = record.bootstrap?.token;
  if (opts.forceBootstrap && usable(bootstrap)) {
    return { kind: 'bootstrap-token', auth: { bootstrapToken: bootstrap }, secret: bootstrap, scopes: scopesFor(BOOTSTRAP_OPERATOR_SCOPES) };
  }
  const own = record.tokens[role];
  if (own && usable(own.token)) {
    return {
      kind: 'device-token',
      auth: { deviceToken: own.token },
      secret: own.token,
      scopes: scopesFor(own.scopes.length > 0 ? own.scopes : SHARED_OPERATOR_SCOPES),
    };
  }
  if (usable(record.sharedToken)) {
    return { kind: 'shared-token', auth: { token: record.sharedToken }, secret: record.sharedToken, scopes: scopesFor(SHARED_OPERATOR_SCOPES) };
  }
  if (usable(bootstrap)) {
    return { kind: 'bootstrap-token', auth: { bootstrapToken: bootstrap }, secret: bootstrap, scopes: scopesFor(BOOTSTRAP_OPERATOR_SCOPES) };
  }
  return null;
}

/**
 * A shared secret given to one client for its lifetime (`GatewayClientOptions.sharedSecret`,
 * never stored): a token or a password. The device signature covers a token, never a password
 * (the gateway signs the same field: `signedTokenField`).
 */
export function resolveGivenSecret(given: { token: string } | { password: string }, role: Role, scopes?: string[]): ResolvedCredential | null {
  const scopeList = role === 'node' ? [] : [...(scopes ?? SHARED_OPERATOR_SCOPES)];
  if ('token' in given && usable(given.token)) return { kind: 'shared-token', auth: { token: given.token }, secret: given.token, scopes: scopeList };
  if ('password' in given && usable(given.password)) return { kind: 'password', auth: { password: given.password }, secret: given.password, scopes: scopeList };
  return null;
}

/** A fallback exists for a role whose device token was refused. */
export function hasFallback(record: GatewayRecord): boolean {
  return usable(record.sharedToken) || usable(record.bootstrap?.token);
}

/** A copy that shares nothing mutable with the original (the identity is kept by reference). */
export function cloneRecord(r: GatewayRecord): GatewayRecord {
  const tokens: Partial<Record<Role, RoleToken>> = {};
  for (const [role, t] of Object.entries(r.tokens) as Array<[Role, RoleToken | undefined]>) {
    if (t) tokens[role] = { ...t, scopes: [...t.scopes] };
  }
  const copy: GatewayRecord = { ...r, tokens };
  if (r.bootstrap) copy.bootstrap = { ...r.bootstrap };
  return copy;
}

/** Serialises async work per key within one process (read-modify-write of one record). */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(work, work);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}

/** Unpadded base64url of bytes, without Node's Buffer (browsers). */
export function bytesToBase64Url(bytes: Uint8Array): string {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function bytesToHex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}
