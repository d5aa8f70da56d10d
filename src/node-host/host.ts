/**
 * The headless node host behind `clawgate node run`: keeps one `node` connection to a gateway,
 * waits for approval on the open socket, answers `node.invoke.request` events with
 * `node.invoke.result`, and reconnects with jittered exponential backoff. What it may run on this
 * machine is decided here, by the local exec policy, whatever the gateway approved.
 */

import { flavorOfChallenge, type GatewayFlavor, type GatewayHostCommands, gatewayHostCommands } from '@clawgate/client';
import { CATALOGUE } from '@clawgate/protocol/errors';
import type { ErrorShape } from '@clawgate/protocol/frames';
import { printable } from '@clawgate/protocol/text';
import { WebSocket } from 'ws';
import {
  buildConnectParams,
  type ConnectOptions,
  checkTlsPin,
  type DeviceIdentity,
  GatewayConnection,
  GatewayRequestError,
  type HelloPayload,
} from '../client/connection.js';
import type { Clock, Random } from '../core/env.js';
import { checkGatewayChallenge } from '../core/gateway-identity.js';
import type { ExecPolicyMode } from './exec-policy.js';
import { NodeInvoker } from './invoker.js';
import type { NodeCredentials, NodeState } from './state.js';

export const NODE_HOST_VERSION = '0.1.0';
export { MAX_CONCURRENT_INVOKES } from './invoker.js';
export const BACKOFF_BASE_MS = 1_000;
export const BACKOFF_MAX_MS = 30_000;
/** A retryAfterMs hint is honoured within these bounds. */
const RETRY_AFTER_MIN_MS = 100;
const RETRY_AFTER_MAX_MS = 300_000;
/** Until the challenge arrives, or while nothing says "waiting for approval". */
const HANDSHAKE_TIMEOUT_MS = 15_000;
/** While waiting for approval: silence (no ping, no frame) this long means a dead path. */
const WAIT_SILENCE_MS = 90_000;

/** Refusals that retrying unchanged cannot fix: the node host stops with exit 1 and says why. */
const FATAL_DETAILS = new Set([
  'AUTH_TOKEN_MISSING',
  'AUTH_TOKEN_MISMATCH',
  'AUTH_TOKEN_NOT_CONFIGURED',
  'AUTH_PASSWORD_MISSING',
  'AUTH_PASSWORD_MISMATCH',
  'AUTH_PASSWORD_NOT_CONFIGURED',
  'AUTH_BOOTSTRAP_TOKEN_INVALID',
  'AUTH_BOOTSTRAP_TOKEN_EXPIRED',
  'AUTH_BOOTSTRAP_TOKEN_USED',
  'AUTH_BOOTSTRAP_TOKEN_REVOKED',
  'AUTH_BOOTSTRAP_ROLE_NOT_ALLOWED',
  'AUTH_DEVICE_TOKEN_MISMATCH',
  'AUTH_SCOPE_MISMATCH',
  'PROTOCOL_MISMATCH',
  'DEVICE_IDENTITY_REQUIRED',
  'PAIRING_REJECTED',
]);

export interface NodeHostOptions {
  state: NodeState;
  identity: DeviceIdentity;
  instanceId: string;
  /** Gateway URLs to try in order (a setup code may carry several). */
  urls: string[];
  /** Shared gateway token or password (`--token` / `--password`); wins over stored device tokens. */
  sharedToken?: string;
  password?: string;
  displayName: string;
  commands: string[];
  execPolicy: ExecPolicyMode;
  allowlistPath: string;
  clock: Clock;
  random: Random;
  env: NodeJS.ProcessEnv;
  /** Progress lines for the person running the host. */
  out(line: string): void;
  /** Problems (still one line each). */
  err(line: string): void;
  /** Extra upgrade headers (tests). */
  headers?: Record<string, string>;
  /** Remote gateways: accept only a gateway certificate with this SHA-256 fingerprint. */
  tlsFingerprint?: string;
  /**
   * `--gateway-key`: send credentials only after a challenge signed by the gateway key with this
   * fingerprint. Without it, the key pinned in the state dir (from the setup code, or learned at
   * the first admitted connect) is required.
   */
  gatewayKey?: string;
}

