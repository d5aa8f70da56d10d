/**
 * Device identity and the device proof of a connect (PROTOCOL.md §Device proof).
 * Pure: the caller passes the challenge nonce and the server time.
 */
import { createHash, createPublicKey, type KeyObject, verify } from 'node:crypto';
import { GatewayError } from '@clawgate/protocol/errors';
import type { ConnectParams } from '@clawgate/protocol/frames';
import { DEVICE_SIGNATURE_SKEW_MS, type SignatureFields, signaturePayloadV2, signaturePayloadV3, signedTokenField } from '@clawgate/protocol/signature';

const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function base64UrlDecode(value: string): Buffer | null {
  if (!/^[A-Za-z0-9_-]*={0,2}$/.test(value)) return null;
  return Buffer.from(value.replace(/=+$/, ''), 'base64url');
}

function base64Decode(value: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value)) return null;
  return Buffer.from(value, 'base64');
}

/** Raw 32-byte key from unpadded base64url, or from an SPKI PEM (accepted for compatibility). */
export function parsePublicKey(value: string): Buffer | null {
  if (value.includes('BEGIN')) {
    try {
      const der = createPublicKey(value).export({ format: 'der', type: 'spki' });
      if (der.length !== 44 || !der.subarray(0, 12).equals(SPKI_ED25519_PREFIX)) return null;
      return Buffer.from(der.subarray(12));
    } catch {
      return null;
    }
  }
  const raw = base64UrlDecode(value);
  return raw && raw.length === 32 ? raw : null;
}

export function deviceIdOf(rawPublicKey: Buffer): string {
  return createHash('sha256').update(rawPublicKey).digest('hex');
}

/** The key object of a raw Ed25519 public key (an import costs ~100 µs; the connect path keeps them in `knownKeys`). */
export function publicKeyObject(rawPublicKey: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, rawPublicKey]), format: 'der', type: 'spki' });
}

/**
 * What a presented public key string resolves to, kept for keys that verified a signature: a
 * paired device reconnects with the same string, so its decoding, its id hash and its key
 * import are done once (at most KNOWN_KEYS_MAX, oldest dropped first; an evicted key is only
 * decoded again).
 */
interface KnownKey {
  raw: Buffer;
  deviceId: string;
  /** Canonical unpadded base64url of the raw key. */
  canonical: string;
  key: KeyObject;
}
const KNOWN_KEYS_MAX = 4096;
const knownKeys = new Map<string, KnownKey>();

function rememberKey(presented: string, known: KnownKey): void {
  if (knownKeys.size >= KNOWN_KEYS_MAX) {
    const oldest = knownKeys.keys().next().value;
    if (oldest !== undefined) knownKeys.delete(oldest);
  }
  knownKeys.set(presented, known);
}

export interface VerifiedDevice {
  deviceId: string;
  /** Canonical unpadded base64url of the raw key. */
  publicKey: string;
  signatureVersion: 'v3' | 'v2';
}

/**
 * Check the device block of a connect, in the reference's order: id, freshness, nonce
 * presence, nonce match, signature. Returns the verified identity or the failure as a value.
 */
export function verifyDeviceProof(params: ConnectParams, role: string, challengeNonce: string, nowMs: number): VerifiedDevice | GatewayError {
  const device = params.device;
  if (!device) throw new Error('verifyDeviceProof called without a device block');
  const fail = (detail: ConstructorParameters<typeof GatewayError>[0], reason: string) => new GatewayError(detail, { details: { reason } });
  const known = knownKeys.get(device.publicKey);
  const raw = known ? known.raw : parsePublicKey(device.publicKey);
  // An unparsable key cannot match any id: report it as the id mismatch, like the reference.
  if (!raw || (known ? known.deviceId : deviceIdOf(raw)) !== device.id) return fail('DEVICE_AUTH_DEVICE_ID_MISMATCH', 'device-id-mismatch');
  if (Math.abs(nowMs - device.signedAt) > DEVICE_SIGNATURE_SKEW_MS) return fail('DEVICE_AUTH_SIGNATURE_EXPIRED', 'device-signature-stale');
  const nonce = device.nonce.trim();
  if (!nonce) return fail('DEVICE_AUTH_NONCE_REQUIRED', 'device-nonce-missing');
  if (nonce !== challengeNonce) return fail('DEVICE_AUTH_NONCE_MISMATCH', 'device-nonce-mismatch');
  const signature = base64UrlDecode(device.signature) ?? base64Decode(device.signature);
  if (signature?.length !== 64) return fail('DEVICE_AUTH_SIGNATURE_INVALID', 'device-signature');
  let key: KeyObject;
  try {
    key = known ? known.key : publicKeyObject(raw);
  } catch {
    return fail('DEVICE_AUTH_PUBLIC_KEY_INVALID', 'device-public-key');
  }
  const fields: SignatureFields = {
    deviceId: device.id,
    clientId: params.client.id,
    clientMode: params.client.mode,
    role,
    scopes: params.scopes ?? [],
    signedAtMs: device.signedAt,
    token: signedTokenField(params.auth),
    nonce: device.nonce,
    platform: params.client.platform,
    deviceFamily: params.client.deviceFamily,
  };
  const publicKey = known ? known.canonical : raw.toString('base64url');
  let signatureVersion: VerifiedDevice['signatureVersion'] | null = null;
  if (verify(null, Buffer.from(signaturePayloadV3(fields), 'utf8'), key, signature)) signatureVersion = 'v3';
  else if (verify(null, Buffer.from(signaturePayloadV2(fields), 'utf8'), key, signature)) signatureVersion = 'v2';
  if (signatureVersion) {
    if (!known) rememberKey(device.publicKey, { raw, deviceId: device.id, canonical: publicKey, key });
    return { deviceId: device.id, publicKey, signatureVersion };
  }
  return fail('DEVICE_AUTH_SIGNATURE_INVALID', 'device-signature');
}
