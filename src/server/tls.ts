/**
 * Native TLS material: certificate facts (SHA-256 fingerprint, validity), and the self-signed
 * certificate clawgate generates into the state dir when asked to serve TLS without one. The
 * generation uses the `openssl` CLI (Debian ships it; `scripts/system-deps.sh` ensures it).
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { normalizeFingerprint } from '@clawgate/protocol/fingerprint';
import { fsyncPath, syncDir } from '../platform/durable-file.js';

export interface CertFacts {
  /** SHA-256 of the DER certificate, 64 lowercase hex digits (what setup codes carry). */
  fingerprint: string;
  notBeforeMs: number;
  notAfterMs: number;
  subject: string;
  subjectAltName: string | null;
}

export function certFacts(certPem: string): CertFacts {
  const cert = new X509Certificate(certPem);
  return {
    fingerprint: normalizeFingerprint(cert.fingerprint256) as string,
    notBeforeMs: Date.parse(cert.validFrom),
    notAfterMs: Date.parse(cert.validTo),
    subject: cert.subject,
    subjectAltName: cert.subjectAltName ?? null,
  };
}

export const SELF_SIGNED_DIR = 'tls';
/** Validity of a generated certificate, in days (kept under the 825 days clients accept). */
export const SELF_SIGNED_DAYS = 825;

/**
 * The self-signed certificate in `<stateDir>/tls/`, generated on first use. `names` are the
 * extra DNS names or IP addresses it should cover (localhost, 127.0.0.1 and ::1 always are).
 * Clients do not rely on the names: they pin the fingerprint from the setup code. `validityDays`
 * is shorter only in tests of the expiry warning.
 */
export function ensureSelfSignedCert(
  stateDir: string,
  names: readonly string[] = [],
  validityDays: number = SELF_SIGNED_DAYS,
): { certPath: string; keyPath: string; created: boolean } {
  const dir = join(stateDir, SELF_SIGNED_DIR);
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  if (existsSync(certPath) && existsSync(keyPath)) return { certPath, keyPath, created: false };
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const sans = new Set(['DNS:localhost', 'IP:127.0.0.1', 'IP:::1']);
  for (const n of [hostname(), ...names]) {
    if (!n || n === '0.0.0.0' || n === '::') continue;
    sans.add(isIP(n) ? `IP:${n}` : `DNS:${n}`);
  }
  const tmpCert = `${certPath}.${process.pid}.tmp`;
  const tmpKey = `${keyPath}.${process.pid}.tmp`;
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-sha256',
        '-days',
        String(validityDays),
        '-subj',
        '/CN=clawgate',
        '-addext',
        `subjectAltName=${[...sans].join(',')}`,
        '-keyout',
        tmpKey,
        '-out',
        tmpCert,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (err) {
    rmSync(tmpCert, { force: true });
    rmSync(tmpKey, { force: true });
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new Error('cannot generate a TLS certificate: the openssl command is not installed (or pass --tls-cert/--tls-key)');
    throw new Error(`openssl failed to generate a certificate: ${e.stderr?.toString().trim() || e.message}`);
  }
  chmodSync(tmpKey, 0o600);
  // Durable before visible: a power loss must not leave an empty key or certificate that the
  // next start would take as existing. The certificate goes last: both present means both whole.
  fsyncPath(tmpKey);
  fsyncPath(tmpCert);
  renameSync(tmpKey, keyPath);
  renameSync(tmpCert, certPath);
  syncDir(dir);
  return { certPath, keyPath, created: true };
}

export function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the TLS ${what} ${path}: ${(err as Error).message}`);
  }
}