type Attempt =
  | {
      kind: 'hello';
      conn: GatewayConnection;
      /** Fingerprint of the gateway key the challenge proved (null: it proved none). */
      provenGatewayKey: string | null;
    }
  | {
      kind: 'refused';
      error: ErrorShape | null;
      closeCode: number | null;
      closeReason: string;
      reachedGateway: boolean;
      httpStatus?: number;
      /** Remote gateways: the certificate was not the pinned one (message for the person). */
      pinMismatch?: string;
      /** The challenge did not prove the pinned gateway key; nothing was sent (message for the person). */
      gatewayKeyMismatch?: string;
    };

type AuthUsed = 'shared' | 'password' | 'device-token' | 'bootstrap';

export class NodeHost {
  private stopped = false;
  private wake: (() => void) | null = null;
  private current: WebSocket | null = null;
  private backoffMs = BACKOFF_BASE_MS;
  private urlIndex = 0;
  private readonly invoker: NodeInvoker;
  /** The gateway refused the shared secret; a stored device token may still be good. */
  private sharedRefused = false;
  /** The software of the last gateway that challenged this node: its hints name that gateway's commands. */
  private flavor: GatewayFlavor = 'clawgate';

  constructor(private readonly opts: NodeHostOptions) {
    this.invoker = new NodeInvoker({
      commands: opts.commands,
      execPolicy: opts.execPolicy,
      allowlistDir: opts.state.dir,
      clock: opts.clock,
      env: opts.env,
      out: opts.out,
      err: opts.err,
    });
  }

  get deviceId(): string {
    return this.opts.identity.deviceId;
  }

  /** Stop: close the socket, cancel running commands; `run()` then resolves with 0. */
  stop(): void {
    this.stopped = true;
    this.invoker.abortAll();
    if (this.current && (this.current.readyState === WebSocket.OPEN || this.current.readyState === WebSocket.CONNECTING)) this.current.close(1000);
    this.wake?.();
  }

  /** Connect, serve, reconnect — until stopped (0) or refused for good (1). */
  async run(): Promise<number> {
    while (!this.stopped) {
      const creds = this.opts.state.readCredentials();
      const auth = this.pickAuth(creds);
      if (!auth) {
        this.opts.err(
          'no credential to connect with: pass a setup code with --code-file <path> or CLAWGATE_SETUP_CODE (from `clawgate qr --profile node` on the gateway host), or --token-file <path> / CLAWGATE_NODE_TOKEN with the gateway token',
        );
        return 1;
      }
      const url = this.opts.urls[this.urlIndex % this.opts.urls.length] as string;
      this.opts.out(`connecting to ${url} as node ${this.deviceId} (${auth.used === 'bootstrap' ? 'setup code' : auth.used})`);
      const expectedKey = this.opts.gatewayKey ?? creds.gatewayKey ?? null;
      const attempt = await this.connectOnce(url, auth.auth, expectedKey);
      if (this.stopped) {
        if (attempt.kind === 'hello') await attempt.conn.close();
        break;
      }
      if (attempt.kind === 'hello') {
        this.backoffMs = BACKOFF_BASE_MS;
        if (attempt.provenGatewayKey && !expectedKey) {
          // Trust on first use: the key that proved itself on an admitted connect is required from now on.
          this.opts.state.saveGatewayKey(attempt.provenGatewayKey);
          this.opts.out(`pinned gateway key ${attempt.provenGatewayKey} (stored in ${this.opts.state.dir}); every reconnect checks it`);
        }
        const closed = await this.serve(attempt.conn, url, auth.used);
        if (this.stopped) break;
        this.opts.out(`disconnected from ${url} (${closed.code}${closed.reason ? ` ${printable(closed.reason)}` : ''}); reconnecting`);
        await this.sleep(this.nextBackoff());
        continue;
      }
      const verdict = this.classify(attempt, auth.used, creds);
      if (verdict.kind === 'fatal') {
        this.opts.err(verdict.message);
        return 1;
      }
      if (!attempt.reachedGateway && this.opts.urls.length > 1) this.urlIndex++;
      await this.sleep(verdict.delayMs);
    }
    return 0;
  }

  private pickAuth(creds: NodeCredentials): { auth: NonNullable<ConnectOptions['auth']>; used: AuthUsed } | null {
    const nodeToken = creds.tokens.node?.deviceToken;
    if (!(this.sharedRefused && nodeToken)) {
      if (this.opts.sharedToken) return { auth: { token: this.opts.sharedToken }, used: 'shared' };
      if (this.opts.password) return { auth: { password: this.opts.password }, used: 'password' };
    }
    if (nodeToken) return { auth: { deviceToken: nodeToken }, used: 'device-token' };
    if (creds.bootstrap) return { auth: { bootstrapToken: creds.bootstrap.bootstrapToken }, used: 'bootstrap' };
    return null;
  }

