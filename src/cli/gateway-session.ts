/**
 * The connection of every CLI command that talks to a gateway as an operator, on the SDK's
 * GatewayClient (one reconnect/refusal logic for the CLI, the SDK and its apps).
 *
 * On the gateway host — the owner credential of the state dir, or a shared secret to a loopback
 * gateway — the command connects device-less, as a local helper (`deviceless`; the owner
 * credential is proven, never sent). Everywhere else the CLI is a device: the key stored in
 * `<state-dir>/client/` for that gateway (created on first use, mode 0600). A gateway that does
 * not know the key files a pairing request; the CLI prints its id, its confirmation code and the
 * command that approves it, waits for the approval on the open socket (or, with `--no-wait`,
 * exits with EXIT_PENDING), and stores the device token it is then given: later commands present
 * that token and need no shared secret.
 *
 * Commands run once: a failure that the SDK would retry later (unreachable, dropped socket, rate
 * limit) ends the command with the reason instead.
 */
import { hostname } from 'node:os';
import {
  ClientError,
  type ClientState,
  type CredentialStore,
  ensureRecord,
  type FileCredentialStore,
  GatewayCallError,
  GatewayClient,
  type GatewayRecord,
  gatewayHostCommands,
  MemoryCredentialStore,
  nodePlatform,
  normalizeGatewayUrl,
  type UpdateOptions,
} from '@clawgate/client';
import { audienceOf, normalizeGatewayKeyFingerprint, parseGatewayChallengeProof } from '@clawgate/protocol/gateway-proof';
import { ownerProofFor } from '../client/owner-proof.js';
import { clientStore } from './client-store.js';
import { field } from './common.js';
import { CliFailure, explainNetworkMessage, explainTransport, type StartHint } from './connect-errors.js';
import { resolveStateDir } from './state.js';
import { commandHint, resolveTarget, type Target } from './target.js';
import { UsageError } from './usage.js';

/** Exit status of a command whose pairing request is filed but not approved yet (`--no-wait`). */
export const EXIT_PENDING = 3;

/** What a gateway command needs of its connection, whichever credential stands behind it. */
export interface CliConnection {
  /** The URL dialed (ws:// or wss://). */
  readonly url: string;
  request<T = unknown>(method: string, params?: unknown, timeoutMs?: number): Promise<T>;
}

/** The resolved target of a command (target.ts resolveTarget). */
export type SessionTarget = Target;

/** The pairing request is filed and waits for a person; the command stops here (`--no-wait`). */
export class PendingApproval extends Error {
  constructor(
    readonly requestId: string | null,
    readonly confirmationCode: string | null,
  ) {
    super(`pairing request ${requestId ?? '(unknown)'} is waiting for approval`);
  }
}

/** A failure of a CLI command's gateway session, with the next step a person can take. */
export class CliSessionError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly nextStep?: string,
  ) {
    super(message);
  }
}

/**
 * Does this command connect as the CLI device? Not with the owner credential (proven, device-less,
 * on the gateway host) and not with a shared secret to a gateway on this host (a local helper,
 * admitted device-less within the shared secret's scopes); every other case does.
 */
export function connectsAsDevice(target: SessionTarget): boolean {
  if (target.owner !== undefined) return false;
  if (target.token !== undefined || target.password !== undefined) return !audienceOf(target.url)?.includes('://loopback:');
  return true;
}

/**
 * A store that shows the shared secret (and a pinned certificate) given on this command line in
 * the record it loads, without ever writing them: the client's writes start from the stored
 * record, so the secret stays in this process.
 */
class CommandLineOverlay implements CredentialStore {
  constructor(
    private readonly inner: FileCredentialStore,
    private readonly key: string,
    private readonly overlay: Partial<Pick<GatewayRecord, 'sharedToken' | 'tlsFingerprint'>>,
  ) {}
  async load(key: string): Promise<GatewayRecord | null> {
    const r = await this.inner.load(key);
    return r && key === this.key ? { ...r, ...this.overlay } : r;
  }
  update(key: string, mutate: (current: GatewayRecord | null) => GatewayRecord | null, opts?: UpdateOptions): Promise<GatewayRecord | null> {
    return this.inner.update(key, mutate, opts);
  }
  list(): Promise<GatewayRecord[]> {
    return this.inner.list();
  }
}

