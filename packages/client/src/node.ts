/**
 * The Node platform: `ws` sockets, node:crypto Ed25519 keys (stored as PKCS#8 PEM) and a file
 * credential store (one JSON file per gateway, mode 0600, written atomically and fsync'd).
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, sign, verify } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { normalizeFingerprint } from '@clawgate/protocol/fingerprint';
import { withoutGatewayProofRequest } from '@clawgate/protocol/gateway-proof';
import { WebSocket } from 'ws';
import { KeyedQueue } from './credentials.js';
import { CredentialStoreError } from './errors.js';
import { CERT_ERROR_CODES, commitDurably, peerFingerprint, processAlive, syncDir, writeTempDurably } from './node-support.js';
import type { CheckpointHook, CredentialStore, CryptoProvider, DeviceKey, GatewayRecord, Platform, Transport, UpdateOptions } from './types.js';

export * from './index.js';

/** How long a closed socket waits for the peer's close frame before it is cut. */
const CLOSE_ANSWER_MS = 1000;
/** How much of a refused upgrade's response body reaches the close reason (it is shown to people). */
const UPGRADE_BODY_MAX_CHARS = 300;

export const nodeTransport: Transport = (url, h, opts = {}) => {
  // What messages name: the URL as given, without the query parameter the client added.
  const shown = withoutGatewayProofRequest(url);
  const pin = opts.tlsFingerprint ? normalizeFingerprint(opts.tlsFingerprint) : null;
  // With a pin, comparing the certificate's fingerprint replaces CA verification (self-signed is the point).
  const ws = new WebSocket(url, { perMessageDeflate: false, ...(pin ? { rejectUnauthorized: false } : {}) });
  let tlsFailure: string | null = null;
  if (pin) {
    ws.on('upgrade', (res) => {
      const actual = peerFingerprint(res);
      if (actual === pin) return;
      // Before `open`: not one frame, let alone a credential, reaches this server.
      tlsFailure =
        `TLS_PIN_MISMATCH: the certificate at ${shown} is not the one this device paired with ` +
        `(expected SHA-256 ${pin}, got ${actual ?? 'none'}): it was replaced, or something is intercepting the connection`;
      ws.terminate();
    });
  }
  // An HTTP answer instead of the upgrade (a proxy's 403, a 404 path): reported as the close
  // reason `HTTP_<status>: <body>` so the client can tell a refusal from an unreachable host.
  let httpFailure: string | null = null;
  ws.on('unexpected-response', (_req, res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      if (body.length < UPGRADE_BODY_MAX_CHARS) body += chunk;
    });
    res.on('error', () => {});
    res.on('end', () => {
      httpFailure = `HTTP_${res.statusCode ?? 0}: ${body.slice(0, UPGRADE_BODY_MAX_CHARS).trim() || (res.statusMessage ?? '')}`;
      ws.terminate();
    });
  });
  ws.on('open', () => {
    if (!tlsFailure) h.onOpen();
  });
  ws.on('ping', () => {
    if (!tlsFailure && !httpFailure) h.onPing?.();
  });
  ws.on('message', (data, isBinary) => {
    if (!isBinary && !tlsFailure) h.onMessage(data.toString());
  });
  ws.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code && CERT_ERROR_CODES.has(err.code) && !tlsFailure) tlsFailure = `TLS_UNTRUSTED: the certificate at ${shown} is not trusted here (${err.code})`;
    h.onError(err.message);
  });
  ws.on('close', (code, reason) => {
    if (tlsFailure) h.onClose(1015, tlsFailure);
    else if (httpFailure) h.onClose(1006, httpFailure);
    else h.onClose(code, reason.toString());
  });
  return {
    send: (text) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(text);
    },
    close: (code, reason) => {
      if (ws.readyState === WebSocket.CLOSED || ws.readyState === WebSocket.CLOSING) return;
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else {
        ws.close(code, reason);
        // A gateway answers the close frame at once; a peer that does not (a squatter the client
        // refused, a dead proxy) would hold the socket, and a one-shot process, for ws's 30 s.
        setTimeout(() => ws.terminate(), CLOSE_ANSWER_MS).unref();
      }
    },
  };
};

