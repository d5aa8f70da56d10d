/**
 * What clawgate's own Node client learns about a TLS peer: which certificate errors mean "not
 * trusted here" (time will not fix them) and the fingerprint of the certificate presented. The
 * client SDK keeps its own copy, so src/ reaches the SDK only through its public entry points.
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { normalizeFingerprint } from '@clawgate/protocol/fingerprint';

/** Certificate errors that time will not fix: the server's certificate is not trusted here. */
export const CERT_ERROR_CODES: ReadonlySet<string> = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** SHA-256 fingerprint of the certificate the server presented on this upgrade, null without one. */
export function peerFingerprint(res: IncomingMessage): string | null {
  const cert = (res.socket as TLSSocket).getPeerCertificate?.();
  return cert?.fingerprint256 ? normalizeFingerprint(cert.fingerprint256) : null;
}
