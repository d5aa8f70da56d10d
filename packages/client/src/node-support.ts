/**
 * Node-only helpers the SDK's Node platform shares with clawgate's own client and node host
 * (`src/` may import the SDK; the SDK never imports `src/` code that opens sockets or files).
 * Not part of the package's public exports.
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { normalizeFingerprint } from '../../../src/protocol/fingerprint.js';

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

/** Whether a process with this id exists (EPERM: it does, owned by another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
