/** The gateway identity key file in the state dir (`gateway-key.pem`, mode 0600), made on first start. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type GatewayIdentity, gatewayIdentityFromPem, generateGatewayKeyPem } from '../core/gateway-identity.js';
import { writeFileDurably } from '../platform/durable-file.js';

export const GATEWAY_KEY_FILE = 'gateway-key.pem';

/** Read the state dir's gateway key, creating it (durably, 0600) when there is none. */
export function loadOrCreateGatewayIdentity(stateDir: string): { identity: GatewayIdentity; created: boolean } {
  const path = join(stateDir, GATEWAY_KEY_FILE);
  let pem: string | null = null;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (pem !== null) {
    try {
      return { identity: gatewayIdentityFromPem(pem), created: false };
    } catch (err) {
      throw new Error(
        `${path} is not a usable gateway key (${(err as Error).message}); move it away to generate a new one (clients that pinned the old key must be told the new fingerprint)`,
      );
    }
  }
  const fresh = generateGatewayKeyPem();
  writeFileDurably(path, fresh);
  return { identity: gatewayIdentityFromPem(fresh), created: true };
}

/** The fingerprint of the state dir's gateway key without creating one (null when there is none). */
export function readGatewayKeyFingerprint(stateDir: string): string | null {
  try {
    return gatewayIdentityFromPem(readFileSync(join(stateDir, GATEWAY_KEY_FILE), 'utf8')).fingerprint;
  } catch {
    return null;
  }
}
