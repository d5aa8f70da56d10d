/**
 * The browser platform: the global WebSocket, WebCrypto Ed25519 keys whose private half is
 * generated non-extractable (script can sign with it but never read it), and an IndexedDB
 * credential store that keeps the CryptoKey object itself (structured clone), so the key
 * material never exists as bytes the page could leak.
 */
import { bytesToBase64Url, bytesToHex } from './credentials.js';
import { CredentialStoreError } from './errors.js';
import type { CredentialStore, CryptoProvider, DeviceKey, GatewayRecord, Platform, Transport, UpdateOptions } from './types.js';

export * from './index.js';

export const browserTransport: Transport = (url, h) => {
  const ws = new WebSocket(url);
  ws.onopen = () => h.onOpen();
  ws.onmessage = (e: MessageEvent) => {
    if (typeof e.data === 'string') h.onMessage(e.data);
  };
  ws.onerror = () => h.onError('websocket error');
  ws.onclose = (e: CloseEvent) => h.onClose(e.code, e.reason);
  return {
    send: (text) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(text);
    },
    close: (code, reason) => {
      if (ws.readyState === WebSocket.CLOSING || ws.readyState === WebSocket.CLOSED) return;
      // Browsers accept only 1000 and 3000–4999 from script.
      const c = code === 1000 || (code !== undefined && code >= 3000 && code <= 4999) ? code : 1000;
      ws.close(c, reason);
    },
  };
};

interface StoredWebKey {
  alg: 'ed25519-webcrypto';
  privateKey: CryptoKey;
  publicKey: string;
}

async function keyFrom(privateKey: CryptoKey, rawPublic: Uint8Array): Promise<DeviceKey> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', rawPublic as BufferSource));
  return {
    deviceId: bytesToHex(digest),
    publicKey: bytesToBase64Url(rawPublic),
    sign: async (payload) => bytesToBase64Url(new Uint8Array(await crypto.subtle.sign('Ed25519', privateKey, new TextEncoder().encode(payload)))),
  };
}

/** The 32 raw key bytes of unpadded base64url text, or null. */
function rawPublicKey(publicKey: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]{43}$/.test(publicKey)) return null;
  const raw = fromBase64Url(publicKey);
  return raw.length === 32 ? raw : null;
}

function fromBase64Url(text: string): Uint8Array {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export const webCrypto: CryptoProvider = {
  async generate() {
    const pair = (await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify'])) as CryptoKeyPair;
    const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
    const stored: StoredWebKey = { alg: 'ed25519-webcrypto', privateKey: pair.privateKey, publicKey: bytesToBase64Url(raw) };
    return { key: await keyFrom(pair.privateKey, raw), stored };
  },
  async restore(stored) {
    const s = stored as Partial<StoredWebKey> | null;
    if (s?.alg !== 'ed25519-webcrypto' || !(s.privateKey instanceof CryptoKey) || typeof s.publicKey !== 'string') {
      throw new Error('not a stored WebCrypto ed25519 key');
    }
    return keyFrom(s.privateKey, fromBase64Url(s.publicKey));
  },
  async verify(publicKey, payload, signature) {
    const raw = rawPublicKey(publicKey);
    if (!raw || !/^[A-Za-z0-9_-]{86}$/.test(signature)) return false;
    try {
      const key = await crypto.subtle.importKey('raw', raw as BufferSource, { name: 'Ed25519' }, false, ['verify']);
      return await crypto.subtle.verify('Ed25519', key, fromBase64Url(signature) as BufferSource, new TextEncoder().encode(payload));
    } catch {
      // A browser without WebCrypto Ed25519 cannot check the gateway: that is a failed check, never a pass.
      return false;
    }
  },
  async keyFingerprint(publicKey) {
    const raw = rawPublicKey(publicKey);
    return raw ? bytesToHex(new Uint8Array(await crypto.subtle.digest('SHA-256', raw as BufferSource))) : null;
  },
};

export function browserPlatform(opts: { transport?: Transport; platformName?: string } = {}): Platform {
  return { transport: opts.transport ?? browserTransport, crypto: webCrypto, platformName: opts.platformName ?? 'web' };
}

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/**
 * Records in IndexedDB (`<dbName>` / object store `gateways`, keyPath `key`). An update is one
 * readwrite transaction with strict durability (get, mutate, put), resolved on `complete`.
 */
export class IndexedDbCredentialStore implements CredentialStore {
  private db: Promise<IDBDatabase> | null = null;

  constructor(readonly dbName = 'clawgate-client') {}

  private open(): Promise<IDBDatabase> {
    if (!this.db) {
      this.db = new Promise((resolve, reject) => {
        const req = indexedDB.open(this.dbName, 1);
        req.onupgradeneeded = () => {
          if (!req.result.objectStoreNames.contains('gateways')) req.result.createObjectStore('gateways', { keyPath: 'key' });
        };
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(new CredentialStoreError(`cannot open IndexedDB ${this.dbName}: ${req.error?.message}`));
      });
    }
    return this.db;
  }

  async load(key: string): Promise<GatewayRecord | null> {
    const db = await this.open();
    const got = await request(db.transaction('gateways', 'readonly').objectStore('gateways').get(key));
    if (got === undefined) return null;
    if (typeof got !== 'object' || got === null || (got as GatewayRecord).version !== 1)
      throw new CredentialStoreError(`IndexedDB record ${key} is not a gateway record`);
    return got as GatewayRecord;
  }

  async update(key: string, mutate: (current: GatewayRecord | null) => GatewayRecord | null, _opts?: UpdateOptions): Promise<GatewayRecord | null> {
    const db = await this.open();
    const tx = db.transaction('gateways', 'readwrite', { durability: 'strict' });
    const os = tx.objectStore('gateways');
    const done = new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
      tx.onerror = () => reject(tx.error);
    });
    const current = ((await request(os.get(key))) as GatewayRecord | undefined) ?? null;
    let next: GatewayRecord | null;
    try {
      next = mutate(current);
    } catch (err) {
      tx.abort();
      throw err;
    }
    if (next === null) os.delete(key);
    else if (next !== current) os.put(next);
    await done;
    return next;
  }

  async list(): Promise<GatewayRecord[]> {
    const db = await this.open();
    return (await request(db.transaction('gateways', 'readonly').objectStore('gateways').getAll())) as GatewayRecord[];
  }
}
