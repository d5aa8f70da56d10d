/**
 * Scenarios beyond connect latency/throughput, built on the same load generator (`connectOnce`):
 *
 * - idle connections: hold N authenticated device-token sockets open and read the gateway's
 *   resident memory at given counts;
 * - approval latency: an admin's `device.pair.approve` call → the waiting client admitted;
 * - revocation latency: an admin's `device.token.revoke` call → the revoked device's socket closed.
 *
 * Everything here speaks only the public protocol, so it runs unchanged against any gateway.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WebSocket } from 'ws';
import { generateIdentity } from '../src/client/connection.js';
import { startEchoNode } from './echo-node.js';
import type { OwnerOptions } from './harness.js';
import { ConnectSpec, connectOnce, type LoadProfile, MARK, MARK_COUNT, prepareMode, type Target, withDisplayName } from './loadgen.js';
import { readRssMiB, readTreeRssMiB } from './proc.js';
import { Counter, Samples, type Summary } from './stats.js';

// ------------------------------------------------------------------------------------------
// An admin session: a live socket sending requests
// ------------------------------------------------------------------------------------------

interface Res {
  ok: boolean;
  payload?: Record<string, unknown>;
  error?: { code?: string; message?: string; details?: Record<string, unknown> };
}

export class Session {
  private next = 0;
  private readonly pending = new Map<string, (r: Res) => void>();

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      let f: { type?: string; id?: string } & Res;
      try {
        f = JSON.parse(data.toString('utf8'));
      } catch {
        return;
      }
      if (f.type !== 'res' || typeof f.id !== 'string') return;
      const done = this.pending.get(f.id);
      if (done) {
        this.pending.delete(f.id);
        done(f);
      }
    });
    ws.on('close', () => {
      for (const done of this.pending.values()) done({ ok: false, error: { code: 'closed' } });
      this.pending.clear();
    });
  }

  request(method: string, params: Record<string, unknown>, timeoutMs = 30_000): Promise<Res> {
    const id = `bench-${++this.next}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ ok: false, error: { code: 'timeout' } });
      }, timeoutMs);
      this.pending.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.ws.send(JSON.stringify({ type: 'req', id, method, params }));
    });
  }

  close(): void {
    this.ws.close(1000);
  }
}

/** A device-less `cli`/`cli` admin session (how the real `openclaw devices …` CLI connects on loopback). */
export async function openAdminSession(target: Target, profile: LoadProfile, scopes = ['operator.admin', 'operator.pairing']): Promise<Session> {
  const spec = new ConnectSpec(target.url, { ...profile, scopes }, profile.devicelessClient, { token: target.token }, null);
  const socket = await connectKept(spec, profile.timeoutMs);
  if (typeof socket === 'string') throw new Error(`admin session refused (${socket})`);
  return new Session(socket);
}

/** Connect and keep the socket after hello-ok: the open socket, or why it was not admitted. */
async function connectKept(spec: ConnectSpec, timeoutMs: number): Promise<WebSocket | string> {
  let socket = null as WebSocket | null;
  const err = await connectOnce(spec, {
    timeoutMs,
    marks: new Float64Array(MARK_COUNT),
    keepOpen: (ws) => {
      socket = ws;
    },
  });
  return err === null && socket !== null ? socket : String(err);
}

// ------------------------------------------------------------------------------------------
// Idle connections
// ------------------------------------------------------------------------------------------

export interface IdleStep {
  /** Connections asked for. */
  target: number;
  /** Connections open when RSS was read. */
  open: number;
  rssMiB: number | null;
  /** RSS of the gateway and its helper processes. */
  treeRssMiB: number | null;
  /** (rss − idle rss) / open, KiB. */
  perConnectionKiB: number | null;
  rampSeconds: number;
  /** The step hit its time budget before reaching `target`. */
  budgetExceeded: boolean;
}

export interface IdleResult {
  identities: number;
  scopes: string[];
  parallel: number;
  settleMs: number;
  idleRssMiB: number | null;
  idleTreeRssMiB: number | null;
  steps: IdleStep[];
  /** Sockets the gateway closed while they were meant to stay open. */
  droppedByGateway: number;
  errors: Record<string, number>;
  afterCloseRssMiB: number | null;
  /** Bytes the `operator.read` watcher sessions received during the ramp, and per connect made. */
  watchers?: { sessions: number; bytesReceived: number; frames: number; bytesPerConnect: number | null } | null;
}

