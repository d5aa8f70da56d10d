/**
 * One side of the companion (operator or node): its own GatewayClient — so its own socket, state
 * machine, backoff and generation guard — plus what the person at the machine needs to know
 * about it (pending request and confirmation code, the node's command surface, the next step).
 *
 * A side never touches the other side. Every callback of a client checks that the client is
 * still this side's current one (`gen`): a client replaced by a pause, a resume or a new setup
 * code can never change what the side reports.
 */
import type { ClientState, GatewayClient, GatewayClientOptions, Role } from '@clawgate/client';
import { GatewayCallError } from '@clawgate/client';
import type { NodeInvoker } from '../node-host/invoker.js';

export type Side = Role;

/** The node's declared command surface, as the gateway last told this side. */
export type SurfaceState = 'unknown' | 'pending' | 'approved' | 'rejected';

export interface SideStatus {
  side: Side;
  enabled: boolean;
  /** The client's status, or `stopped` (paused by the person / not running). */
  state: ClientState['status'] | 'stopped';
  role: Role;
  scopes: string[];
  /** Which credential the current or last connect presented. */
  credential: string | null;
  /** A pairing request waiting for a person, with the code the approver sees next to it. */
  pendingRequestId: string | null;
  confirmationCode: string | null;
  /** Node side: the command surface approval (request id while pending). */
  surface?: SurfaceState;
  surfaceRequestId?: string | null;
  lastError: { code: string; message: string } | null;
  /** What a person should do next, in CLI terms; null when nothing is needed. */
  nextStep: string | null;
  /** The pause reason or an explanation of the state. */
  message: string | null;
}

export interface LifecycleHooks {
  /** Builds the client for a fresh start of this side. */
  createClient(opts: Partial<GatewayClientOptions>): GatewayClient;
  /** Next-step text for a pause, in the companion's words. */
  nextStepFor(side: Side, state: Extract<ClientState, { status: 'paused' }>): string;
  out(line: string): void;
  /** Any change a status reader cares about. */
  changed(side: Side): void;
  /** The node side's invoker (node side only). */
  invoker?: NodeInvoker;
  deviceId(): string | null;
  approveDeviceHint(requestId: string): string;
  approveNodeHint(requestId: string): string;
}

export class SideLifecycle {
  private client: GatewayClient | null = null;
  /** Bumped whenever the client is replaced or stopped; callbacks of older clients do nothing. */
  private gen = 0;
  private stoppedByUser = false;
  private lastError: { code: string; message: string } | null = null;
  private lastCredential: string | null = null;
  private surface: SurfaceState = 'unknown';
  private surfaceRequestId: string | null = null;
  private lastPrinted = '';

  constructor(
    readonly side: Side,
    readonly enabled: boolean,
    private readonly hooks: LifecycleHooks,
  ) {}

  get current(): GatewayClient | null {
    return this.client;
  }

  get generation(): number {
    return this.gen;
  }

  /** (Re)start this side with a new client; the previous one is closed and can no longer report. */
  start(opts: Partial<GatewayClientOptions> = {}): void {
    if (!this.enabled) return;
    this.retire();
    this.stoppedByUser = false;
    const gen = ++this.gen;
    const client = this.hooks.createClient(opts);
    this.client = client;
    client.onState((s) => {
      if (gen !== this.gen) return;
      this.onState(client, s);
    });
    if (this.side === 'node') this.wireNode(client, gen);
    client.start();
  }

  /** The person paused this side: close its connection; the other side is untouched. */
  stop(): void {
    this.retire();
    this.stoppedByUser = true;
    this.hooks.changed(this.side);
  }

  /** Reconnect now (clears a pause); starts a stopped side again. */
  reconnect(): void {
    if (!this.enabled) return;
    const c = this.client;
    if (!c || this.stoppedByUser || c.state.status === 'closed') this.start();
    else c.reconnect();
  }

  close(): void {
    this.retire();
  }

  private retire(): void {
    this.gen++;
    const old = this.client;
    this.client = null;
    if (old) old.close();
    if (this.side === 'node') this.hooks.invoker?.abortAll();
  }

  private print(line: string): void {
    // Repeated identical progress lines (a retry loop) are said once.
    if (line === this.lastPrinted) return;
    this.lastPrinted = line;
    this.hooks.out(`${this.side}: ${line}`);
  }

  private onState(client: GatewayClient, s: ClientState): void {
    if (s.status === 'connecting') {
      if (s.credential) this.lastCredential = s.credential;
      if (s.lastError) this.lastError = s.lastError;
      if (s.lastError && s.retryAtMs) this.print(`connection lost or refused (${s.lastError.message}); retrying`);
      if (this.side === 'node') this.hooks.invoker?.abortAll();
    } else if (s.status === 'awaiting-approval') {
      this.lastCredential = s.credential;
      const id = s.requestId ?? '<id>';
      this.print(
        `waiting for approval: request ${id}${s.confirmationCode ? `, confirmation code ${s.confirmationCode}` : ''} — on the gateway host run \`${this.hooks.approveDeviceHint(id)}\` (check the code matches)`,
      );
    } else if (s.status === 'connected') {
      this.lastCredential = s.credential;
      this.lastError = null;
      this.print(`connected to ${client.target.url} as ${s.role} (device ${s.deviceId}, ${s.credential}; scopes: ${s.scopes.join(', ') || '(none)'})`);
      if (this.side === 'node') this.publishInventory(client, this.gen);
    } else if (s.status === 'paused') {
      this.lastError = { code: s.code ?? s.reason, message: s.message };
      this.print(`paused (${s.reason}): ${s.message}\n  next: ${this.hooks.nextStepFor(this.side, s)}`);
      if (this.side === 'node') this.hooks.invoker?.abortAll();
    }
    this.hooks.changed(this.side);
  }