/** The stored record a command without a shared secret means: --url / CLAWGATE_URL, else the only one. */
async function pickRecord(store: FileCredentialStore, url: string | undefined): Promise<GatewayRecord | null> {
  if (url) return store.load(normalizeGatewayUrl(url).key);
  const all = await store.list();
  return all.length === 1 ? (all[0] as GatewayRecord) : null;
}

function explicitGatewayKey(values: Record<string, unknown>): string | undefined {
  const text = (values['gateway-key'] as string | undefined) ?? process.env.CLAWGATE_GATEWAY_KEY;
  if (text === undefined) return undefined;
  const key = normalizeGatewayKeyFingerprint(text);
  if (!key) throw new UsageError(`--gateway-key must be a SHA-256 fingerprint (64 hex digits, colons allowed), got ${text}`);
  return key;
}

const SECRET_HINT = 'the gateway token (--token-file <file>, --token-stdin or CLAWGATE_TOKEN)';

function pairAgainStep(mintCode: string): string {
  return (
    `Pair this device again: on the gateway host run \`${mintCode}\`, then \`clawgate pair --code-file <file>\` here; ` +
    `or run this command again with ${SECRET_HINT}, which files a new pairing request for the owner to approve.`
  );
}

/** The paused state as a CLI failure: the SDK's facts, the CLI's words. */
function pausedFailure(s: Extract<ClientState, { status: 'paused' }>, client: GatewayClient, pinned: string | null, device: boolean): Error {
  const url = client.target.url;
  const host = gatewayHostCommands(client.gatewayFlavor);
  switch (s.reason) {
    case 'pairing-required':
      return new PendingApproval(s.requestId ?? null, s.confirmationCode ?? null);
    case 'device-token-rejected':
      return new CliSessionError(
        `the gateway at ${url} refused this CLI's device token (revoked, rotated, or the device was removed)`,
        s.code ?? 'AUTH_DEVICE_TOKEN_MISMATCH',
        pairAgainStep(host.mintCode()),
      );
    case 'gateway-key-mismatch': {
      const seen = s.gatewayKeySeen;
      const hint = seen ? ` if that is your gateway, pass --gateway-key ${seen} (on the gateway host, \`clawgate gateway key\` prints it)` : '';
      const prefix = `refused to send credentials to ${url}: `;
      // The expected key is named below, for a device-less command too (the SDK says "this device").
      const problem = (s.message.startsWith(prefix) ? s.message.slice(prefix.length) : s.message).replace(/; this device is pinned to gateway key \S+$/, '');
      const what = seen
        ? ` (key ${seen}, ${pinned ? `expected ${pinned}` : 'and no gateway key is known for it'})`
        : `: ${problem}${pinned ? ` (expected gateway key ${pinned})` : ''}`;
      return new CliSessionError(`the server at ${url} did not prove it is your gateway${what}; nothing was sent.${hint}`, s.code ?? 'GATEWAY_KEY_MISMATCH');
    }
    case 'tls-untrusted': {
      const pins = /\(expected SHA-256 \S+, got \S+\)/.exec(s.message)?.[0] ?? '';
      if (s.code === 'TLS_PIN_MISMATCH') {
        return new CliSessionError(
          `TLS certificate mismatch at ${url} ${pins}: refusing to connect, nothing was sent: the gateway certificate was replaced, or something is intercepting the connection`,
          s.code,
          device
            ? s.nextStep
            : 'If the gateway really has a new certificate, pass the fingerprint `clawgate doctor` on the gateway host prints as --tls-fingerprint <sha256>.',
        );
      }
      // The transport names the certificate error (`… not trusted here (DEPTH_ZERO_SELF_SIGNED_CERT)`).
      const code = /\(([A-Z0-9_]+)\)$/.exec(s.message)?.[1];
      const explained = code ? explainTransport(code, url) : null;
      return explained ? new CliFailure(explained.message, explained.nextStep) : new CliSessionError(s.message, s.code ?? 'TLS_UNTRUSTED', s.nextStep);
    }
    case 'no-credential':
      return new CliSessionError(
        `no credential for ${url}`,
        'NO_CREDENTIAL',
        `pass ${SECRET_HINT} to ask for pairing, or pair with a setup code (\`clawgate pair --code-file <file>\`)`,
      );
    default: {
      // The gateway's own next step when it sent one. The SDK's fallback is about pairing a device
      // again (and names its own API): wrong for a device-less command on the gateway host.
      const sdkPairAgain = s.nextStep.startsWith('Pair this device again');
      const next = sdkPairAgain && !device ? undefined : s.nextStep.replace(/ \(or `client\.[^)]*\)/, '');
      return new CliSessionError(s.message, s.code ?? s.reason, next);
    }
  }
}

/** Print the pairing request a person has to approve (stderr: stdout stays the command's result). */
function announcePending(client: GatewayClient, deviceId: string, requestId: string | null, confirmationCode: string | null, waiting: boolean): void {
  const approve = gatewayHostCommands(client.gatewayFlavor).approveDevice(requestId ?? '<requestId>');
  process.stderr.write(
    `${[
      `pairing requested: this CLI (device ${field(deviceId)}) asked ${field(client.target.url)} for operator access`,
      `  request id:        ${field(requestId ?? '(not given by the gateway)')}`,
      `  confirmation code: ${field(confirmationCode ?? '(not given by the gateway)')} (the approver sees the same digits next to the request)`,
      `  approve it on the gateway host: ${field(approve)}`,
      waiting
        ? 'waiting for the approval (Ctrl-C stops waiting; the request stays, and this command picks it up when run again)…'
        : 'not approved yet (--no-wait): run this command again once it is approved; the device token is stored then.',
    ].join('\n')}\n`,
  );
}

/** Resolve once connected; reject with the first pause, or with the first failure the SDK would retry. */
function connectOnce(client: GatewayClient, deviceId: string | null, pinned: string | null, startHint: StartHint): Promise<void> {
  return new Promise((resolve, reject) => {
    let shown: string | null | undefined;
    let off: () => void = () => {};
    const settle = (done: () => void) => {
      off();
      done();
    };
    const onState = (s: ClientState) => {
      if (s.status === 'connected') settle(resolve);
      else if (s.status === 'awaiting-approval') {
        if (shown !== s.requestId) {
          shown = s.requestId;
          announcePending(client, deviceId ?? '', s.requestId, s.confirmationCode ?? null, true);
        }
      } else if (s.status === 'paused') settle(() => reject(pausedFailure(s, client, pinned, deviceId !== null)));
      else if (s.status === 'closed') settle(() => reject(new CliSessionError('the client closed before it connected', 'CLIENT_CLOSED')));
      else if (s.status === 'connecting' && s.retryAtMs !== undefined) {
        // The SDK would try again later; a command reports why it could not get a session now.
        const url = client.target.url;
        const last = s.lastError ?? { code: 'HANDSHAKE_TIMEOUT', message: 'no answer' };
        const explained = last.code === 'HANDSHAKE_TIMEOUT' ? explainTransport(last.code, url, startHint) : explainNetworkMessage(last.message, url, startHint);
        const waitS = Math.max(1, Math.ceil((s.retryAtMs - Date.now()) / 1000));
        settle(() =>
          reject(
            explained
              ? new CliFailure(explained.message, explained.nextStep)
              : new CliSessionError(
                  `no session with the gateway at ${url}: ${last.message}`,
                  last.code,
                  last.code === 'AUTH_RATE_LIMITED' ? `Try again in ${waitS} s.` : `Check that the gateway is running and reachable at ${url}.`,
                ),
          ),
        );
      }
    };
    off = client.onState(onState);
    client.start();
  });
}

/** The client and what the messages about it need; null when there is nothing to connect with. */
interface Prepared {
  client: GatewayClient;
  /** The CLI device's id (device sessions only: pairing requests name it). */
  deviceId: string | null;
  /** The gateway key the server must prove (for the messages), or null when none is known. */
  pinned: string | null;
}

/**
 * The CLI device's client: the key of this state dir for that gateway (created, 0600, the first
 * time a shared secret is given for it), the stored device token when there is one, else the
 * shared secret of this command line. Null without either.
 */
async function deviceClient(values: Record<string, unknown>, target: SessionTarget): Promise<Prepared | null> {
  const store = clientStore(resolveStateDir(values['state-dir'] as string | undefined));
  const platform = nodePlatform();
  const secret = target.password ?? target.token;
  const explicitUrl = (values.url as string | undefined) ?? (process.env.CLAWGATE_URL || undefined);
  let record: GatewayRecord | null;
  let url: string;
  if (secret !== undefined) {
    url = target.url;
    record = await ensureRecord(store, platform, url, Date.now());
    const pin = target.tlsFingerprint;
    if (pin && !record.tlsFingerprint) {
      // A certificate pinned by hand is kept like one from a setup code: later commands need no flag.
      record = (await store.update(record.key, (r) => (r && !r.tlsFingerprint ? { ...r, tlsFingerprint: pin } : r), { label: 'tls-pin' })) ?? record;
    }
  } else {
    record = await pickRecord(store, explicitUrl);
    if (!record) return null;
    url = explicitUrl ?? record.url;
  }
  const key = normalizeGatewayUrl(url).key;
  const flagKey = explicitGatewayKey(values);
  // A shared secret goes only to a server that proves a known key (the pinned one, or --gateway-key).
  const gatewayKey = flagKey ?? (secret !== undefined && !record.gatewayKey ? null : undefined);
  const overlay = {
    ...(secret !== undefined ? { sharedToken: secret } : {}),
    ...(target.tlsFingerprint ? { tlsFingerprint: target.tlsFingerprint } : {}),
  };
  const client = new GatewayClient({
    url,
    role: 'operator',
    store: Object.keys(overlay).length > 0 ? new CommandLineOverlay(store, key, overlay) : store,
    platform,
    client: { id: 'cli', mode: 'cli', displayName: `clawgate CLI (${hostname()})` },
    waitForApproval: values['no-wait'] !== true,
    ...(target.password !== undefined ? { sharedSecretField: 'password' as const } : {}),
    ...(gatewayKey !== undefined ? { gatewayKey } : {}),
    // The person put the shared secret on this command: a refused device token may fall back to
    // it (filing a new pairing request) even over a plain remote connection, where it goes anyway.
    ...(secret !== undefined ? { recoverySafe: () => true } : {}),
  });
  return { client, deviceId: record.deviceId, pinned: flagKey ?? record.gatewayKey ?? null };
}

/**
 * The CLI on the gateway host: device-less, with the owner credential (proven to the gateway key
 * of the state dir, never sent) or the shared secret. Nothing is stored.
 */
async function localClient(target: SessionTarget): Promise<Prepared> {
  const platform = nodePlatform();
  const { url, key } = normalizeGatewayUrl(target.url);
  const owner = target.owner;
  const secret = (owner ?? target.password ?? target.token) as string;
  const store = new MemoryCredentialStore();
  await store.update(key, () => ({
    version: 1,
    key,
    url,
    // Device-less: no key pair, so no device id (deviceless below keeps the client from wanting one).
    deviceId: '',
    identity: null,
    sharedToken: secret,
    tokens: {},
    createdAtMs: Date.now(),
    ...(target.tlsFingerprint ? { tlsFingerprint: target.tlsFingerprint } : {}),
  }));
  const client = new GatewayClient({
    url: target.url,
    role: 'operator',
    store,
    platform,
    deviceless: true,
    // The owner credential holds every scope; with the shared secret a local cli keeps these within its cap.
    scopes: ['operator.admin', 'operator.pairing'],
    client: { id: 'cli', mode: 'cli' },
    ...(target.gatewayKey !== undefined ? { gatewayKey: target.gatewayKey } : {}),
    ...(owner === undefined && target.password !== undefined ? { sharedSecretField: 'password' as const } : {}),
    ...(owner !== undefined
      ? {
          ownerProof: async (credential: string, challenge: { nonce: string; gateway?: unknown }, dialed: string) => {
            // The client checked the challenge against the required key already; without a signed
            // key there is nothing to bind a proof to, and the credential itself never goes out.
            const proof = parseGatewayChallengeProof(challenge.gateway);
            const audience = audienceOf(dialed);
            if (!proof || !audience) throw new Error(`no owner proof is possible for ${dialed}: the server proved no gateway key`);
            return { ownerProof: ownerProofFor(credential, challenge.nonce, proof.publicKey, audience), ownerAudience: audience };
          },
        }
      : {}),
  });
  return { client, deviceId: null, pinned: target.gatewayKey ?? null };
}

/**
 * Run `fn` on a gateway session as the resolved target says (connectsAsDevice). Null when this
 * state dir holds no credential for the target and none was given (the caller says what is missing).
 */
export async function withGatewaySession<T>(
  values: Record<string, unknown>,
  target: SessionTarget,
  fn: (conn: CliConnection) => Promise<T>,
): Promise<T | null> {
  const prepared = connectsAsDevice(target) ? await deviceClient(values, target) : await localClient(target);
  if (!prepared) return null;
  const { client, deviceId, pinned } = prepared;
  try {
    // How to start the gateway is worth saying only for one on this host (the owner's or a local helper's).
    const startHint = deviceId === null ? commandHint(values, 'gateway run', ['state-dir']) : undefined;
    await connectOnce(client, deviceId, pinned, startHint);
    return await fn({
      url: client.target.url,
      request: <R>(method: string, params?: unknown, timeoutMs?: number) => client.request<R>(method, params, timeoutMs === undefined ? {} : { timeoutMs }),
    });
  } catch (err) {
    if (err instanceof PendingApproval && deviceId) announcePending(client, deviceId, err.requestId, err.confirmationCode, false);
    throw err;
  } finally {
    client.close();
  }
}

/**
 * Print a failure of the SDK or of a device session, with its next step; the exit status, or null
 * for an error that is none of these.
 */
export function reportClientFailure(err: unknown, json = false): number | null {
  if (err instanceof PendingApproval) {
    if (json) process.stdout.write(`${JSON.stringify({ status: 'pending', requestId: err.requestId, confirmationCode: err.confirmationCode })}\n`);
    return EXIT_PENDING;
  }
  if (err instanceof CliSessionError) {
    process.stderr.write(`error: ${field(err.message)} [${field(err.code)}]\n${err.nextStep ? `next: ${field(err.nextStep)}\n` : ''}`);
    return 1;
  }
  if (err instanceof ClientError) {
    const code = err.gatewayCode && err.gatewayCode !== err.code ? ` [${err.gatewayCode}]` : ` [${err.code}]`;
    process.stderr.write(`error: ${field(err.message)}${field(code)}\n${err.nextStep ? `next: ${field(err.nextStep)}\n` : ''}`);
    return 1;
  }
  if (err instanceof GatewayCallError) {
    process.stderr.write(`error: ${field(err.message)} [${field(err.code)}]\n${err.nextStep ? `next: ${field(err.nextStep)}\n` : ''}`);
    return 1;
  }
  return null;
}

const NO_CREDENTIAL =
  'no credential: set CLAWGATE_TOKEN, pass --token-file <path> or --token-stdin, run on the gateway host (owner credential in the state dir), or pair first (clawgate pair --code-file <file>)';

/**
 * Connect as the command's credential says and run `fn` on the session (gateway-session.ts): the
 * owner credential of the state dir (proven, device-less), a shared secret to a gateway on this
 * host (device-less), or else as this state dir's CLI device (its stored device token, or a
 * shared secret that files a pairing request).
 */
export async function withGateway<T>(values: Record<string, unknown>, fn: (conn: CliConnection) => Promise<T>): Promise<T> {
  const done = await withGatewaySession(values, resolveTarget(values), fn);
  if (done === null) throw new UsageError(NO_CREDENTIAL);
  return done as T;
}