export interface IdleOptions {
  counts: number[];
  identities: number;
  parallel: number;
  settleMs: number;
  /** Time allowed per step (ramp), seconds. */
  budgetS: number;
  /** Client source addresses, each used for `perAddress` connections in turn (default: the OS's choice). */
  localAddresses?: string[];
  perAddress?: number;
  /** Operator sessions (`operator.read`) open during the ramp whose received bytes are counted (event-storm check). */
  watchers?: number;
  profile: LoadProfile;
  log: (msg: string) => void;
}

const PROGRESS_INTERVAL_MS = 30_000;

/**
 * Open device-token sockets (scopes [] so no gateway sends presence storms to them: the
 * reference's 1,000-connection run with operator.read pushed 32 GB of presence frames) in
 * batches of `parallel`, up to each count in turn, and read RSS after `settleMs`.
 */
export async function idleConnections(target: Target, o: IdleOptions): Promise<IdleResult> {
  const profile: LoadProfile = { ...o.profile, scopes: [] };
  const prepared = await prepareMode(target, 'device-token', o.identities, profile);
  const watch = o.watchers ? await openWatchers(target, o.watchers, o.profile) : null;
  const sockets: WebSocket[] = [];
  const errors = new Counter();
  let dropped = 0;
  let closing = false;
  await sleep(o.settleMs);
  const pid = target.pid;
  const idleRssMiB = pid !== null ? readRssMiB(pid) : null;
  const idleTreeRssMiB = pid !== null ? readTreeRssMiB(pid) : null;
  const steps: IdleStep[] = [];
  let slot = 0;
  let made = 0;
  if (watch) watch.reset();
  for (const count of o.counts) {
    const t0 = performance.now();
    const deadline = t0 + o.budgetS * 1000;
    let consecutive = 0;
    let inFlight = 0;
    const worker = async () => {
      const marks = new Float64Array(MARK_COUNT);
      while (sockets.length + inFlight < count && performance.now() < deadline && consecutive < 50) {
        inFlight++;
        const spec = prepared.specs[slot++ % prepared.specs.length] as ConnectSpec;
        const addrs = o.localAddresses;
        const localAddress = addrs && addrs.length > 0 ? addrs[Math.floor(made / (o.perAddress ?? 20_000)) % addrs.length] : undefined;
        made++;
        const err = await connectOnce(spec, {
          timeoutMs: o.profile.timeoutMs,
          marks,
          localAddress,
          keepOpen: (ws) => {
            sockets.push(ws);
            ws.on('close', () => {
              if (!closing) dropped++;
            });
          },
        });
        inFlight--;
        if (err !== null) {
          errors.add(err);
          consecutive++;
          await sleep(50);
        } else consecutive = 0;
      }
    };
    // A long ramp (100,000 connections take minutes, much longer in an emulated guest) says how far it is.
    const progress = setInterval(() => {
      const s = Math.round((performance.now() - t0) / 1000);
      o.log(`${target.label}: ${sockets.length - dropped} of ${count} open after ${s} s (${errors.total} errors)`);
    }, PROGRESS_INTERVAL_MS);
    await Promise.all(Array.from({ length: o.parallel }, worker));
    clearInterval(progress);
    const rampSeconds = Math.round((performance.now() - t0) / 100) / 10;
    o.log(`${target.label}: ${sockets.length} idle connections after ${rampSeconds} s; settling ${o.settleMs} ms`);
    await sleep(o.settleMs);
    const rss = pid !== null ? readRssMiB(pid) : null;
    const open = sockets.length - dropped;
    steps.push({
      target: count,
      open,
      rssMiB: rss,
      treeRssMiB: pid !== null ? readTreeRssMiB(pid) : null,
      perConnectionKiB: rss !== null && idleRssMiB !== null && open > 0 ? Math.round(((rss - idleRssMiB) * 1024 * 10) / open) / 10 : null,
      rampSeconds,
      budgetExceeded: sockets.length < count,
    });
    if (sockets.length < count) break;
  }
  const watched = watch ? watch.read(made) : null;
  closing = true;
  for (const ws of sockets) ws.terminate();
  watch?.close();
  await sleep(o.settleMs);
  return {
    watchers: watched,
    identities: o.identities,
    scopes: [],
    parallel: o.parallel,
    settleMs: o.settleMs,
    idleRssMiB,
    idleTreeRssMiB,
    steps,
    droppedByGateway: dropped,
    errors: errors.toJSON(),
    afterCloseRssMiB: pid !== null ? readRssMiB(pid) : null,
  };
}