interface StoredNodeKey {
  alg: 'ed25519';
  privateKeyPem: string;
}

function keyFrom(privateKey: KeyObject): DeviceKey {
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`expected an ed25519 key, got ${privateKey.asymmetricKeyType}`);
  const raw = createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(12);
  return {
    deviceId: createHash('sha256').update(raw).digest('hex'),
    publicKey: raw.toString('base64url'),
    sign: async (payload) => sign(null, Buffer.from(payload, 'utf8'), privateKey).toString('base64url'),
  };
}

/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** The 32 raw key bytes of unpadded base64url text, or null. */
function rawPublicKey(publicKey: string): Buffer | null {
  if (!/^[A-Za-z0-9_-]{43}$/.test(publicKey)) return null;
  const raw = Buffer.from(publicKey, 'base64url');
  return raw.length === 32 ? raw : null;
}

export const nodeCrypto: CryptoProvider = {
  async generate() {
    const { privateKey } = generateKeyPairSync('ed25519');
    const stored: StoredNodeKey = { alg: 'ed25519', privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString() };
    return { key: keyFrom(privateKey), stored };
  },
  async restore(stored) {
    const s = stored as Partial<StoredNodeKey> | null;
    if (s?.alg !== 'ed25519' || typeof s.privateKeyPem !== 'string') throw new Error('not a stored ed25519 key');
    return keyFrom(createPrivateKey(s.privateKeyPem));
  },
  async verify(publicKey, payload, signature) {
    const raw = rawPublicKey(publicKey);
    if (!raw || !/^[A-Za-z0-9_-]{86}$/.test(signature)) return false;
    try {
      const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
      return verify(null, Buffer.from(payload, 'utf8'), key, Buffer.from(signature, 'base64url'));
    } catch {
      return false;
    }
  },
  async keyFingerprint(publicKey) {
    const raw = rawPublicKey(publicKey);
    return raw ? createHash('sha256').update(raw).digest('hex') : null;
  },
};

export function nodePlatform(opts: { transport?: Transport } = {}): Platform {
  return { transport: opts.transport ?? nodeTransport, crypto: nodeCrypto, platformName: process.platform };
}

/** How long a writer waits for another process's lock before giving up. */
const LOCK_WAIT_MS = 10_000;

function isRecord(v: unknown): v is GatewayRecord {
  const r = v as GatewayRecord;
  return (
    typeof r === 'object' &&
    r !== null &&
    r.version === 1 &&
    typeof r.key === 'string' &&
    typeof r.url === 'string' &&
    typeof r.deviceId === 'string' &&
    typeof r.tokens === 'object' &&
    r.tokens !== null
  );
}

/**
 * One file per gateway under `<dir>/gateways/`, named by a hash of the gateway key. A write goes
 * to a temp file (0600, fsync'd), is renamed over the old file, and the directory is fsync'd:
 * after `update` resolves the record survives a crash or power loss, and a crash before the
 * rename leaves the previous record intact.
 */
export class FileCredentialStore implements CredentialStore {
  private readonly queue = new KeyedQueue();
  readonly gatewaysDir: string;

  constructor(
    readonly dir: string,
    private readonly opts: { checkpoint?: CheckpointHook } = {},
  ) {
    this.gatewaysDir = join(dir, 'gateways');
  }

  fileFor(key: string): string {
    return join(this.gatewaysDir, `${createHash('sha256').update(key).digest('hex').slice(0, 32)}.json`);
  }

