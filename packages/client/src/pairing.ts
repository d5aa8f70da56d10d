/**
 * Putting credentials into a store: a setup code (QR / `oc-pair://` link) or a shared gateway
 * token. Neither ever throws away what already works: applying a code keeps the shared token and
 * the device tokens (it only forces the next connect to present the code); replacing the shared
 * token is validated first on an isolated connection and keeps the device tokens.
 */
import { normalizeFingerprint } from '@clawgate/protocol/fingerprint';
import { normalizeGatewayKeyFingerprint } from '@clawgate/protocol/gateway-proof';
import { decodeSetupCode, type SetupPayload } from '@clawgate/protocol/setup-code';
import { GatewayClient, type GatewayClientOptions } from './client.js';
import { cloneRecord } from './credentials.js';
import { ClientError } from './errors.js';
import { MemoryCredentialStore } from './memory-store.js';
import type { CheckpointHook, CredentialStore, GatewayRecord, Platform } from './types.js';
import { normalizeGatewayUrl } from './url.js';

export interface ApplySetupCodeOptions {
  nowMs?: number;
  displayName?: string;
  /** Connect here instead of the code's URL (e.g. the code names a LAN address). */
  url?: string;
  checkpoint?: CheckpointHook;
}

const FRESH_CODE = 'Ask the gateway operator for a fresh code (`clawgate qr` on the gateway host).';

/** Decode a setup code, or throw INVALID_SETUP_CODE naming the problem. */
export function parseSetupCode(input: string, nowMs?: number): SetupPayload {
  const decoded = decodeSetupCode(input, nowMs === undefined ? {} : { nowMs });
  if (!decoded.ok) throw new ClientError('INVALID_SETUP_CODE', `invalid setup code: ${decoded.problem}`, FRESH_CODE);
  return decoded.payload;
}

/** Load the record for a URL, creating it (with a new device key) only if none exists. */
export async function ensureRecord(store: CredentialStore, platform: Platform, url: string, nowMs: number): Promise<GatewayRecord> {
  const target = normalizeGatewayUrl(url);
  // A record that exists but cannot be read throws here: the identity is never silently replaced.
  const existing = await store.load(target.key);
  if (existing) return existing;
  const fresh = await platform.crypto.generate();
  const rec = await store.update(
    target.key,
    (cur) =>
      cur ?? {
        version: 1,
        key: target.key,
        url: target.url,
        deviceId: fresh.key.deviceId,
        identity: fresh.stored,
        tokens: {},
        createdAtMs: nowMs,
      },
    { label: 'identity' },
  );
  return rec as GatewayRecord;
}

/**
 * Store a setup code's bootstrap token for its gateway (one record per gateway: a loopback alias
 * of a known URL updates that record). Shared token and device tokens are preserved.
 * Connect afterwards with `forceBootstrap: true` (pairWithSetupCode does).
 */
export async function applySetupCode(
  store: CredentialStore,
  platform: Platform,
  code: string,
  opts: ApplySetupCodeOptions = {},
): Promise<{ record: GatewayRecord; payload: SetupPayload }> {
  const nowMs = opts.nowMs ?? Date.now();
  const payload = parseSetupCode(code, nowMs);
  const target = normalizeGatewayUrl(opts.url ?? payload.url);
  await ensureRecord(store, platform, target.url, nowMs);
  const record = await store.update(
    target.key,
    (cur) => {
      if (!cur) return cur;
      const next = cloneRecord(cur);
      next.url = target.url;
      next.bootstrap = { token: payload.bootstrapToken, expiresAtMs: payload.expiresAtMs, setAtMs: nowMs };
      // The code is the trust anchor for the certificate too: a new code replaces the pin.
      const pin = payload.tlsFingerprint ? normalizeFingerprint(payload.tlsFingerprint) : null;
      if (pin) next.tlsFingerprint = pin;
      else delete next.tlsFingerprint;
      // The code names the gateway's identity key: pinned from now on, replacing an older pin (a
      // fresh code is how a person re-anchors trust). A code without one leaves a pin in place, so
      // a code cannot quietly switch the check off.
      if (payload.gatewayKey) next.gatewayKey = payload.gatewayKey;
      if (opts.displayName) next.displayName = opts.displayName;
      return next;
    },
    { label: 'setup' },
  );
  if (!record) throw new ClientError('CREDENTIAL_STORE_UNREADABLE', 'the gateway record vanished while applying the setup code');
  if (opts.checkpoint) await opts.checkpoint('setup-saved');
  return { record, payload };
}

