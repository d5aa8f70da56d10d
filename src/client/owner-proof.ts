/**
 * The owner proof (PROTOCOL.md §Gateway identity and owner proof): the owner credential is never
 * sent; the client answers a challenge the gateway signed with an HMAC, keyed by the credential,
 * over the challenge nonce, the gateway key that signed it and the URL dialed.
 */
import { createHmac } from 'node:crypto';
import { ownerProofPayload } from '@clawgate/protocol/gateway-proof';

/** base64url HMAC-SHA256 of the owner proof payload, keyed by the owner credential. */
export function ownerProofFor(owner: string, nonce: string, gatewayPublicKey: string, audience: string): string {
  return createHmac('sha256', Buffer.from(owner, 'utf8'))
    .update(ownerProofPayload(nonce, gatewayPublicKey, audience), 'utf8')
    .digest('base64url');
}
