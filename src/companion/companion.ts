/**
 * The companion: one device identity (one record in the SDK's credential store) that is an
 * operator and a node side by side, each on its own lifecycle (lifecycle.ts). This module owns
 * what spans both sides: which side presents a setup code first, when the bootstrap token may be
 * dropped, applying a new code or shared token while running, and the status both sides report.
 */

import type { CheckpointHook, ClientState, CredentialStore, GatewayClient, GatewayClientOptions, GatewayRecord, Platform, Role } from '@clawgate/client';
import {
  applySetupCode,
  GatewayClient as Client,
  ClientError,
  cloneRecord,
  gatewayHostCommands,
  normalizeGatewayUrl,
  parseSetupCode,
  setSharedToken,
} from '@clawgate/client';
import type { Clock } from '../core/env.js';
import type { ExecPolicyMode } from '../node-host/exec-policy.js';
import { NodeInvoker } from '../node-host/invoker.js';
import { type Side, SideLifecycle, type SideStatus } from './lifecycle.js';

export const COMPANION_VERSION = '0.1.0';

export interface CompanionOptions {
  store: CredentialStore;
  platform: Platform;
  /** The gateway (its record's URL). */
  url: string;
  sides: { operator: boolean; node: boolean };
  /** A setup code was just applied: its bootstrap token goes first, before stored tokens. */
  forceBootstrap: boolean;
  displayName: string;
  node: { commands: string[]; execPolicy: ExecPolicyMode; allowlistDir: string; instanceId?: string };
  clock: Clock;
  env: NodeJS.ProcessEnv;
  out(line: string): void;
  err(line: string): void;
  /** Called after any change a status reader cares about. */
  onChange?(): void;
  backoff?: GatewayClientOptions['backoff'];
  checkpoint?: CheckpointHook;
}

export interface CompanionStatus {
  running: boolean;
  pid: number | null;
  url: string;
  deviceId: string | null;
  credentials: {
    sharedToken: boolean;
    /** A setup code's bootstrap token still kept (the hand-off is not complete). */
    bootstrapPending: boolean;
    tokens: Partial<Record<Role, { scopes: string[]; storedAtMs: number }>>;
  };
  operator: SideStatus;
  node: SideStatus;
  /** With `--ssh`: the supervised forward. */
  ssh?: { target?: string; state: 'starting' | 'up' | 'down'; lastError: string | null; restarts: number };
}

export type ControlResult = { ok: true; message: string } | { ok: false; code: string; message: string; nextStep?: string };

export class Companion {
  readonly operator: SideLifecycle;
  readonly node: SideLifecycle;
  readonly invoker: NodeInvoker;
  private url: string;
  private deviceId: string | null = null;
  /** Node start waits for the operator side to redeem the setup code first (one redemption, not two racing). */
  private nodeWaitsForOperator = false;
  /** Sides whose setup-code connect was refused as "not in this code's profile" (for that bootstrap token). */
  private readonly notGranted = new Map<Side, string>();
  private closed = false;

  constructor(private readonly opts: CompanionOptions) {
    this.url = normalizeGatewayUrl(opts.url).url;
    this.invoker = new NodeInvoker({
      commands: opts.node.commands,
      execPolicy: opts.node.execPolicy,
      allowlistDir: opts.node.allowlistDir,
      clock: opts.clock,
      env: opts.env,
      out: (l) => opts.out(`node: ${l}`),
      err: (l) => opts.err(`node: ${l}`),
    });
    const hooks = (side: Side) => ({
      createClient: (o: Partial<GatewayClientOptions>) => this.createClient(side, o),
      nextStepFor: (s: Side, st: Extract<ClientState, { status: 'paused' }>) => this.nextStepFor(s, st),
      out: opts.out,
      changed: (s: Side) => this.onSideChanged(s),
      deviceId: () => this.deviceId,
      approveDeviceHint: (id: string) => gatewayHostCommands(this.flavor()).approveDevice(id),
      approveNodeHint: (id: string) => gatewayHostCommands(this.flavor()).approveNode(id),
      ...(side === 'node' ? { invoker: this.invoker } : {}),
    });
    this.operator = new SideLifecycle('operator', opts.sides.operator, hooks('operator'));
    this.node = new SideLifecycle('node', opts.sides.node, hooks('node'));
  }