  private read(path: string, key?: string): GatewayRecord | null {
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new CredentialStoreError(`cannot read ${path}: ${(err as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new CredentialStoreError(`${path} is not valid JSON`);
    }
    if (!isRecord(parsed) || (key !== undefined && parsed.key !== key)) throw new CredentialStoreError(`${path} is not a clawgate gateway record`);
    return parsed;
  }

  async load(key: string): Promise<GatewayRecord | null> {
    return this.read(this.fileFor(key), key);
  }

  update(key: string, mutate: (current: GatewayRecord | null) => GatewayRecord | null, opts: UpdateOptions = {}): Promise<GatewayRecord | null> {
    return this.queue.run(key, async () => {
      const path = this.fileFor(key);
      mkdirSync(this.gatewaysDir, { recursive: true, mode: 0o700 });
      const unlock = await this.lock(path);
      try {
        return await this.updateLocked(path, key, mutate, opts);
      } finally {
        unlock();
      }
    });
  }

  /**
   * Another process (a node host while `clawgate pair` runs) may update the same record: a lock
   * file next to it, holding the owner's pid, serialises the read-modify-write. A lock whose
   * owner died is taken over.
   */
  private async lock(path: string): Promise<() => void> {
    const lockPath = `${path}.lock`;
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        const fd = openSync(lockPath, 'wx', 0o600);
        try {
          writeSync(fd, String(process.pid));
        } finally {
          closeSync(fd);
        }
        return () => {
          try {
            unlinkSync(lockPath);
          } catch {
            // Already gone.
          }
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      let owner = Number.NaN;
      let ageMs = 0;
      try {
        owner = Number.parseInt(readFileSync(lockPath, 'utf8'), 10);
        ageMs = Date.now() - statSync(lockPath).mtimeMs;
      } catch {
        continue; // released meanwhile
      }
      const dead = Number.isInteger(owner) && owner > 0 ? !processAlive(owner) : ageMs > LOCK_WAIT_MS;
      if (dead) {
        try {
          unlinkSync(lockPath);
        } catch {
          // Another waiter took it over first.
        }
        continue;
      }
      if (Date.now() > deadline) throw new CredentialStoreError(`${lockPath} is held by process ${owner} for more than ${LOCK_WAIT_MS} ms`);
      await new Promise((r) => setTimeout(r, 5 + Math.floor(Math.random() * 10)));
    }
  }

  private async updateLocked(
    path: string,
    key: string,
    mutate: (current: GatewayRecord | null) => GatewayRecord | null,
    opts: UpdateOptions,
  ): Promise<GatewayRecord | null> {
    const current = this.read(path, key);
    const next = mutate(current);
    if (next === current) return current;
    this.sweepTemps(path);
    if (next === null) {
      try {
        unlinkSync(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      syncDir(this.gatewaysDir);
      return null;
    }
    const tmp = writeTempDurably(path, `${JSON.stringify(next, null, 2)}\n`);
    if (this.opts.checkpoint) await this.opts.checkpoint(`before-rename:${opts.label ?? 'record'}`);
    commitDurably(tmp, path);
    return next;
  }

  async list(): Promise<GatewayRecord[]> {
    const { records, problems } = this.scan();
    if (problems.length > 0) throw new CredentialStoreError(problems[0]!.message);
    return records;
  }

  /** Every readable record, plus what is wrong with the others (for status displays). */
  scan(): { records: GatewayRecord[]; problems: Array<{ file: string; message: string }> } {
    let names: string[];
    try {
      names = readdirSync(this.gatewaysDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], problems: [] };
      throw err;
    }
    const records: GatewayRecord[] = [];
    const problems: Array<{ file: string; message: string }> = [];
    for (const n of names.filter((x) => x.endsWith('.json')).sort()) {
      const file = join(this.gatewaysDir, n);
      try {
        const r = this.read(file);
        if (r) records.push(r);
      } catch (err) {
        problems.push({ file, message: (err as Error).message });
      }
    }
    return { records, problems };
  }

  /** Temp files of writers that died before their rename are garbage (the old record stands). */
  private sweepTemps(path: string): void {
    const base = path.slice(this.gatewaysDir.length + 1);
    for (const n of readdirSync(this.gatewaysDir)) {
      const m = n.startsWith(`${base}.`) && n.endsWith('.tmp') ? /\.(\d+)\.[0-9a-f]+\.tmp$/.exec(n) : null;
      if (m && !processAlive(Number(m[1]))) {
        try {
          unlinkSync(join(this.gatewaysDir, n));
        } catch {
          // Another process swept it first.
        }
      }
    }
  }
}
