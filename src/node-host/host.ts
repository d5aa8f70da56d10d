/**
 * The headless node host behind `clawgate node run`: a driver around one node-only
 * `GatewayClient` (the SDK's connection, backoff, approval wait, pins and credential hand-off),
 * which turns the client's states into the lines the person running the host reads, answers
 * `node.invoke.request` events through the shared invoker, and ends the run with exit 1 on every
 * pause — a refusal an unchanged retry cannot fix. What it may run on this machine is decided
 * here, by the local exec policy, whatever the gateway approved.
 */

import type { CredentialStore, GatewayRecord, Platform } from '@clawgate/client';
import { type ClientState, GatewayCallError, GatewayClient, gatewayHostCommands } from '@clawgate/client';
import { printable } from '@clawgate/protocol/text';
import type { Clock, Random } from '../core/env.js';
import type { ExecPolicyMode } from './exec-policy.js';
import { NodeInvoker } from './invoker.js';
import type { NodeState } from './state.js';

export const NODE_HOST_VERSION = '0.1.0';
export { MAX_CONCURRENT_INVOKES } from './invoker.js';
export const BACKOFF_BASE_MS = 1_000;
export const BACKOFF_MAX_MS = 30_000;
/** Relative spread of each backoff delay, so a fleet cut off by one restart does not return at once. */
const BACKOFF_JITTER = 0.5;
/** While waiting for approval: silence (no ping, no frame) this long means a dead path. */
const APPROVAL_SILENCE_MS = 90_000;

export interface NodeHostOptions {
  state: NodeState;
  deviceId: string;
  instanceId: string;
  /** Gateway URLs to try in order (a setup code may carry several); credentials are filed under the first. */
  urls: string[];
  /** Shared gateway token or password (`--token` / `--password`); wins over stored device tokens. */
  sharedToken?: string;
  password?: string;
  displayName: string;
  commands: string[];
  execPolicy: ExecPolicyMode;
  allowlistPath: string;
  /** The SDK store holding this node's record (migrated from the state dir's own files). */
  store: CredentialStore;
  platform: Platform;
  clock: Clock;
  random: Random;
  env: NodeJS.ProcessEnv;
  /** Progress lines for the person running the host. */
  out(line: string): void;
  /** Problems (still one line each). */
  err(line: string): void;
}

const CREDENTIAL_LABEL: Record<string, string> = {
  'device-token': 'device-token',
  'shared-token': 'shared',
  password: 'password',
  'bootstrap-token': 'setup code',
};