  get gatewayUrl(): string {
    return this.url;
  }

  private key(): string {
    return normalizeGatewayUrl(this.url).key;
  }

  private flavor() {
    return (this.operator.current ?? this.node.current)?.gatewayFlavor ?? 'clawgate';
  }

  side(side: Side): SideLifecycle {
    return side === 'operator' ? this.operator : this.node;
  }

  private enabledRoles(): Role[] {
    return (['operator', 'node'] as const).filter((s) => this.opts.sides[s]);
  }

  private createClient(side: Side, o: Partial<GatewayClientOptions>): GatewayClient {
    const client: GatewayClientOptions['client'] =
      side === 'node'
        ? { id: 'node-host', mode: 'node', version: COMPANION_VERSION, displayName: this.opts.displayName, deviceFamily: deviceFamily() }
        : { id: 'cli', mode: 'cli', version: COMPANION_VERSION, displayName: this.opts.displayName, deviceFamily: deviceFamily() };
    return new Client({
      url: this.url,
      role: side,
      store: this.opts.store,
      platform: this.opts.platform,
      client,
      // Node side as `clawgate node run` always behaved: a silent approval wait is a dead path, and a
      // proxy refusing the upgrade (HTTP 4xx) is not something an unchanged retry fixes.
      ...(side === 'node' ? { caps: ['system'], commands: this.opts.node.commands, approvalSilenceMs: 90_000, upgradeRefusal: 'pause' as const } : {}),
      // The bootstrap token is kept until every side this companion runs holds a durable token.
      bootstrapRoles: this.enabledRoles(),
      ...(this.opts.backoff ? { backoff: this.opts.backoff } : {}),
      ...(this.opts.checkpoint ? { checkpoint: this.opts.checkpoint } : {}),
      ...o,
    });
  }

  /** Start both sides. With a setup code to redeem and no tokens yet, the operator side redeems it first. */
  async start(): Promise<void> {
    const rec = await this.opts.store.load(this.key());
    this.deviceId = rec?.deviceId ?? null;
    await this.startSides(this.opts.forceBootstrap, rec);
  }

  private async startSides(forceBootstrap: boolean, rec: GatewayRecord | null): Promise<void> {
    this.notGranted.clear();
    const both = this.opts.sides.operator && this.opts.sides.node;
    const redeeming = !!rec?.bootstrap && (forceBootstrap || !rec.tokens.operator || !rec.tokens.node);
    this.operator.start({ forceBootstrap: forceBootstrap && this.opts.sides.operator });
    // Two connects redeeming one code would each mint a token set; the later one voids the earlier.
    this.nodeWaitsForOperator = both && redeeming && (forceBootstrap || !rec?.tokens.node);
    if (!this.nodeWaitsForOperator) this.node.start({ forceBootstrap: forceBootstrap && !this.opts.sides.operator });
  }

  private onSideChanged(side: Side): void {
    if (this.closed) return;
    if (side === 'operator' && this.nodeWaitsForOperator) {
      const st = this.operator.current?.state.status;
      if (st === 'connected' || st === 'paused' || st === 'awaiting-approval' || st === undefined) {
        this.nodeWaitsForOperator = false;
        this.node.start();
      }
    }
    const c = this.side(side).current;
    const s = c?.state;
    if (s?.status === 'connected') this.deviceId = s.deviceId;
    if (s?.status === 'paused' && s.reason === 'setup-code-unusable') void this.noteNotGranted(side);
    else if (s?.status === 'connected') void this.settleBootstrap();
    this.opts.onChange?.();
  }

  /**
   * A side refused as "this code does not grant your role" is not waited for: the bootstrap
   * token is then dropped once every side it does grant holds its token.
   */
  private async noteNotGranted(side: Side): Promise<void> {
    const rec = await this.opts.store.load(this.key()).catch(() => null);
    // The SDK drops a code the gateway calls dead; one it keeps was refused for this role only.
    if (rec?.bootstrap) this.notGranted.set(side, rec.bootstrap.token);
    await this.settleBootstrap();
  }

