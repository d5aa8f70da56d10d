/**
 * Gateway identity and owner proofs (PROTOCOL.md §Gateway identity). Pure: no IO and no
 * Node-only API, so the gateway, the CLI, the client SDK and a browser all build the same
 * byte strings here.
 *
 * Gateway identity: the gateway holds a long-lived Ed25519 key in its state dir. A
 * `connect.challenge` carries `gateway: {v: 1, publicKey, signature}`, where `signature` is the
 * Ed25519 signature of `gatewayChallengePayload(nonce, ts)` by that key, when the client asked
 * for it: `gatewayProof=1` in the query of the WebSocket URL (requestGatewayProof). A client
 * that never checks the proof (OpenClaw's) does not ask, and the gateway does not spend a
 * signature on it. A client that knows which gateway it means (the local state dir's key,
 * `--gateway-key`, or the `gatewayKey` field of a setup code) asks, checks the signature before
 * it sends any secret, and stops otherwise — a squatter that ignores the request cannot forge
 * the answer.
 *
 * Owner proof: the owner credential never travels. The CLI sends
 * `auth.ownerProof = base64url(HMAC-SHA256(ownerCredential, ownerProofPayload(...)))`, bound to
 * this connection's nonce, the gateway key it verified and the URL it dialed, so a captured proof
 * opens nothing: the nonce is single-use, and a relay on another address fails the audience.
 */

export const GATEWAY_PROOF_VERSION = 1;

/** What `connect.challenge.payload.gateway` carries. */
export interface GatewayChallengeProof {
  v: 1;
  /** The gateway's raw 32-byte Ed25519 public key, base64url without padding. */
  publicKey: string;
  /** Ed25519 signature of gatewayChallengePayload(nonce, ts), base64url without padding. */
  signature: string;
}

/** The query parameter of the WebSocket URL that asks the gateway to sign its challenge. */
export const GATEWAY_PROOF_PARAM = 'gatewayProof';

/**
 * `url` asking for a signed challenge: `gatewayProof=1` added to its query (kept when already
 * there; the path, other parameters and any fragment are left as they are). Gateways that do not
 * know the parameter (OpenClaw's) route by path and ignore it.
 */
export function requestGatewayProof(url: string): string {
  const hashAt = url.indexOf('#');
  const base = hashAt >= 0 ? url.slice(0, hashAt) : url;
  const fragment = hashAt >= 0 ? url.slice(hashAt) : '';
  if (asksForGatewayProof(base)) return url;
  const queryAt = base.indexOf('?');
  const sep = queryAt < 0 ? '?' : queryAt === base.length - 1 || base.endsWith('&') ? '' : '&';
  return `${base}${sep}${GATEWAY_PROOF_PARAM}=1${fragment}`;
}

const ADDED_PARAM = new RegExp(`([?&])${GATEWAY_PROOF_PARAM}=1(&|(?=#)|$)`);

/** `url` as the person gave it: the parameter requestGatewayProof added, taken out again (for messages). */
export function withoutGatewayProofRequest(url: string): string {
  return url.replace(ADDED_PARAM, (_m, lead: string, tail: string) => (tail === '&' ? lead : '')).replace(/\?(?=#|$)/, '');
}

/** Whether an HTTP request target (`/path?query`, or a URL without its fragment) asks for a signed challenge. */
export function asksForGatewayProof(requestTarget: string): boolean {
  const queryAt = requestTarget.indexOf('?');
  return queryAt >= 0 && new URLSearchParams(requestTarget.slice(queryAt + 1)).get(GATEWAY_PROOF_PARAM) === '1';
}

/** The exact bytes (UTF-8) the gateway signs for one challenge. */
export function gatewayChallengePayload(nonce: string, ts: number): string {
  return `clawgate-gateway-v1\n${nonce}\n${ts}`;
}

/**
 * The exact bytes (UTF-8) the owner proof authenticates: this connection's challenge nonce, the
 * gateway public key the client verified (base64url), and the audience the client dialed.
 */
export function ownerProofPayload(nonce: string, gatewayPublicKey: string, audience: string): string {
  return `clawgate-owner-v1\n${nonce}\n${gatewayPublicKey}\n${audience}`;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/**
 * The audience of a gateway URL: `scheme://host:port` with the scheme reduced to ws/wss, the
 * host lower-cased, the port explicit and every loopback spelling written `loopback`, so the
 * client and the gateway compute the same string for `ws://localhost:18789/` and
 * `ws://127.0.0.1:18789`. Null when the text is not a ws/wss/http/https URL.
 */
export function audienceOf(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  const scheme = u.protocol === 'ws:' || u.protocol === 'http:' ? 'ws' : u.protocol === 'wss:' || u.protocol === 'https:' ? 'wss' : null;
  if (!scheme || !u.hostname) return null;
  const host = u.hostname.toLowerCase();
  const port = u.port || (scheme === 'wss' ? '443' : '80');
  const loopback = LOOPBACK_HOSTS.has(host) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  return `${scheme}://${loopback ? 'loopback' : host}:${port}`;
}

/** `AB:CD:…`, `abcd…` or `sha256:abcd…` → 64 lowercase hex; null when it is not a SHA-256 fingerprint. */
export function normalizeGatewayKeyFingerprint(text: string): string | null {
  const hex = text
    .trim()
    .replace(/^sha256:/i, '')
    .replace(/:/g, '')
    .toLowerCase();
  return /^[0-9a-f]{64}$/.test(hex) ? hex : null;
}

/** Shape check of a challenge's `gateway` field (the signature itself is checked by the caller). */
export function parseGatewayChallengeProof(value: unknown): GatewayChallengeProof | null {
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (v.v !== 1 || typeof v.publicKey !== 'string' || typeof v.signature !== 'string') return null;
  if (!/^[A-Za-z0-9_-]{43}$/.test(v.publicKey) || !/^[A-Za-z0-9_-]{86}$/.test(v.signature)) return null;
  return { v: 1, publicKey: v.publicKey, signature: v.signature };
}
