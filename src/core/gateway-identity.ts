/**
 * The gateway's own long-lived Ed25519 identity (PROTOCOL.md §Gateway identity): it signs every
 * connect challenge so a client can tell the gateway it means from whatever answers on the port.
 * Pure crypto: the key material is loaded by the composition root and injected here.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { type GatewayChallengeProof, gatewayChallengePayload, parseGatewayChallengeProof } from '@clawgate/protocol/gateway-proof';
import { parsePublicKey, publicKeyObject } from './identity.js';

export interface GatewayIdentity {
  /** Raw 32-byte public key, unpadded base64url (what challenges carry). */
  readonly publicKey: string;
  /** SHA-256 of the raw public key, 64 lowercase hex (what setup codes and `--gateway-key` carry). */
  readonly fingerprint: string;
  /** The `gateway` field of a connect.challenge for this nonce and timestamp. */
  proveChallenge(nonce: string, ts: number): GatewayChallengeProof;
  /** Ed25519 signature over `data`, unpadded base64url (the audit anchor; docs/security.md §Audit log). */
  sign(data: Buffer): string;
}

/** SHA-256 fingerprint (64 lowercase hex) of a raw public key given as unpadded base64url. */
export function gatewayKeyFingerprint(publicKey: string): string {
  const raw = parsePublicKey(publicKey);
  if (!raw) throw new Error('not an Ed25519 public key');
  return createHash('sha256').update(raw).digest('hex');
}

class Ed25519GatewayIdentity implements GatewayIdentity {
  readonly publicKey: string;
  readonly fingerprint: string;
  constructor(private readonly privateKey: KeyObject) {
    const der = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
    this.publicKey = Buffer.from(der.subarray(der.length - 32)).toString('base64url');
    this.fingerprint = gatewayKeyFingerprint(this.publicKey);
  }
  proveChallenge(nonce: string, ts: number): GatewayChallengeProof {
    const signature = sign(null, Buffer.from(gatewayChallengePayload(nonce, ts), 'utf8'), this.privateKey).toString('base64url');
    return { v: 1, publicKey: this.publicKey, signature };
  }
  sign(data: Buffer): string {
    return sign(null, data, this.privateKey).toString('base64url');
  }
}

/** The identity held in a PKCS#8 PEM private key (throws when it is not an Ed25519 key). */
export function gatewayIdentityFromPem(pem: string): GatewayIdentity {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`the gateway key must be Ed25519, got ${key.asymmetricKeyType}`);
  return new Ed25519GatewayIdentity(key);
}

/** A new key as PKCS#8 PEM (the composition root writes it to the state dir, mode 0600). */
export function generateGatewayKeyPem(): string {
  const { privateKey } = generateKeyPairSync('ed25519');
  return privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

export type ChallengeCheck = { ok: true; publicKey: string; fingerprint: string } | { ok: false; problem: string };

/**
 * Does this challenge prove the gateway holds the key with `expectedFingerprint`? A client calls
 * this before it sends any secret. With no expectation it only checks the signature, so the
 * caller learns which key answered (trust on first use is the caller's decision).
 */
export function checkGatewayChallenge(payload: unknown, expectedFingerprint: string | null): ChallengeCheck {
  const p = payload as { nonce?: unknown; ts?: unknown; gateway?: unknown } | null;
  if (typeof p?.nonce !== 'string' || typeof p.ts !== 'number') return { ok: false, problem: 'the challenge has no nonce' };
  const proof = parseGatewayChallengeProof(p.gateway);
  if (!proof) return { ok: false, problem: 'the server did not prove a gateway identity (not a clawgate gateway, or an older one)' };
  const raw = parsePublicKey(proof.publicKey);
  if (!raw) return { ok: false, problem: 'the gateway key in the challenge is malformed' };
  const fingerprint = createHash('sha256').update(raw).digest('hex');
  if (expectedFingerprint !== null && fingerprint !== expectedFingerprint) {
    return { ok: false, problem: `the server's gateway key ${fingerprint} is not the expected ${expectedFingerprint}` };
  }
  const good = verify(null, Buffer.from(gatewayChallengePayload(p.nonce, p.ts), 'utf8'), publicKeyObject(raw), Buffer.from(proof.signature, 'base64url'));
  if (!good) return { ok: false, problem: 'the gateway key signature over this challenge does not verify' };
  return { ok: true, publicKey: proof.publicKey, fingerprint };
}