/**
 * `n` device-token sessions with `operator.read` (10 identities), counting every byte they
 * receive: what one connect costs the operators watching (a presence broadcast per connect
 * would show here as bytes × sessions).
 */
async function openWatchers(target: Target, n: number, profile: LoadProfile) {
  const readers: LoadProfile = { ...profile, scopes: ['operator.read'] };
  const prepared = await prepareMode(target, 'device-token', Math.min(10, n), readers);
  const sockets: WebSocket[] = [];
  let bytes = 0;
  let frames = 0;
  for (let i = 0; i < n; i++) {
    const ws = await connectKept(prepared.specs[i % prepared.specs.length] as ConnectSpec, profile.timeoutMs);
    if (typeof ws === 'string') throw new Error(`watcher session ${i + 1}/${n} refused (${ws})`);
    ws.on('message', (data: Buffer) => {
      bytes += data.length;
      frames++;
    });
    sockets.push(ws);
  }
  return {
    reset() {
      bytes = 0;
      frames = 0;
    },
    read(connects: number) {
      return { sessions: sockets.length, bytesReceived: bytes, frames, bytesPerConnect: connects > 0 ? Math.round((bytes / connects) * 10) / 10 : null };
    },
    close() {
      for (const ws of sockets) ws.terminate();
    },
  };
}

// ------------------------------------------------------------------------------------------
// Approval latency
// ------------------------------------------------------------------------------------------

export interface ApprovalResult {
  n: number;
  /** `wait`: the client stayed connected (clawgate `device-pairing-wait`); `reconnect`: it was
   * refused with PAIRING_REQUIRED and reconnects the moment the approve response arrives. */
  how: Record<string, number>;
  /** approve request sent → the client's hello-ok received. */
  latencyMs: Summary | null;
  /** approve request sent → approve response received. */
  approveCallMs: Summary | null;
  errors: Record<string, number>;
}

/**
 * For each of `n` new devices: connect with the shared token (declaring `device-pairing-wait`),
 * get a pending request (waiting event, or PAIRING_REQUIRED with its requestId), approve it
 * from an admin session and time approve-sent → hello-ok. Needs a gateway that pairs nothing
 * silently.
 */
export async function approvalLatency(target: Target, n: number, profile: LoadProfile): Promise<ApprovalResult> {
  const admin = await openAdminSession(target, profile);
  const lat = new Samples(n);
  const call = new Samples(n);
  const how = new Counter();
  const errors = new Counter();
  try {
    for (let i = 0; i < n; i++) {
      const identity = generateIdentity();
      const client = withDisplayName(profile.deviceClient, identity);
      const spec = new ConnectSpec(target.url, profile, client, { token: target.token }, identity, ['device-pairing-wait']);
      const marks = new Float64Array(MARK_COUNT);
      let requestId: string | null = null;
      let waitingSeen: () => void = () => {};
      const waiting = new Promise<void>((r) => {
        waitingSeen = r;
      });
      const first = connectOnce(spec, {
        timeoutMs: profile.timeoutMs,
        marks,
        waitClose: true,
        onPreHelloEvent: (event, payload) => {
          if (event === 'device.pair.waiting' && typeof payload?.requestId === 'string') {
            requestId = payload.requestId;
            waitingSeen();
          }
        },
        onReject: (e) => {
          if (typeof e.details?.requestId === 'string') requestId = e.details.requestId;
        },
      });
      const outcome = await Promise.race([waiting.then(() => 'waiting' as const), first]);
      if (requestId === null) {
        errors.add(outcome === null ? 'admitted-without-approval' : `no-request:${outcome}`);
        if (outcome === 'waiting') await first;
        continue;
      }
      const t0 = performance.now();
      const res = await admin.request('device.pair.approve', { requestId });
      const tCall = performance.now();
      if (!res.ok) {
        errors.add(`approve:${res.error?.code ?? 'unknown'}`);
        await first;
        continue;
      }
      call.push(tCall - t0);
      if (outcome === 'waiting') {
        const err = await first;
        if (err !== null) {
          errors.add(err);
          continue;
        }
        how.add('wait');
        lat.push((marks[MARK.hello] as number) - t0);
      } else {
        await first;
        const again = new ConnectSpec(target.url, profile, client, { token: target.token }, identity);
        const err = await connectOnce(again, { timeoutMs: profile.timeoutMs, marks, waitClose: true });
        if (err !== null) {
          errors.add(`reconnect:${err}`);
          continue;
        }
        how.add('reconnect');
        lat.push((marks[MARK.hello] as number) - t0);
      }
    }
  } finally {
    admin.close();
  }
  return { n, how: how.toJSON(), latencyMs: lat.summary(), approveCallMs: call.summary(), errors: errors.toJSON() };
}

