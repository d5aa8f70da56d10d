/**
 * The browser's device identity: an Ed25519 key pair made by WebCrypto with a non-extractable
 * private key, kept in IndexedDB (structured clone keeps the CryptoKey usable, never readable).
 * Script on this origin can ask the browser to sign with it, but nothing can copy the key out,
 * unlike a key in localStorage. Where WebCrypto Ed25519 is missing, sign-in stops with a clear
 * message instead of falling back to a weaker key store.
 */
const DB_NAME = 'clawgate-control-ui';
const STORE = 'identity';
const KEY = 'device';

export interface BrowserIdentity {
  deviceId: string;
  /** Raw 32-byte public key, unpadded base64url (what the gateway expects). */
  publicKey: string;
  sign(payload: string): Promise<string>;
}

export type IdentityResult = { ok: true; identity: BrowserIdentity } | { ok: false; problem: string; nextStep: string };

export function base64Url(bytes: ArrayBuffer | Uint8Array): string {
  const arr = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = '';
  for (const b of arr) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function openDb(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB open failed'));
  });
}

function idb<T>(db: IDBDatabase, mode: IDBTransactionMode, op: (s: IDBObjectStore) => IDBRequest): Promise<T> {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = op(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req.result as T);
    tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
  });
}

/** Load this browser's key pair, creating it on first use. */
export async function loadIdentity(): Promise<IdentityResult> {
  if (!window.isSecureContext || !globalThis.crypto?.subtle) {
    return {
      ok: false,
      problem: 'This page is not a secure context, so the browser offers no WebCrypto to hold a device key.',
      nextStep: 'Open the Control UI over https (through a TLS proxy), or on the gateway host at http://127.0.0.1:<port>/ or http://localhost:<port>/.',
    };
  }
  if (typeof indexedDB === 'undefined') {
    return { ok: false, problem: 'This browser has no IndexedDB to keep the device key in.', nextStep: 'Use a current browser outside private mode.' };
  }
  let db: IDBDatabase;
  try {
    db = await openDb();
  } catch (err) {
    return {
      ok: false,
      problem: `IndexedDB is unavailable: ${(err as Error).message}`,
      nextStep: 'Allow site storage for this page (private windows may block it).',
    };
  }
  try {
    let pair = await idb<CryptoKeyPair | undefined>(db, 'readonly', (s) => s.get(KEY));
    if (!pair) {
      try {
        pair = (await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify'])) as CryptoKeyPair;
      } catch (err) {
        return {
          ok: false,
          problem: `This browser cannot make an Ed25519 device key with WebCrypto (${(err as Error).name}).`,
          nextStep: 'Use a browser with WebCrypto Ed25519 (Chrome/Edge 137+, Firefox 129+, Safari 17+), or manage devices with the clawgate CLI.',
        };
      }
      await idb(db, 'readwrite', (s) => s.put(pair, KEY));
    }
    const keys = pair;
    const raw = await crypto.subtle.exportKey('raw', keys.publicKey);
    const deviceId = hex(await crypto.subtle.digest('SHA-256', raw));
    return {
      ok: true,
      identity: {
        deviceId,
        publicKey: base64Url(raw),
        sign: async (payload) => base64Url(await crypto.subtle.sign({ name: 'Ed25519' }, keys.privateKey, new TextEncoder().encode(payload))),
      },
    };
  } finally {
    db.close();
  }
}