  private commands(): GatewayHostCommands {
    return gatewayHostCommands(this.flavor);
  }

  private nextBackoff(): number {
    const d = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    return jitteredDelayMs(d, this.opts.random.bytes(4).readUInt32BE(0) / 0x1_0000_0000);
  }

  private classify(
    a: Extract<Attempt, { kind: 'refused' }>,
    used: AuthUsed,
    creds: NodeCredentials,
  ): { kind: 'fatal'; message: string } | { kind: 'retry'; delayMs: number } {
    // Remote gateways: another certificate than the pinned one is not something retrying fixes.
    if (a.pinMismatch) return { kind: 'fatal', message: a.pinMismatch };
    if (a.gatewayKeyMismatch) return { kind: 'fatal', message: a.gatewayKeyMismatch };
    const e = a.error;
    const detail = (e?.details?.code as string | undefined) ?? (a.closeReason === CATALOGUE.PAIRING_REJECTED.message ? 'PAIRING_REJECTED' : undefined);
    const next = (e?.details?.nextStep as string | undefined) ?? '';
    if (detail === 'AUTH_DEVICE_TOKEN_MISMATCH' && used === 'device-token') {
      // The gateway no longer takes the stored token (revoked, rotated elsewhere, device removed).
      this.opts.state.dropToken('node');
      if (creds.bootstrap) {
        this.opts.out('the stored node token was refused; retrying with the stored setup code');
        return { kind: 'retry', delayMs: 0 };
      }
      return {
        kind: 'fatal',
        message:
          "the gateway refused this node's device token (revoked or rotated by an operator, or the device was removed); pair again: `clawgate node run --code-file <setup-code-file>` " +
          `(create one with \`${gatewayHostCommands(this.flavor).mintCode(true)}\` on the gateway host) or --token-file <path> / CLAWGATE_NODE_TOKEN with the gateway token`,
      };
    }
    if ((detail === 'AUTH_TOKEN_MISMATCH' || detail === 'AUTH_PASSWORD_MISMATCH') && (used === 'shared' || used === 'password') && creds.tokens.node) {
      // The gateway secret changed, but this node is paired: its own token still opens the door.
      this.sharedRefused = true;
      this.opts.out(`the gateway refused the ${used === 'shared' ? 'token' : 'password'} given on the command line; retrying with the stored node token`);
      return { kind: 'retry', delayMs: 0 };
    }
    if (detail === 'PAIRING_REJECTED') {
      return { kind: 'fatal', message: 'pairing rejected by an operator; ask for approval again by restarting `clawgate node run`' };
    }
    if (detail === 'PAIRING_REQUIRED') {
      // A gateway that does not keep sockets waiting: the request is filed; ask again later.
      const rawId = e?.details?.requestId;
      const requestId = rawId === undefined ? undefined : printable(String(rawId));
      this.opts.out(`waiting for approval: request ${requestId ?? '?'} — on the gateway host run \`${this.commands().approveDevice(requestId ?? '<id>')}\``);
      return { kind: 'retry', delayMs: this.nextBackoff() };
    }
    // The reference's hints: an explicit "keep trying" wins over the code; "pause" means stop.
    const keepTrying = e?.details?.pauseReconnect === false || e?.details?.recommendedNextStep === 'wait_then_retry' || e?.retryable === true;
    if (!keepTrying && ((detail && FATAL_DETAILS.has(detail)) || e?.details?.pauseReconnect === true)) {
      return {
        kind: 'fatal',
        message: `connect refused: ${printable(e?.message ?? a.closeReason)}${detail ? ` [${printable(detail)}]` : ''}${next ? `\nnext: ${printable(next)}` : ''}`,
      };
    }
    if (!e && a.httpStatus !== undefined && a.httpStatus >= 400 && a.httpStatus < 500 && a.httpStatus !== 429) {
      // Refused before the WebSocket exists (e.g. 403 proxy_attribution_required): unchanged retries cannot help.
      return { kind: 'fatal', message: `the gateway refused the WebSocket upgrade: ${printable(a.closeReason)}` };
    }
    const hint = e?.retryAfterMs ?? (e?.details?.retryAfterMs as number | undefined);
    if (typeof hint === 'number' && Number.isFinite(hint)) {
      const delayMs = Math.min(Math.max(hint, RETRY_AFTER_MIN_MS), RETRY_AFTER_MAX_MS);
      this.opts.out(`gateway asked to retry in ${delayMs} ms${e ? ` (${e.message})` : ''}`);
      return { kind: 'retry', delayMs };
    }
    const delayMs = this.nextBackoff();
    const why = printable(
      e ? `${e.message}${detail ? ` [${detail}]` : ''}` : a.closeReason || (a.reachedGateway ? `closed (${a.closeCode})` : 'gateway unreachable'),
    );
    this.opts.out(`connect failed: ${why}; retrying in ${delayMs} ms`);
    return { kind: 'retry', delayMs };
  }

