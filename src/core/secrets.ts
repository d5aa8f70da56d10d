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

/** `dashboard`: the one-time owner sign-in link of the Control UI (`clawgate dashboard`). */
export type TokenKind = 'device' | 'bootstrap' | 'dashboard';
const PREFIX: Record<TokenKind, string> = { device: 'cgd1', bootstrap: 'cgb1', dashboard: 'cgl1' };
const TOKEN_RE = /^(cgd1|cgb1|cgl1)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

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
