/**
 * Checking the gateway's identity on a connect challenge (PROTOCOL.md §Gateway identity) before
 * any secret leaves the device. Platform-neutral: the signature check and the hash come from the
 * platform's CryptoProvider (node:crypto or WebCrypto), the byte strings from the wire module.
 */
import { gatewayChallengePayload, parseGatewayChallengeProof } from '@clawgate/protocol/gateway-proof';
import type { CryptoProvider } from './types.js';

export type GatewayProofCheck = { ok: true; publicKey: string; fingerprint: string } | { ok: false; problem: string };

/**
 * Does this challenge prove the key `expected` (64 lowercase hex)? With `expected` null only the
 * signature is checked, so the caller learns which key answered (and may pin it).
 */
export async function checkChallengeProof(crypto: CryptoProvider, payload: unknown, expected: string | null): Promise<GatewayProofCheck> {
  const p = payload as { nonce?: unknown; ts?: unknown; gateway?: unknown } | null;
  if (typeof p?.nonce !== 'string' || typeof p.ts !== 'number') return { ok: false, problem: 'the challenge has no nonce' };
  const proof = parseGatewayChallengeProof(p.gateway);
  if (!proof) {
    return {
      ok: false,
      problem: 'the server did not prove a gateway identity (not a clawgate gateway, or not the one this device paired with)',
    };
  }
  const fingerprint = await crypto.keyFingerprint(proof.publicKey);
  if (!fingerprint) return { ok: false, problem: 'the gateway key in the challenge is malformed' };
  if (expected !== null && fingerprint !== expected) {
    return { ok: false, problem: `the server presented gateway key ${fingerprint}, not the expected ${expected}` };
  }
  // Checked even when the fingerprint matches: a copied public key without the private half must fail here.
  const good = await crypto.verify(proof.publicKey, gatewayChallengePayload(p.nonce, p.ts), proof.signature);
  if (!good) return { ok: false, problem: `the challenge signature does not verify under gateway key ${fingerprint}` };
  return { ok: true, publicKey: proof.publicKey, fingerprint };
}
