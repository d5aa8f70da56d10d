/**
 * Device-proof payload strings, byte-exact with the reference (PROTOCOL.md §Device proof).
 * Both the gateway (to verify) and the client SDK (to sign) build them here, so the two can
 * never drift apart.
 */
export interface SignatureFields {
  deviceId: string;
  clientId: string;
  clientMode: string;
  role: string;
  scopes: readonly string[];
  signedAtMs: number;
  /** auth.token, else auth.deviceToken, else auth.bootstrapToken, else '' (never the password). */
  token: string;
  nonce: string;
  platform?: string | undefined;
  deviceFamily?: string | undefined;
}

/** Trim and lower-case ASCII A–Z only; other characters are kept as they are. */
export function normalizeMetadataField(value: string | undefined): string {
  if (!value) return '';
  return value.trim().replace(/[A-Z]/g, (c) => c.toLowerCase());
}

export function signaturePayloadV3(f: SignatureFields): string {
  return [
    'v3',
    f.deviceId,
    f.clientId,
    f.clientMode,
    f.role,
    f.scopes.join(','),
    String(f.signedAtMs),
    f.token,
    f.nonce,
    normalizeMetadataField(f.platform),
    normalizeMetadataField(f.deviceFamily),
  ].join('|');
}

export function signaturePayloadV2(f: SignatureFields): string {
  return ['v2', f.deviceId, f.clientId, f.clientMode, f.role, f.scopes.join(','), String(f.signedAtMs), f.token, f.nonce].join('|');
}

/** The token field of the signed payload, in the reference's precedence. */
export function signedTokenField(auth: { token?: string; deviceToken?: string; bootstrapToken?: string } | undefined): string {
  return auth?.token ?? auth?.deviceToken ?? auth?.bootstrapToken ?? '';
}

/** Allowed distance between device.signedAt and the server clock. */
export const DEVICE_SIGNATURE_SKEW_MS = 120_000;