export type PairOptions = ApplySetupCodeOptions & Omit<GatewayClientOptions, 'url' | 'store' | 'platform' | 'forceBootstrap'>;

/**
 * Apply a setup code and connect with it: resolves with the connected client (tokens durable,
 * bootstrap cleared) or rejects with the pause that stopped it (invalid/expired/used code, …).
 */
export async function pairWithSetupCode(store: CredentialStore, platform: Platform, code: string, opts: PairOptions = {}): Promise<GatewayClient> {
  const { record } = await applySetupCode(store, platform, code, opts);
  const client = new GatewayClient({ ...opts, url: record.url, store, platform, forceBootstrap: true });
  try {
    await client.connect();
  } catch (err) {
    client.close();
    throw err;
  }
  return client;
}

/**
 * Use a (new) shared gateway token for a gateway. When `validate` (default), the token is first
 * tried on an isolated connection with this device's key; a refused token rejects and changes
 * nothing. On success the token is stored, a stale bootstrap token is dropped, device tokens stay.
 */
export async function setSharedToken(
  store: CredentialStore,
  platform: Platform,
  url: string,
  token: string,
  opts: {
    validate?: boolean;
    nowMs?: number;
    tlsFingerprint?: string;
    /** The gateway identity key's fingerprint (`clawgate qr` on the gateway host shows it): pinned, replacing an older pin. */
    gatewayKey?: string;
    clientOptions?: Partial<GatewayClientOptions>;
  } = {},
): Promise<GatewayRecord> {
  if (!token.trim()) throw new ClientError('NO_CREDENTIAL', 'the shared token is empty');
  const pin = opts.tlsFingerprint === undefined ? undefined : normalizeFingerprint(opts.tlsFingerprint);
  if (pin === null) throw new ClientError('INVALID_GATEWAY_URL', `"${opts.tlsFingerprint}" is not a SHA-256 certificate fingerprint (64 hex digits)`);
  const keyPin = opts.gatewayKey === undefined ? undefined : normalizeGatewayKeyFingerprint(opts.gatewayKey);
  if (keyPin === null) throw new ClientError('INVALID_GATEWAY_URL', `"${opts.gatewayKey}" is not a SHA-256 gateway key fingerprint (64 hex digits)`);
  const nowMs = opts.nowMs ?? Date.now();
  const record = await ensureRecord(store, platform, url, nowMs);
  const target = normalizeGatewayUrl(url);
  const minted: GatewayRecord['tokens'] = {};
  let learnedKey: string | undefined;
  if (opts.validate !== false) {
    const scratch = new MemoryCredentialStore();
    const trial = cloneRecord(record);
    trial.tokens = {};
    delete trial.bootstrap;
    trial.sharedToken = token;
    if (pin) trial.tlsFingerprint = pin;
    if (keyPin) trial.gatewayKey = keyPin;
    await scratch.update(target.key, () => trial);
    const probe = new GatewayClient({ waitForApproval: false, ...opts.clientOptions, url: target.url, store: scratch, platform });
    try {
      await probe.connect();
    } catch (err) {
      // Pending approval means the token itself was accepted.
      if (probe.state.status !== 'paused' || probe.state.reason !== 'pairing-required') throw err;
    } finally {
      probe.close();
    }
    // A first approval on the probe minted tokens that exist nowhere else: keep them.
    const probed = await scratch.load(target.key);
    Object.assign(minted, probed?.tokens ?? {});
    learnedKey = probed?.gatewayKey;
  }
  const saved = await store.update(
    target.key,
    (cur) => {
      if (!cur) return cur;
      const next = cloneRecord(cur);
      next.sharedToken = token;
      delete next.bootstrap;
      if (pin) next.tlsFingerprint = pin;
      if (keyPin) next.gatewayKey = keyPin;
      // A key the probe learned (trust on first use) is the key this token was just checked against.
      else if (!next.gatewayKey && learnedKey) next.gatewayKey = learnedKey;
      for (const [role, t] of Object.entries(minted)) if (t && !next.tokens[role as 'operator' | 'node']) next.tokens[role as 'operator' | 'node'] = t;
      return next;
    },
    { label: 'shared-token' },
  );
  return saved as GatewayRecord;
}