  private sleep(ms: number): Promise<void> {
    if (ms <= 0 || this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = null;
        done();
      };
    });
  }

  /** One handshake. Waiting for approval keeps the socket open with no deadline. */
  private connectOnce(url: string, auth: NonNullable<ConnectOptions['auth']>, expectedKey: string | null): Promise<Attempt> {
    return new Promise((resolve) => {
      const pin = this.opts.tlsFingerprint;
      const ws = new WebSocket(url, {
        headers: this.opts.headers,
        perMessageDeflate: false,
        handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
        // With a pin, the fingerprint check replaces CA verification (a self-signed gateway is fine).
        ...(pin ? { rejectUnauthorized: false } : {}),
      });
      this.current = ws;
      let settled = false;
      let reachedGateway = false;
      let connectError: ErrorShape | null = null;
      let provenGatewayKey: string | null = null;
      let challenged = false;
      let timer: NodeJS.Timeout | null = setTimeout(() => {
        timer = null;
        ws.terminate();
      }, HANDSHAKE_TIMEOUT_MS);
      let waitWatch: NodeJS.Timeout | null = null;
      let lastSignOfLifeMs = this.opts.clock.now();
      const alive = () => {
        lastSignOfLifeMs = this.opts.clock.now();
      };
      ws.on('ping', alive);
      ws.on('message', alive);
      const settle = (a: Attempt) => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        if (waitWatch) clearInterval(waitWatch);
        ws.off('ping', alive);
        ws.off('message', alive);
        ws.off('message', onMessage);
        resolve(a);
      };
      const onMessage = (data: Buffer) => {
        let frame: { type?: string; event?: string; payload?: Record<string, unknown>; ok?: boolean; error?: ErrorShape };
        try {
          frame = JSON.parse(data.toString());
        } catch {
          return;
        }
        if (frame.type === 'event' && frame.event === 'connect.challenge' && frame.payload) {
          reachedGateway = true;
          if (challenged || settled) return; // one connect per socket
          challenged = true;
          // Only the hints depend on this; the pin below decides trust.
          this.flavor = flavorOfChallenge(frame.payload);
          // Before any credential leaves: is this the gateway this node is pinned to?
          const check = checkGatewayChallenge(frame.payload, expectedKey);
          if (expectedKey && !check.ok) {
            settle({
              kind: 'refused',
              error: null,
              closeCode: null,
              closeReason: 'gateway key mismatch',
              reachedGateway: true,
              gatewayKeyMismatch:
                `refusing to send credentials to ${url}: ${check.problem}. This node is pinned to gateway key ${expectedKey} ` +
                `(in ${this.opts.state.dir}). Check that the URL reaches your gateway (\`clawgate qr\` on the gateway host shows its key); ` +
                'if its key really changed, pair again with a fresh setup code: `clawgate node run --code-file <setup-code-file>` after moving credentials.json away',
            });
            ws.terminate();
            return;
          }
          provenGatewayKey = check.ok ? check.fingerprint : null;
          const params = buildConnectParams(this.connectOptions(url, auth), String(frame.payload.nonce), Number(frame.payload.ts));
          ws.send(JSON.stringify({ type: 'req', id: 'connect', method: 'connect', params }));
        } else if (frame.type === 'event' && frame.event === 'device.pair.waiting') {
          // The gateway holds the socket until an operator decides: no deadline from here on,
          // only a check that the path is alive (the gateway pings every 25 s).
          if (timer) clearTimeout(timer);
          timer = null;
          waitWatch ??= setInterval(() => {
            if (this.opts.clock.now() - lastSignOfLifeMs > WAIT_SILENCE_MS) ws.terminate();
          }, WAIT_SILENCE_MS / 3);
          const requestId = printable(String(frame.payload?.requestId ?? '?'));
          this.opts.out(`waiting for approval: request ${requestId} — on the gateway host run \`${this.commands().approveDevice(requestId)}\``);
        } else if (frame.type === 'res') {
          if (frame.ok) settle({ kind: 'hello', conn: new GatewayConnection(ws, frame.payload as unknown as HelloPayload), provenGatewayKey });
          else connectError = frame.error ?? null;
        }
      };
      ws.on('message', onMessage);
      if (pin) {
        ws.on('upgrade', (res) => {
          const mismatch = checkTlsPin(res, pin, url);
          if (!mismatch) return;
          settle({ kind: 'refused', error: null, closeCode: null, closeReason: 'tls pin mismatch', reachedGateway: false, pinMismatch: mismatch.message });
          ws.terminate();
        });
      }
      ws.on('error', () => {}); // the close that follows carries the outcome
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('error', () => {});
        res.on('end', () => {
          settle({
            kind: 'refused',
            error: null,
            closeCode: null,
            closeReason: `HTTP ${res.statusCode}: ${body.slice(0, 300)}`,
            reachedGateway: true,
            httpStatus: res.statusCode,
          });
          ws.terminate();
        });
      });
      ws.on('close', (code, reason) => settle({ kind: 'refused', error: connectError, closeCode: code, closeReason: reason.toString(), reachedGateway }));
    });
  }

  private connectOptions(url: string, auth: NonNullable<ConnectOptions['auth']>): ConnectOptions {
    const client = {
      id: 'node-host',
      mode: 'node',
      version: NODE_HOST_VERSION,
      platform: process.platform,
      deviceFamily: process.platform === 'linux' ? 'Linux' : process.platform,
      displayName: this.opts.displayName,
      instanceId: this.opts.instanceId,
    };
    return {
      url,
      role: 'node',
      scopes: [],
      client,
      auth,
      identity: this.opts.identity,
      caps: ['system', 'device-pairing-wait'],
      commands: this.opts.commands,
      minProtocol: 3,
      maxProtocol: 4,
    };
  }

  /** Serve one authenticated connection until it closes. */
  private async serve(conn: GatewayConnection, url: string, used: AuthUsed): Promise<{ code: number; reason: string }> {
    const hello = conn.hello;
    const a = hello.auth;
    if (a.deviceToken) {
      const tokens = [{ role: a.role, deviceToken: a.deviceToken, scopes: a.scopes, issuedAtMs: a.issuedAtMs }, ...(a.deviceTokens ?? [])];
      // The gateway hands the device token back on every connect: only a role that had none is news.
      const held = this.opts.state.readCredentials().tokens;
      const fresh = tokens.filter((t) => held[t.role as keyof typeof held] === undefined);
      this.opts.state.saveTokens(tokens, url, used === 'bootstrap');
      if (fresh.length > 0)
        this.opts.out(`paired: device ${this.deviceId} holds a ${fresh.map((t) => t.role).join(' + ')} token (stored in ${this.opts.state.dir})`);
    } else {
      this.opts.state.saveGatewayUrl(url);
    }
    this.opts.out(
      `connected to ${url} as node "${this.opts.displayName}" (${this.deviceId}), protocol ${hello.protocol}; ` +
        `commands: ${this.opts.commands.join(', ') || '(none)'}; exec policy: ${this.opts.execPolicy}${this.opts.execPolicy === 'allowlist' ? ` (${this.opts.allowlistPath})` : ''}`,
    );
    this.current = conn.ws;
    let lastFrameAtMs = this.opts.clock.now();
    conn.ws.on('message', () => {
      lastFrameAtMs = this.opts.clock.now();
    });
    // The gateway ticks every tickIntervalMs; silence for two intervals means a dead path.
    const tickMs = Math.max(hello.policy?.tickIntervalMs ?? 30_000, 1_000);
    const watchdog = setInterval(() => {
      if (this.opts.clock.now() - lastFrameAtMs > 2 * tickMs) {
        this.opts.out(`no frame from the gateway for ${2 * tickMs} ms; reconnecting`);
        conn.ws.terminate();
      }
    }, tickMs);
    conn.onEvent((event, payload) => {
      conn.events.length = 0; // the connection keeps a log for short-lived clients; this one lives long
      this.onEvent(conn, event, payload);
    });
    // Frames that came in the same read as hello-ok were logged before the listener existed.
    for (const e of conn.events.splice(0)) this.onEvent(conn, e.event, e.payload);
    this.publishInventory(conn, true);
    const closed = await conn.closed;
    clearInterval(watchdog);
    this.invoker.abortAll();
    return closed;
  }

  /** What the reference node host publishes after hello-ok and after a surface approval; failures are harmless. */
  /**
   * What the reference node host publishes after hello-ok and after a surface approval. A
   * clawgate gateway refuses it with NODE_SURFACE_PENDING while this node's commands await
   * approval, naming the request: that is how the person at the node learns the id to approve.
   * Other failures are harmless (older or other gateways may not know the method).
   */
  private publishInventory(conn: GatewayConnection, atConnect = false): void {
    conn.request('node.runnerInventory.update', { protocolFeatures: [], workerHost: { enabled: false } }, 10_000).then(
      () => {
        if (atConnect) this.opts.out(`ready: ${this.opts.commands.join(', ') || '(no commands)'} can be invoked`);
      },
      (err: unknown) => {
        if (!(err instanceof GatewayRequestError) || err.detailCode !== 'NODE_SURFACE_PENDING') return;
        const requestId = printable(String(err.error.details?.requestId ?? '<requestId>'));
        this.opts.out(`waiting for command approval: request ${requestId} — on the gateway host run \`${this.commands().approveNode(requestId)}\``);
      },
    );
  }

  private onEvent(conn: GatewayConnection, event: string, payload: unknown): void {
    const p = (payload ?? {}) as Record<string, unknown>;
    if (event === 'node.invoke.request') this.invoker.handle(p, (frame) => conn.request('node.invoke.result', frame));
    else if (event === 'node.invoke.cancel') this.invoker.cancel(p);
    else if (event === 'device.token.rotated') {
      this.onTokenRotated(conn, p);
    } else if (event === 'node.pair.requested' && p.nodeId === this.deviceId) {
      const requestId = printable(String(p.requestId ?? '?'));
      this.opts.out(`waiting for command approval: request ${requestId} — on the gateway host run \`${this.commands().approveNode(requestId)}\``);
    } else if (event === 'node.pair.resolved' && p.nodeId === this.deviceId) {
      const decision = String(p.decision ?? '');
      if (decision === 'approved') {
        this.opts.out(`command surface approved (request ${String(p.requestId ?? '')}): ${this.opts.commands.join(', ')} can now be invoked`);
        this.publishInventory(conn);
      } else {
        this.opts.out(`command surface ${decision} (request ${String(p.requestId ?? '')}): this node's commands cannot be invoked`);
      }
    }
  }

  /**
   * An operator rotated this node's token: the gateway pushes the successor just before it closes
   * the socket (4001). It is written durably before anything else, so the reconnect that follows
   * the close — or a restart — uses it; the superseded token is refused from now on.
   */
  private onTokenRotated(conn: GatewayConnection, p: Record<string, unknown>): void {
    const { deviceId, role, deviceToken, scopes, issuedAtMs } = p;
    if (deviceId !== this.deviceId || role !== 'node' || typeof deviceToken !== 'string' || deviceToken.length === 0) return;
    const url = this.opts.state.readCredentials().gatewayUrl ?? conn.ws.url;
    const list = Array.isArray(scopes) ? scopes.filter((x): x is string => typeof x === 'string') : [];
    try {
      this.opts.state.saveTokens([{ role: 'node', deviceToken, scopes: list, ...(typeof issuedAtMs === 'number' ? { issuedAtMs } : {}) }], url, false);
    } catch (err) {
      // The old token is already dead at the gateway; say so now rather than at the next refusal.
      this.opts.err(
        `an operator rotated this node's token, but the new one could not be stored in ${this.opts.state.dir}: ${String(err)}; after this disconnect the node needs the gateway token (--token-file <path> or CLAWGATE_NODE_TOKEN) or a new setup code`,
      );
      return;
    }
    this.opts.out(`an operator rotated this node's token; the new one is stored in ${this.opts.state.dir} and used on reconnect`);
  }
}

/**
 * One backoff delay: uniformly in [ceilingMs/2, ceilingMs] for `unit` in [0, 1), so a fleet of
 * nodes cut off by the same gateway restart does not come back in the same millisecond.
 */
export function jitteredDelayMs(ceilingMs: number, unit: number): number {
  return Math.round(ceilingMs / 2 + (unit * ceilingMs) / 2);
}
