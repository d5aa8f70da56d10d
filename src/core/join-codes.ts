/**
 * Join codes: `https://<gateway>/j/<shortcode>`, what `openclaw devices join-code` prints and
 * `openclaw connect <joinUrl>` fetches exactly once. A shortcode is 128 random bits
 * (22 base64url characters, the reference's form); fetching it returns the setup payload of a
 * freshly minted setup code and burns the shortcode, so a used code answers exactly like an
 * unknown one.
 *
 * The payload carries a bootstrap secret, so it lives only in this process's memory (never in
 * the store or a log) and is keyed by a hash of the shortcode. It expires with its setup code.
 * A gateway restart forgets every join code (the setup code itself stays valid until it
 * expires); in a cluster, a join URL is answered by the instance that minted it.
 */
import { createHash } from 'node:crypto';
import type { SetupPayload } from '@clawgate/protocol/setup-code';
import type { Clock, Random } from './env.js';

/** The reference's shortcode form: 16 random bytes, unpadded base64url. */
export const JOIN_CODE_RE = /^[A-Za-z0-9_-]{22}$/;
/** Live join codes one process keeps at most; minting beyond it drops the oldest first. */
export const MAX_LIVE_JOIN_CODES = 256;

interface Entry {
  payload: SetupPayload;
  expiresAtMs: number;
}

const keyOf = (shortcode: string) => createHash('sha256').update(shortcode).digest('hex');

export class JoinCodes {
  private readonly live = new Map<string, Entry>();

  constructor(
    private readonly clock: Clock,
    private readonly random: Random,
  ) {}

  /** Register a setup payload; returns the shortcode (shown once, never stored). */
  register(payload: SetupPayload): string {
    this.prune();
    while (this.live.size >= MAX_LIVE_JOIN_CODES) {
      const oldest = this.live.keys().next().value as string;
      this.live.delete(oldest);
    }
    const shortcode = this.random.bytes(16).toString('base64url');
    this.live.set(keyOf(shortcode), { payload, expiresAtMs: payload.expiresAtMs });
    return shortcode;
  }

  /** Burn a shortcode and return its payload; null for a malformed, unknown, used or expired one. */
  redeem(shortcode: string): SetupPayload | null {
    if (!JOIN_CODE_RE.test(shortcode)) return null;
    const key = keyOf(shortcode);
    const entry = this.live.get(key);
    this.live.delete(key);
    if (!entry || entry.expiresAtMs <= this.clock.now()) return null;
    return entry.payload;
  }

  get size(): number {
    this.prune();
    return this.live.size;
  }

  private prune(): void {
    const now = this.clock.now();
    for (const [k, e] of this.live) if (e.expiresAtMs <= now) this.live.delete(k);
  }
}

/** The join URL for a shortcode, on the HTTP(S) origin of the gateway's advertised `ws(s)://` URL. */
export function joinUrl(advertisedWsUrl: string, shortcode: string): string {
  const u = new URL(advertisedWsUrl.replace(/^ws(s?):\/\//i, (_m, s: string) => `http${s}://`));
  const base = u.pathname.replace(/\/+$/, '');
  return `${u.protocol}//${u.host}${base}/j/${shortcode}`;
}

/** The join codes of one gateway (the registry its composition root made with it). */
export function joinCodesOf(gw: { joinCodes: JoinCodes }): JoinCodes {
  return gw.joinCodes;
}

/** A join URL must not carry a bootstrap secret in clear text beyond this host. */
export function joinUrlProblem(advertisedWsUrl: string): string | null {
  const u = new URL(advertisedWsUrl);
  if (u.protocol === 'wss:') return null;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host)) return null;
  return `a join URL for ${u.protocol}//${u.host} would be plain HTTP beyond this host: serve TLS (wss://) or set a wss:// publicUrl`;
}