  /** Node side: serve invokes and follow the command surface approval on this client. */
  private wireNode(client: GatewayClient, gen: number): void {
    const inv = this.hooks.invoker;
    client.on('node.invoke.request', (_e, payload) => {
      if (gen !== this.gen || !inv) return;
      inv.handle(payload, (frame) => client.request('node.invoke.result', frame));
    });
    client.on('node.invoke.cancel', (_e, payload) => {
      if (gen === this.gen) inv?.cancel(payload);
    });
    client.on('node.pair.requested', (_e, payload) => {
      const p = (payload ?? {}) as Record<string, unknown>;
      if (gen !== this.gen || p.nodeId !== this.hooks.deviceId()) return;
      this.setSurface('pending', typeof p.requestId === 'string' ? p.requestId : null);
    });
    client.on('node.pair.resolved', (_e, payload) => {
      const p = (payload ?? {}) as Record<string, unknown>;
      if (gen !== this.gen || p.nodeId !== this.hooks.deviceId()) return;
      if (p.decision === 'approved') {
        this.setSurface('approved', null);
        this.publishInventory(client, gen);
      } else this.setSurface('rejected', typeof p.requestId === 'string' ? p.requestId : null);
    });
  }

  private setSurface(surface: SurfaceState, requestId: string | null): void {
    this.surface = surface;
    this.surfaceRequestId = requestId;
    if (surface === 'pending') {
      const id = requestId ?? '<requestId>';
      this.print(`waiting for command approval: request ${id} — on the gateway host run \`${this.hooks.approveNodeHint(id)}\``);
    } else if (surface === 'approved') this.print('command surface approved: the declared commands can be invoked');
    else if (surface === 'rejected') this.print('command surface rejected on the gateway: this node is connected but none of its commands can be invoked');
    this.hooks.changed(this.side);
  }

  /**
   * A clawgate gateway refuses `node.runnerInventory.update` with NODE_SURFACE_PENDING (naming
   * the request) while this node's commands await approval; accepted means they are invocable.
   * Other failures are harmless (other gateways may not know the method).
   */
  private publishInventory(client: GatewayClient, gen: number): void {
    client.request('node.runnerInventory.update', { protocolFeatures: [], workerHost: { enabled: false } }, { timeoutMs: 10_000 }).then(
      () => {
        if (gen === this.gen) this.setSurface('approved', null);
      },
      (err: unknown) => {
        if (gen !== this.gen || !(err instanceof GatewayCallError) || err.code !== 'NODE_SURFACE_PENDING') return;
        this.setSurface('pending', typeof err.details.requestId === 'string' ? err.details.requestId : null);
      },
    );
  }

  status(): SideStatus {
    const base: SideStatus = {
      side: this.side,
      enabled: this.enabled,
      state: 'stopped',
      role: this.side,
      scopes: [],
      credential: this.lastCredential,
      pendingRequestId: null,
      confirmationCode: null,
      lastError: this.lastError,
      nextStep: null,
      message: null,
    };
    if (this.side === 'node') {
      base.surface = this.surface;
      base.surfaceRequestId = this.surfaceRequestId;
    }
    if (!this.enabled) {
      base.message = `the ${this.side} side is switched off (--no-${this.side})`;
      return base;
    }
    const c = this.client;
    if (!c || this.stoppedByUser) {
      base.message = this.stoppedByUser ? `the ${this.side} side was paused here` : 'not started yet';
      base.nextStep = this.stoppedByUser
        ? `Resume it: \`clawgate companion mcp\` tool resume_side {side: "${this.side}"}, or restart \`clawgate companion run\`.`
        : null;
      return base;
    }
    const s = c.state;
    base.state = s.status;
    if (s.status === 'connected') {
      base.scopes = [...s.scopes];
      base.credential = s.credential;
      if (s.pendingRequestId) {
        base.pendingRequestId = s.pendingRequestId;
        base.nextStep = `A scope upgrade is pending: \`${this.hooks.approveDeviceHint(s.pendingRequestId)}\` on the gateway host.`;
      }
      if (this.side === 'node' && this.surface === 'pending') {
        const id = this.surfaceRequestId ?? '<requestId>';
        base.nextStep = `Approve this node's commands: \`${this.hooks.approveNodeHint(id)}\` on the gateway host.`;
      } else if (this.side === 'node' && this.surface === 'rejected') {
        base.nextStep = 'The command surface was rejected on the gateway; ask its operator, then `clawgate companion reconnect node` to file a new request.';
      }
    } else if (s.status === 'awaiting-approval') {
      base.credential = s.credential;
      base.pendingRequestId = s.requestId;
      base.confirmationCode = s.confirmationCode ?? null;
      base.nextStep = `Approve request ${s.requestId ?? '<id>'} on the gateway host (\`${this.hooks.approveDeviceHint(s.requestId ?? '<id>')}\`) after checking that it shows confirmation code ${s.confirmationCode ?? '(none)'}; this side connects by itself.`;
    } else if (s.status === 'paused') {
      base.pendingRequestId = s.requestId ?? null;
      base.confirmationCode = s.confirmationCode ?? null;
      base.message = s.message;
      base.nextStep = this.hooks.nextStepFor(this.side, s);
    } else if (s.status === 'connecting') {
      if (s.lastError) {
        base.message = `retrying: ${s.lastError.message}`;
        base.nextStep = `Nothing to do if the gateway is restarting; otherwise check that ${c.target.url} is reachable.`;
      }
    }
    return base;
  }
}