  private async settleBootstrap(): Promise<void> {
    const key = this.key();
    const rec = await this.opts.store.load(key).catch(() => null);
    const spent = rec?.bootstrap?.token;
    if (!rec || !spent) return;
    const done = (r: GatewayRecord) => this.enabledRoles().every((role) => !!r.tokens[role] || this.notGranted.get(role) === spent);
    if (!done(rec) || !this.enabledRoles().some((role) => !!rec.tokens[role] && rec.tokens[role].storedAtMs >= (rec.bootstrap?.setAtMs ?? 0))) return;
    await this.opts.store
      .update(
        key,
        (r) => {
          if (!r || r.bootstrap?.token !== spent || !done(r)) return r;
          const next = cloneRecord(r);
          delete next.bootstrap;
          return next;
        },
        { label: 'bootstrap-clear' },
      )
      .catch(() => undefined);
  }

  /** What the person should do about a paused side, in this CLI's words (never the SDK's). */
  private nextStepFor(side: Side, s: Extract<ClientState, { status: 'paused' }>): string {
    const cmds = gatewayHostCommands(this.flavor());
    const mint = this.flavor() === 'openclaw' ? '`openclaw qr`' : `\`clawgate qr --profile ${side === 'node' ? 'operator+node' : 'operator'}\``;
    const repair = `on the gateway host run ${mint}, save the code to a file here (mode 0600) and run \`clawgate companion pair --code-file <file>\``;
    const reconnect = `\`clawgate companion reconnect ${side}\``;
    switch (s.reason) {
      case 'device-token-rejected':
        return `The gateway no longer accepts this device's ${side} token (the ${side} role was revoked, the token rotated while this companion was offline, or the device was removed). Pair the ${side} side again: ${repair}; or, with the gateway token, \`clawgate companion set-token --token-file <file>\`. The ${side === 'node' ? 'operator' : 'node'} side is not affected.`;
      case 'pairing-required':
        return `Approve request ${s.requestId ?? '<id>'}${s.confirmationCode ? ` (confirmation code ${s.confirmationCode})` : ''} on the gateway host: \`${cmds.approveDevice(s.requestId ?? '<id>')}\`; then ${reconnect}.`;
      case 'pairing-rejected':
        return `The pairing request was rejected on the gateway. Ask the gateway operator, then ${reconnect} to file a new request.`;
      case 'setup-code-unusable':
        return this.notGranted.has(side)
          ? `The setup code does not grant the ${side} role. For the ${side} side: ${repair}; or run with --no-${side}.`
          : `The setup code cannot be used (${s.message}). Get a fresh one: ${repair}.`;
      case 'no-credential':
        return `This device holds no ${side} credential for ${this.url}. Pair: ${repair}; or \`clawgate companion set-token --token-file <file>\` with the gateway token.`;
      case 'auth-rejected':
        return `The gateway refused the credential${s.code ? ` (${s.code})` : ''}. Set the right gateway token with \`clawgate companion set-token --token-file <file>\` (checked before it replaces anything), or ${repair}.`;
      case 'identity-unreadable':
        return `The stored device identity could not be read (${s.message}); it is never replaced silently, since a new key is a new device. Restore the file from a backup, or move it away and pair again: ${repair}.`;
      default:
        return `${inCompanionTerms(s.nextStep)} Then ${reconnect}.`;
    }
  }

  /** Status of both sides plus what the store holds (never a secret). */
  async status(): Promise<CompanionStatus> {
    const rec = await this.opts.store.load(this.key()).catch(() => null);
    return {
      running: true,
      pid: process.pid,
      url: this.url,
      deviceId: rec?.deviceId ?? this.deviceId,
      credentials: credentialSummary(rec),
      operator: this.operator.status(),
      node: this.node.status(),
    };
  }