export class NodeHost {
  private readonly invoker: NodeInvoker;
  private readonly client: GatewayClient;
  private stopped = false;
  private finish: ((code: number) => void) | null = null;
  private exitCode: number | null = null;
  /** A PAIRING_REQUIRED pause (a gateway without the live wait) is retried on this timer. */
  private pairingRetry: NodeJS.Timeout | null = null;
  private pairingBackoffMs = BACKOFF_BASE_MS;
  /** The record as it stood at the last connect, to tell a new pairing or a newly learned key. */
  private known: GatewayRecord | null = null;
  private wasConnected = false;
  private lastConnectingLine = '';
  /** The tick interval of the last session (the session is gone by the time its silence is reported). */
  private tickMs = 30_000;

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
    const [url, ...alternateUrls] = opts.urls;
    this.client = new GatewayClient({
      url: url as string,
      ...(alternateUrls.length > 0 ? { alternateUrls } : {}),
      ...(opts.sharedToken ? { sharedSecret: { token: opts.sharedToken } } : opts.password ? { sharedSecret: { password: opts.password } } : {}),
      role: 'node',
      store: opts.store,
      platform: opts.platform,
      client: {
        id: 'node-host',
        mode: 'node',
        version: NODE_HOST_VERSION,
        displayName: opts.displayName,
        deviceFamily: process.platform === 'linux' ? 'Linux' : process.platform,
        instanceId: opts.instanceId,
      },
      caps: ['system'],
      commands: opts.commands,
      upgradeRefusal: 'pause',
      approvalSilenceMs: APPROVAL_SILENCE_MS,
      backoff: { baseMs: BACKOFF_BASE_MS, maxMs: BACKOFF_MAX_MS, jitter: BACKOFF_JITTER },
      now: () => opts.clock.now(),
      random: () => opts.random.bytes(4).readUInt32BE(0) / 0x1_0000_0000,
    });
  }

  get deviceId(): string {
    return this.opts.deviceId;
  }

  /** Stop: close the socket, cancel running commands; `run()` then resolves with 0. */
  stop(): void {
    this.stopped = true;
    this.end(0);
  }

  /** Connect, serve, reconnect — until stopped (0) or paused for good (1). */
  async run(): Promise<number> {
    if (this.exitCode !== null) return this.exitCode;
    this.known = await this.opts.store.load(this.client.target.key);
    const done = new Promise<number>((resolve) => {
      this.finish = resolve;
    });
    this.client.onState((s, prev) => this.onState(s, prev));
    this.wire();
    if (!this.stopped) this.client.start();
    return done;
  }

  private end(code: number): void {
    if (this.exitCode !== null) return;
    this.exitCode = code;
    if (this.pairingRetry) clearTimeout(this.pairingRetry);
    this.invoker.abortAll();
    this.client.close();
    this.finish?.(code);
  }

  private url(): string {
    return this.client.currentUrl;
  }

  private commandsHint() {
    return gatewayHostCommands(this.client.gatewayFlavor);
  }

  private onState(s: ClientState, prev: ClientState): void {
    if (this.exitCode !== null) return;
    if (s.status !== 'connected' && this.wasConnected && s.status !== 'closed') this.invoker.abortAll();
    if (s.status === 'connecting') this.onConnecting(s, prev);
    else if (s.status === 'awaiting-approval') {
      const id = printable(s.requestId ?? '?');
      this.opts.out(`waiting for approval: request ${id} — on the gateway host run \`${this.commandsHint().approveDevice(id)}\``);
    } else if (s.status === 'connected') {
      this.pairingBackoffMs = BACKOFF_BASE_MS;
      this.wasConnected = true;
      this.tickMs = this.client.session?.policy.tickIntervalMs ?? this.tickMs;
      void this.onConnected(s, this.client.currentGeneration);
    } else if (s.status === 'paused') void this.onPaused(s);
  }

  private onConnecting(s: Extract<ClientState, { status: 'connecting' }>, prev: ClientState): void {
    if (s.retryAtMs === undefined) {
      if (!s.credential) return;
      const line = `connecting to ${this.url()} as node ${this.deviceId} (${CREDENTIAL_LABEL[s.credential] ?? s.credential})`;
      // One line per attempt: the client may restate an attempt it is already making.
      if (prev.status === 'connecting' && prev.retryAtMs === undefined && line === this.lastConnectingLine) return;
      this.lastConnectingLine = line;
      this.opts.out(line);
      return;
    }
    this.lastConnectingLine = '';
    const e = s.lastError ?? { code: 'UNKNOWN', message: 'connection failed' };
    if (prev.status === 'connected') {
      if (e.code === 'TICK_TIMEOUT') {
        // The client drops the path after more than two tick intervals of silence.
        this.opts.out(`no frame from the gateway for ${2 * this.tickMs} ms; reconnecting`);
      }
      const close = /^CLOSE_(\d+)$/.exec(e.code);
      const what = close ? `${close[1]}${e.message && !e.message.startsWith('socket closed') ? ` ${printable(e.message)}` : ''}` : printable(e.message);
      this.opts.out(`disconnected from ${this.url()} (${what}); reconnecting`);
      return;
    }
    if (e.code === 'SHARED_SECRET_REFUSED') {
      this.opts.out(`the gateway refused the ${this.opts.password ? 'password' : 'token'} given on the command line; retrying with the stored node token`);
      return;
    }
    // The gateway's own hint (read defensively: an installed SDK older than this tree lacks the field).
    const hintMs = (s as { retryAfterMs?: unknown }).retryAfterMs;
    if (typeof hintMs === 'number') {
      this.opts.out(`gateway asked to retry in ${hintMs} ms (${printable(e.message)})`);
      return;
    }
    const delayMs = Math.max(0, s.retryAtMs - this.opts.clock.now());
    // A socket that closed abnormally without a reason never reached a gateway that could say why.
    const why =
      e.code === 'CLOSE_1006' || /ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN/.test(e.message) ? 'gateway unreachable' : printable(e.message);
    this.opts.out(`connect failed: ${why}${/^[A-Z][A-Z0-9_]+$/.test(e.code) && !e.code.startsWith('CLOSE_') ? ` [${e.code}]` : ''}; retrying in ${delayMs} ms`);
  }

  private async onConnected(s: Extract<ClientState, { status: 'connected' }>, gen: number): Promise<void> {
    const before = this.known;
    const now = await this.opts.store.load(this.client.target.key).catch(() => null);
    if (this.exitCode !== null || gen !== this.client.currentGeneration) return;
    this.known = now;
    // The gateway hands the device token back on every connect: only a role that had none is news.
    const fresh = (['node', 'operator'] as const).filter((r) => now?.tokens[r] && !before?.tokens[r]);
    if (fresh.length > 0) this.opts.out(`paired: device ${this.deviceId} holds a ${fresh.join(' + ')} token (stored in ${this.opts.state.dir})`);
    if (now?.gatewayKey && !before?.gatewayKey) {
      this.opts.out(`pinned gateway key ${now.gatewayKey} (stored in ${this.opts.state.dir}); every reconnect checks it`);
    }
    this.opts.out(
      `connected to ${this.url()} as node "${this.opts.displayName}" (${s.deviceId}), protocol ${this.client.session?.protocol ?? '?'}; ` +
        `commands: ${this.opts.commands.join(', ') || '(none)'}; exec policy: ${this.opts.execPolicy}${this.opts.execPolicy === 'allowlist' ? ` (${this.opts.allowlistPath})` : ''}`,
    );
    this.publishInventory(gen, true);
  }

  private async onPaused(s: Extract<ClientState, { status: 'paused' }>): Promise<void> {
    if (s.reason === 'pairing-required') {
      // A gateway that does not keep sockets waiting: the request is filed; ask again later.
      const id = printable(s.requestId ?? '?');
      this.opts.out(`waiting for approval: request ${id} — on the gateway host run \`${this.commandsHint().approveDevice(id)}\``);
      const d = this.pairingBackoffMs;
      this.pairingBackoffMs = Math.min(d * 2, BACKOFF_MAX_MS);
      this.pairingRetry = setTimeout(
        () => {
          this.pairingRetry = null;
          if (this.exitCode === null) this.client.resume();
        },
        jitteredDelayMs(d, this.opts.random.bytes(4).readUInt32BE(0) / 0x1_0000_0000),
      );
      return;
    }
    const hints = this.commandsHint();
    let message: string;
    if (s.reason === 'device-token-rejected') {
      // The gateway no longer takes the stored token (revoked, rotated elsewhere, device removed): forget it.
      await this.dropNodeToken();
      message =
        "the gateway refused this node's device token (revoked or rotated by an operator, or the device was removed); pair again: `clawgate node run --code-file <setup-code-file>` " +
        `(create one with \`${hints.mintCode(true)}\` on the gateway host) or --token-file <path> / CLAWGATE_NODE_TOKEN with the gateway token`;
    } else if (s.reason === 'pairing-rejected') {
      message = 'pairing rejected by an operator; ask for approval again by restarting `clawgate node run`';
    } else if (s.reason === 'no-credential') {
      message =
        'no credential to connect with: pass a setup code with --code-file <path> or CLAWGATE_SETUP_CODE (from `clawgate qr --profile node` on the gateway host), or --token-file <path> / CLAWGATE_NODE_TOKEN with the gateway token';
    } else if (s.reason === 'tls-untrusted') {
      message = `TLS certificate mismatch: ${printable(s.message)}; nothing was sent. ${printable(s.nextStep)}`;
    } else if (s.reason === 'gateway-key-mismatch') {
      const problem = /^refused to send credentials to \S+: (.*); this device is pinned/.exec(s.message)?.[1] ?? s.message;
      const pinned = this.known?.gatewayKey ?? '?';
      message =
        `refusing to send credentials to ${this.url()}: ${printable(problem)}. This node is pinned to gateway key ${pinned} ` +
        `(in ${this.opts.state.dir}). Check that the URL reaches your gateway (\`clawgate qr\` on the gateway host shows its key); ` +
        'if its key really changed, pair again with a fresh setup code: `clawgate node run --code-file <setup-code-file>` after moving the state dir away';
    } else if (s.reason === 'upgrade-refused') {
      const status = /^HTTP_(\d{3})$/.exec(s.code ?? '')?.[1] ?? '4xx';
      const body = s.message.replace(/^the gateway refused the WebSocket upgrade at \S+: /, '');
      message = `the gateway refused the WebSocket upgrade: HTTP ${status}: ${printable(body)}`;
    } else {
      message = `connect refused: ${printable(s.message)}${s.code ? ` [${printable(s.code)}]` : ''}${s.nextStep ? `\nnext: ${printable(s.nextStep)}` : ''}`;
    }
    if (this.exitCode !== null) return;
    this.opts.err(message);
    this.end(1);
  }

  /**
   * Only the node token goes (the one the client just presented: this host holds the dir's lock,
   * so nothing else writes it); an operator token of the same device is not this host's to drop.
   */
  private async dropNodeToken(): Promise<void> {
    await this.opts.store
      .update(
        this.client.target.key,
        (r) => {
          if (!r?.tokens.node) return r;
          const next: GatewayRecord = { ...r, tokens: { ...r.tokens } };
          delete next.tokens.node;
          return next;
        },
        { label: 'node-token-drop' },
      )
      .catch((err: unknown) => this.opts.err(`could not forget the refused node token: ${String(err)}`));
  }

  private wire(): void {
    const c = this.client;
    c.on('node.invoke.request', (_e, payload) => {
      // An invoke can arrive with the hello-ok, while the client still stores what it carried:
      // the result goes out once the session is up (a session lost meanwhile loses the result).
      this.invoker.handle(payload, (frame) =>
        c.state.status === 'connected'
          ? c.request('node.invoke.result', frame)
          : c.waitFor((st) => st.status === 'connected', 10_000).then(() => c.request('node.invoke.result', frame)),
      );
    });
    c.on('node.invoke.cancel', (_e, payload) => this.invoker.cancel(payload));
    c.on('device.token.rotated', (_e, payload) => {
      const p = (payload ?? {}) as Record<string, unknown>;
      if (p.deviceId !== this.deviceId || p.role !== 'node') return;
      // Listeners never see the secret: the client writes the successor durably before the
      // reconnect that follows the close.
      this.opts.out(`an operator rotated this node's token; the new one is stored in ${this.opts.state.dir} and used on reconnect`);
    });
    c.on('node.pair.requested', (_e, payload) => {
      const p = (payload ?? {}) as Record<string, unknown>;
      if (p.nodeId !== this.deviceId) return;
      const requestId = printable(String(p.requestId ?? '?'));
      this.opts.out(`waiting for command approval: request ${requestId} — on the gateway host run \`${this.commandsHint().approveNode(requestId)}\``);
    });
    c.on('node.pair.resolved', (_e, payload) => {
      const p = (payload ?? {}) as Record<string, unknown>;
      if (p.nodeId !== this.deviceId) return;
      const decision = printable(String(p.decision ?? ''));
      const requestId = printable(String(p.requestId ?? ''));
      if (decision === 'approved') {
        this.opts.out(`command surface approved (request ${requestId}): ${this.opts.commands.join(', ')} can now be invoked`);
        this.publishInventory(c.currentGeneration, false);
      } else {
        this.opts.out(`command surface ${decision} (request ${requestId}): this node's commands cannot be invoked`);
      }
    });
  }

  /**
   * What the reference node host publishes after hello-ok and after a surface approval. A
   * clawgate gateway refuses it with NODE_SURFACE_PENDING while this node's commands await
   * approval, naming the request: that is how the person at the node learns the id to approve.
   * Other failures are harmless (older or other gateways may not know the method).
   */
  private publishInventory(gen: number, atConnect: boolean): void {
    this.client.request('node.runnerInventory.update', { protocolFeatures: [], workerHost: { enabled: false } }, { timeoutMs: 10_000 }).then(
      () => {
        if (atConnect && gen === this.client.currentGeneration) this.opts.out(`ready: ${this.opts.commands.join(', ') || '(no commands)'} can be invoked`);
      },
      (err: unknown) => {
        if (gen !== this.client.currentGeneration || !(err instanceof GatewayCallError) || err.code !== 'NODE_SURFACE_PENDING') return;
        const requestId = printable(String(err.details.requestId ?? '<requestId>'));
        this.opts.out(`waiting for command approval: request ${requestId} — on the gateway host run \`${this.commandsHint().approveNode(requestId)}\``);
      },
    );
  }
}

/**
 * One backoff delay: uniformly in [ceilingMs/2, ceilingMs] for `unit` in [0, 1), so a fleet of
 * nodes cut off by the same gateway restart does not come back in the same millisecond.
 */
export function jitteredDelayMs(ceilingMs: number, unit: number): number {
  return Math.round(ceilingMs / 2 + (unit * ceilingMs) / 2);
}
