/**
 * Secrets: minting, hashing and constant-time comparison.
 *
 * Device tokens and setup codes have a public id and a secret: `<prefix>_<16 hex id>_<43 char
 * secret>`. The store keeps only SHA-256(secret) (the secret is 32 random bytes, so a slow
 * KDF would add nothing) and looks a token up by its id, so verification is one indexed read
 * plus one constant-time compare. Shared secrets (gateway token, password, owner credential)
 * are compared as HMACs under a per-process key, so their lengths leak nothing either.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Random } from './env.js';

/**
 * `dashboard`: the one-time owner sign-in link of the Control UI (`clawgate dashboard`).
 * `approval-link`: the one-time link of an approval notification; it only points the signed-in
 * Control UI at a request and carries no authority (core/approval-notify.ts).
 */
export type TokenKind = 'device' | 'bootstrap' | 'dashboard' | 'approval-link';
const PREFIX: Record<TokenKind, string> = { device: 'cgd1', bootstrap: 'cgb1', dashboard: 'cgl1', 'approval-link': 'cga1' };
const TOKEN_RE = /^(cgd1|cgb1|cgl1|cga1)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

export interface MintedToken {
  id: string;
  /** The bearer string handed to the client exactly once. */
  token: string;
  secretHash: Buffer;
}

export function mintToken(kind: TokenKind, random: Random): MintedToken {
  const id = random.bytes(8).toString('hex');
  const secret = random.bytes(32).toString('base64url');
  return { id, token: `${PREFIX[kind]}_${id}_${secret}`, secretHash: hashSecret(secret) };
}

export function parseToken(kind: TokenKind, token: string): { id: string; secret: string } | null {
  const m = TOKEN_RE.exec(token);
  if (!m || m[1] !== PREFIX[kind]) return null;
  return { id: m[2] as string, secret: m[3] as string };
}

export function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/** Constant-time check of a presented secret against a stored hash. */
export function secretMatchesHash(secret: string, storedHash: Buffer): boolean {
  const h = hashSecret(secret);
  return h.length === storedHash.length && timingSafeEqual(h, storedHash);
}

/** Holds one configured shared secret and compares candidates in constant time. */
export class SharedSecret {
  private static readonly key = randomBytes(32);
  private readonly digest: Buffer;
  constructor(value: string) {
    this.digest = SharedSecret.mac(value);
  }
  private static mac(value: string): Buffer {
    return createHmac('sha256', SharedSecret.key).update(value, 'utf8').digest();
  }
  matches(candidate: unknown): boolean {
    if (typeof candidate !== 'string') return false;
    return timingSafeEqual(SharedSecret.mac(candidate), this.digest);
  }
}

/** A fresh high-entropy secret for the gateway token or the owner credential. */
export function generateSecret(prefix: 'cgs' | 'cgo', random: Random): string {
  return `${prefix}_${random.bytes(32).toString('base64url')}`;
}

/**
 * Device tokens imported from OpenClaw (`clawgate import openclaw`): 32 random bytes in
 * base64url, with no id of their own. The store keeps them like its own tokens: under an id
 * derived from the token (a domain-separated SHA-256, so the id reveals nothing of the stored
 * hash) with SHA-256 of the whole token as the secret hash. Verification is the same indexed
 * read plus constant-time compare; no plaintext is ever written.
 */
const IMPORTED_RE = /^[A-Za-z0-9_-]{43}$/;
const IMPORTED_ID_DOMAIN = 'clawgate-imported-token-id\n';

export function isImportedTokenShape(token: string): boolean {
  return IMPORTED_RE.test(token);
}

export function importedTokenId(token: string): string {
  return createHash('sha256').update(IMPORTED_ID_DOMAIN, 'utf8').update(token, 'utf8').digest('hex').slice(0, 16);
}

/** What the store keeps of an imported token. */
export function hashImportedToken(token: string): { tokenId: string; secretHash: Buffer } {
  return { tokenId: importedTokenId(token), secretHash: hashSecret(token) };
}

/**
 * The store key of any presented device token: a clawgate token by its id and secret, an
 * imported one by its derived id with the whole token as the secret. Null for neither shape.
 */
export function deviceTokenKey(token: string): { id: string; secret: string } | null {
  const own = parseToken('device', token);
  if (own) return own;
  return IMPORTED_RE.test(token) ? { id: importedTokenId(token), secret: token } : null;
}