// ------------------------------------------------------------------------------------------
// Revocation latency
// ------------------------------------------------------------------------------------------

export interface RevocationResult {
  n: number;
  /** revoke request sent → the revoked device's socket closed (client side 'close'). */
  latencyMs: Summary | null;
  /** revoke request sent → revoke response received. */
  revokeCallMs: Summary | null;
  closeCodes: Record<string, number>;
  errors: Record<string, number>;
}

/**
 * For each of `n` new devices: pair silently (shared token, loopback), connect with its device
 * token and keep the socket, revoke its operator token from an admin session, time revoke-sent
 * → socket closed.
 */
export async function revocationLatency(target: Target, n: number, profile: LoadProfile): Promise<RevocationResult> {
  const admin = await openAdminSession(target, profile);
  const lat = new Samples(n);
  const call = new Samples(n);
  const codes = new Counter();
  const errors = new Counter();
  try {
    for (let i = 0; i < n; i++) {
      let prepared: Awaited<ReturnType<typeof prepareMode>>;
      try {
        prepared = await prepareMode(target, 'device-token', 1, profile);
      } catch (err) {
        errors.add(`pair:${(err as Error).message.slice(0, 80)}`);
        continue;
      }
      const spec = prepared.specs[0] as ConnectSpec;
      const ws = await connectKept(spec, profile.timeoutMs);
      if (typeof ws === 'string') {
        errors.add(`connect:${ws}`);
        continue;
      }
      let closedAt = 0;
      const closed = new Promise<number>((resolve) =>
        ws.once('close', (code: number) => {
          closedAt = performance.now();
          resolve(code);
        }),
      );
      const deviceId = spec.identity?.deviceId as string;
      const t0 = performance.now();
      const res = await admin.request('device.token.revoke', { deviceId, role: profile.role });
      const tCall = performance.now();
      if (!res.ok) {
        errors.add(`revoke:${res.error?.code ?? 'unknown'}`);
        ws.terminate();
        continue;
      }
      call.push(tCall - t0);
      const timeout = sleep(5000).then(() => -1);
      const code = await Promise.race([closed, timeout]);
      if (code === -1) {
        errors.add('not-closed-within-5s');
        ws.terminate();
        continue;
      }
      codes.add(String(code));
      lat.push(closedAt - t0);
    }
  } finally {
    admin.close();
  }
  return { n, latencyMs: lat.summary(), revokeCallMs: call.summary(), closeCodes: codes.toJSON(), errors: errors.toJSON() };
}

// ------------------------------------------------------------------------------------------
// node.invoke round trip
// ------------------------------------------------------------------------------------------

export interface NodeInvokeResult {
  n: number;
  /** operator sends node.invoke → its response received (operator → gateway → node → gateway → operator). */
  latencyMs: Summary | null;
  answeredByNode: number;
  errors: Record<string, number>;
}

/**
 * A node (role `node`, one echo command, paired silently over loopback) and an operator holding
 * the gateway's owner credential (to approve the node's command surface); `warmup` + `n`
 * sequential `node.invoke` calls, each answered by the node with `node.invoke.result`.
 * clawgate's node protocol; OpenClaw filters node commands to its own allow-list (see README).
 */
export async function nodeInvokeLatency(target: Target, owner: OwnerOptions, n: number, warmup: number): Promise<NodeInvokeResult> {
  const errors = new Counter();
  const lat = new Samples(n);
  const echo = await startEchoNode(target.url, target.token, owner);
  try {
    for (let i = 0; i < warmup + n; i++) {
      const t0 = performance.now();
      try {
        await echo.op.request('node.invoke', { nodeId: echo.nodeId, command: 'bench.echo', params: { i } });
        if (i >= warmup) lat.push(performance.now() - t0);
      } catch (err) {
        errors.add(String((err as Error).message).slice(0, 60));
      }
    }
  } finally {
    await echo.close();
  }
  return { n, latencyMs: lat.summary(), answeredByNode: echo.answered(), errors: errors.toJSON() };
}