  /** A new setup code while running: stored (device tokens and shared token kept), then both sides restart with it. */
  async applySetupCode(code: string): Promise<ControlResult> {
    try {
      parseSetupCode(code, this.opts.clock.now());
    } catch (err) {
      return failure(err);
    }
    try {
      const { record } = await applySetupCode(this.opts.store, this.opts.platform, code, {
        url: this.url,
        nowMs: this.opts.clock.now(),
        displayName: this.opts.displayName,
      });
      this.deviceId = record.deviceId;
      await this.startSides(true, record);
      return { ok: true, message: `setup code stored for ${this.url}; redeeming it (see status)` };
    } catch (err) {
      return failure(err);
    }
  }

  /**
   * A (new) gateway token: tried first on an isolated connection with this device's key; only an
   * accepted token is stored. Device tokens are never touched. Sides that are not connected retry.
   */
  async setSharedToken(token: string): Promise<ControlResult> {
    try {
      await setSharedToken(this.opts.store, this.opts.platform, this.url, token, {
        nowMs: this.opts.clock.now(),
        clientOptions: { client: { id: 'cli', mode: 'cli', version: COMPANION_VERSION, deviceFamily: deviceFamily() } },
      });
    } catch (err) {
      return failure(err);
    }
    for (const side of [this.operator, this.node]) {
      const st = side.current?.state.status;
      if (side.enabled && st !== 'connected' && st !== 'awaiting-approval') side.reconnect();
    }
    return { ok: true, message: `gateway token accepted by ${this.url} and stored; device tokens kept` };
  }

  /**
   * The path to the gateway changed (an SSH forward came back): sides paused because the server
   * they reached could not prove the pinned gateway key try again. The check itself still runs
   * before any credential is sent, so a squatter keeps getting nothing.
   */
  reconnectPausedBy(reasons: readonly string[]): void {
    for (const side of [this.operator, this.node]) {
      const st = side.current?.state;
      if (st?.status === 'paused' && reasons.includes(st.reason)) side.reconnect();
    }
  }

  control(op: 'reconnect' | 'pause' | 'resume', side: Side): ControlResult {
    const s = this.side(side);
    if (!s.enabled) return { ok: false, code: 'SIDE_DISABLED', message: `the ${side} side is switched off (--no-${side})` };
    if (op === 'pause') s.stop();
    else s.reconnect();
    return { ok: true, message: `${side} side: ${op === 'pause' ? 'paused' : 'reconnecting'}` };
  }

  close(): void {
    this.closed = true;
    this.operator.close();
    this.node.close();
  }
}

/** An SDK next step, said in this CLI's terms (no SDK calls, no `clawgate pair` for a companion). */
export function inCompanionTerms(step: string): string {
  return step
    .replace(/ ?\(or `client\.setSharedToken`\/`pairWithSetupCode` in the SDK\)/g, '')
    .replace(/`clawgate pair --code-file <file>`/g, '`clawgate companion pair --code-file <file>`')
    .replace(/,? ?then call resume\(\)\.?/g, '.')
    .trim();
}

export function credentialSummary(rec: GatewayRecord | null): CompanionStatus['credentials'] {
  const tokens: CompanionStatus['credentials']['tokens'] = {};
  for (const role of ['operator', 'node'] as const) {
    const t = rec?.tokens[role];
    if (t) tokens[role] = { scopes: [...t.scopes], storedAtMs: t.storedAtMs };
  }
  return { sharedToken: !!rec?.sharedToken, bootstrapPending: !!rec?.bootstrap, tokens };
}

function failure(err: unknown): ControlResult {
  if (err instanceof ClientError)
    return {
      ok: false,
      code: err.gatewayCode ?? err.code,
      message: err.message,
      ...(err.nextStep ? { nextStep: err.nextStep.replace(/,? ?then call resume\(\)\.?/g, '.') } : {}),
    };
  const e = err as { code?: unknown; message?: unknown; nextStep?: unknown };
  return {
    ok: false,
    code: typeof e?.code === 'string' ? e.code : 'INTERNAL_ERROR',
    message: String(e?.message ?? err),
    ...(typeof e?.nextStep === 'string' ? { nextStep: e.nextStep } : {}),
  };
}

/** Kept stable across runs: it is part of the device metadata the gateway compares. */
function deviceFamily(): string {
  return process.platform === 'linux' ? 'Linux' : process.platform;
}
