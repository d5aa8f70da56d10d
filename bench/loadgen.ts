/**
 * The load generator: raw `ws` clients speaking just enough of the Gateway protocol to get a
 * hello-ok (challenge → connect → res). Nothing gateway-specific beyond the protocol, so the
 * same code can be pointed at any gateway URL (clawgate, or a peer such as OpenClaw).
 *
 * Timed path per connect: new WebSocket() → open → connect.challenge → (sign) → send connect →
 * hello-ok. Everything that does not depend on the challenge (frame text, signature prefix,
 * key object) is prepared once per client slot in a ConnectSpec, so the hot loop allocates only
 * what `ws` and one signature need.
 */
import { type KeyObject, sign } from 'node:crypto';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { normalizeMetadataField, signaturePayloadV3, signedTokenField } from '@clawgate/protocol/signature';
import { WebSocket } from 'ws';
import { type DeviceIdentity, generateIdentity } from '../src/client/connection.js';
import { busyCores, readCpuSeconds, readMainThreadSwitches, readRssMiB, readSystemCpu } from './proc.js';
import { Counter, r2, Samples, type Summary } from './stats.js';

export const MODES = ['shared-deviceless', 'shared-device', 'device-token'] as const;
export type Mode = (typeof MODES)[number];

export const MODE_LABELS: Record<Mode, string> = {
  'shared-deviceless': 'shared token, device-less cli/cli',
  'shared-device': 'shared token + signed paired device',
  'device-token': 'auth.deviceToken + signed device',
};

/** A gateway to measure. `pid` enables RSS/CPU sampling (only for a process on this machine). */
export interface Target {
  label: string;
  url: string;
  /** Shared gateway token (auth.token). */
  token: string;
  pid: number | null;
}

export interface ClientProfile {
  id: string;
  mode: string;
  version: string;
  platform: string;
  deviceFamily?: string;
  /** Distinct per identity: OpenClaw retires silently paired devices sharing (id, mode, displayName). */
  displayName?: string;
}

export interface LoadProfile {
  role: 'operator' | 'node';
  scopes: string[];
  /** Client of the device-less mode (must be a loopback helper to keep its scopes). */
  devicelessClient: ClientProfile;
  /** Client of the device modes. */
  deviceClient: ClientProfile;
  /** Per-connect limit (open → hello-ok), milliseconds. */
  timeoutMs: number;
}

export const DEFAULT_PROFILE: LoadProfile = {
  role: 'operator',
  scopes: ['operator.read'],
  devicelessClient: { id: 'cli', mode: 'cli', version: '0.1.0', platform: process.platform },
  deviceClient: { id: 'test', mode: 'test', version: '0.1.0', platform: process.platform },
  timeoutMs: 10_000,
};

const CONNECT_ID = 'bench-connect';
const CONNECT_ID_NEEDLE = Buffer.from(`"id":"${CONNECT_ID}"`);
const WS_OPTIONS = { perMessageDeflate: false, handshakeTimeout: 10_000 } as const;

/** Marks written by connectOnce (performance.now() values). */
export const MARK = { start: 0, open: 1, challenge: 2, sent: 3, hello: 4 } as const;
export const MARK_COUNT = 5;

/** Everything about one client slot that is fixed before the timed loop. */
export class ConnectSpec {
  /** Whole connect frame for a device-less client (the challenge does not enter it). */
  private readonly staticFrame: string | null;
  private readonly frameHead: string;
  private readonly sigHead: string;
  private readonly sigMid: string;
  private readonly sigTail: string;
  private readonly key: KeyObject | null;

  constructor(
    readonly url: string,
    readonly profile: LoadProfile,
    readonly client: ClientProfile,
    readonly auth: { token?: string; deviceToken?: string },
    readonly identity: DeviceIdentity | null,
    caps: string[] = [],
  ) {
    const params: Record<string, unknown> = {
      minProtocol: 4,
      maxProtocol: 4,
      client,
      role: profile.role,
      scopes: profile.scopes,
      auth,
    };
    if (caps.length > 0) params.caps = caps;
    const head = `{"type":"req","id":"${CONNECT_ID}","method":"connect","params":`;
    if (!identity) {
      this.staticFrame = `${head}${JSON.stringify(params)}}`;
      this.frameHead = this.sigHead = this.sigMid = this.sigTail = '';
      this.key = null;
      return;
    }
    this.staticFrame = null;
    this.key = identity.privateKey;
    const p = JSON.stringify(params);
    this.frameHead = `${head}${p.slice(0, -1)},"device":{"id":${JSON.stringify(identity.deviceId)},"publicKey":${JSON.stringify(identity.publicKey)},"signature":"`;
    this.sigHead = `v3|${identity.deviceId}|${client.id}|${client.mode}|${profile.role}|${profile.scopes.join(',')}|`;
    this.sigMid = `|${signedTokenField(auth)}|`;
    this.sigTail = `|${normalizeMetadataField(client.platform)}|${normalizeMetadataField(client.deviceFamily)}`;
    // The precomputed pieces must give exactly the payload the protocol module builds.
    const probe = this.signaturePayload('00000000-0000-4000-8000-000000000000', 1_700_000_000_000);
    const expected = signaturePayloadV3({
      deviceId: identity.deviceId,
      clientId: client.id,
      clientMode: client.mode,
      role: profile.role,
      scopes: profile.scopes,
      signedAtMs: 1_700_000_000_000,
      token: signedTokenField(auth),
      nonce: '00000000-0000-4000-8000-000000000000',
      platform: client.platform,
      deviceFamily: client.deviceFamily,
    });
    if (probe !== expected) throw new Error(`bench signature payload drifted from the protocol module:\n${probe}\n${expected}`);
  }

  private signaturePayload(nonce: string, signedAt: number): string {
    return this.sigHead + signedAt + this.sigMid + nonce + this.sigTail;
  }

  /** The connect frame answering a challenge. */
  frame(nonce: string, challengeTs: number): string {
    if (this.staticFrame !== null) return this.staticFrame;
    const signedAt = Number.isFinite(challengeTs) ? challengeTs : Date.now();
    const sig = sign(null, Buffer.from(this.signaturePayload(nonce, signedAt), 'utf8'), this.key as KeyObject).toString('base64url');
    return `${this.frameHead}${sig}","signedAt":${signedAt},"nonce":${JSON.stringify(nonce)}}}}`;
  }
}

export interface AttemptOptions {
  timeoutMs: number;
  /** Receives MARK_COUNT timestamps; required to compute latency. */
  marks: Float64Array;
  /** Resolve only once the socket is fully closed (sequential runs: one socket at a time). */
  waitClose?: boolean;
  /** Called with the parsed hello-ok payload (pairing steps; off in timed loops). */
  onHello?: (payload: Record<string, unknown>) => void;
  /** Client-side source address (127.0.0.x): one loopback address has ~28,000 ephemeral ports. */
  localAddress?: string;
  /** Keep the socket open after hello-ok and hand it over (idle-connection scenarios). */
  keepOpen?: (ws: WebSocket) => void;
  /** Event frames arriving after `connect` was sent and before its response (e.g. `device.pair.waiting`). */
  onPreHelloEvent?: (event: string, payload: Record<string, unknown> | undefined) => void;
  /** The error of a rejected connect (e.g. to read `details.requestId` of PAIRING_REQUIRED). */
  onReject?: (error: NonNullable<ResFrame['error']>) => void;
}

interface ResFrame {
  type?: string;
  id?: string;
  ok?: boolean;
  payload?: Record<string, unknown>;
  error?: { code?: string; message?: string; details?: { code?: string; requestId?: string } };
}

/**
 * One connect. Resolves with null on hello-ok, or with an error kind (`timeout`,
 * `socket:<code>`, `http:<status>`, `rejected:<detail code>`, `closed:<code>`). Never rejects.
 */
export function connectOnce(spec: ConnectSpec, o: AttemptOptions): Promise<string | null> {
  const marks = o.marks;
  marks.fill(0);
  return new Promise((resolve) => {
    marks[MARK.start] = performance.now();
    const ws = new WebSocket(spec.url, o.localAddress ? { ...WS_OPTIONS, localAddress: o.localAddress } : WS_OPTIONS);
    let phase: 0 | 1 | 2 = 0; // 0: waiting for the challenge, 1: connect sent, 2: settled
    const timer = setTimeout(() => fail('timeout'), o.timeoutMs);

    const settle = (result: string | null) => {
      phase = 2;
      clearTimeout(timer);
      resolve(result);
    };
    const fail = (kind: string) => {
      if (phase === 2) return;
      settle(kind);
      if (ws.readyState === WebSocket.OPEN) ws.close(1000);
      else ws.terminate();
    };

    ws.on('open', () => {
      marks[MARK.open] = performance.now();
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (phase === 2 || isBinary) return;
      if (phase === 0) {
        let f: { type?: string; event?: string; payload?: { nonce?: unknown; ts?: unknown } };
        try {
          f = JSON.parse(data.toString('utf8'));
        } catch {
          return fail('bad-frame');
        }
        if (f.type !== 'event' || f.event !== 'connect.challenge') return;
        marks[MARK.challenge] = performance.now();
        const nonce = f.payload?.nonce;
        if (typeof nonce !== 'string') return fail('bad-challenge');
        const ts = f.payload?.ts;
        ws.send(spec.frame(nonce, typeof ts === 'number' ? ts : Number.NaN));
        marks[MARK.sent] = performance.now();
        phase = 1;
        return;
      }
      // Events (ticks, presence, pairing) may come before the response: skip them unparsed
      // unless the caller listens for them.
      if (data.indexOf(CONNECT_ID_NEEDLE) === -1) {
        if (o.onPreHelloEvent) {
          try {
            const e = JSON.parse(data.toString('utf8')) as { type?: string; event?: string; payload?: Record<string, unknown> };
            if (e.type === 'event' && typeof e.event === 'string') o.onPreHelloEvent(e.event, e.payload);
          } catch {
            // not JSON: not an event
          }
        }
        return;
      }
      const now = performance.now();
      let f: ResFrame;
      try {
        f = JSON.parse(data.toString('utf8'));
      } catch {
        return fail('bad-frame');
      }
      if (f.type !== 'res' || f.id !== CONNECT_ID) return;
      if (!f.ok) {
        if (o.onReject && f.error) o.onReject(f.error);
        return fail(`rejected:${f.error?.details?.code ?? f.error?.code ?? 'unknown'}`);
      }
      marks[MARK.hello] = now;
      if (o.onHello && f.payload) o.onHello(f.payload);
      if (o.keepOpen) {
        settle(null);
        o.keepOpen(ws);
        return;
      }
      if (o.waitClose) {
        phase = 2;
        clearTimeout(timer);
        const guard = setTimeout(() => ws.terminate(), 2000); // 'close' follows a terminate
        ws.once('close', () => {
          clearTimeout(guard);
          resolve(null);
        });
        ws.close(1000);
        return;
      }
      settle(null);
      ws.close(1000);
    });
    ws.on('unexpected-response', (req, res) => {
      res.resume();
      req.destroy();
      fail(`http:${res.statusCode}`);
    });
    ws.on('error', (err: NodeJS.ErrnoException) => fail(`socket:${err.code ?? err.message}`));
    ws.on('close', (code: number) => fail(`closed:${code}`));
  });
}

// ------------------------------------------------------------------------------------------
// Preparing client slots (pairing happens here, outside every timed loop)
// ------------------------------------------------------------------------------------------

/** The device client profile named after the identity (see ClientProfile.displayName). */
export function withDisplayName(client: ClientProfile, identity: DeviceIdentity): ClientProfile {
  return { ...client, displayName: `bench-${identity.deviceId.slice(0, 12)}` };
}

export interface Prepared {
  mode: Mode;
  specs: ConnectSpec[];
  /** Connects made to pair identities (shared token; first connect of each device). */
  pairing: { n: number; latencyMs: Summary | null; errors: Record<string, number> } | null;
}

/**
 * Build `count` client slots for a mode. Device modes get one fresh identity per slot, paired
 * up front with a shared-token connect (silent pairing on loopback); `device-token` keeps the
 * device token from that first hello-ok. Throws when the gateway does not cooperate.
 */
export async function prepareMode(target: Target, mode: Mode, count: number, profile: LoadProfile): Promise<Prepared> {
  if (mode === 'shared-deviceless') {
    const spec = new ConnectSpec(target.url, profile, profile.devicelessClient, { token: target.token }, null);
    // As many check connects as the device modes make pairing connects: fail fast, warm alike.
    const marks = new Float64Array(MARK_COUNT);
    for (let i = 0; i < count; i++) {
      const err = await connectOnce(spec, { timeoutMs: profile.timeoutMs, marks, waitClose: true });
      if (err !== null) throw new Error(`${mode}: check connect ${i + 1}/${count} failed (${err})`);
    }
    return { mode, specs: Array.from({ length: count }, () => spec), pairing: null };
  }
  const specs: ConnectSpec[] = [];
  const lat = new Samples(count);
  const errors = new Counter();
  const marks = new Float64Array(MARK_COUNT);
  for (let i = 0; i < count; i++) {
    const identity = generateIdentity();
    const client = withDisplayName(profile.deviceClient, identity);
    const pairSpec = new ConnectSpec(target.url, profile, client, { token: target.token }, identity);
    let hello: Record<string, unknown> | null = null;
    const err = await connectOnce(pairSpec, {
      timeoutMs: profile.timeoutMs,
      marks,
      waitClose: true,
      onHello: (p) => {
        hello = p;
      },
    });
    if (err !== null) {
      errors.add(err);
      throw new Error(`${mode}: pairing connect ${i + 1}/${count} failed (${err}); is ${target.url} a loopback gateway with silent local pairing?`);
    }
    lat.push((marks[MARK.hello] as number) - (marks[MARK.start] as number));
    if (mode === 'shared-device') {
      specs.push(pairSpec);
      continue;
    }
    const deviceToken = ((hello as Record<string, unknown> | null)?.auth as { deviceToken?: unknown } | undefined)?.deviceToken;
    if (typeof deviceToken !== 'string') throw new Error(`${mode}: the first (pairing) hello-ok carried no auth.deviceToken`);
    specs.push(new ConnectSpec(target.url, profile, client, { deviceToken }, identity));
  }
  return { mode, specs, pairing: { n: count, latencyMs: lat.summary(), errors: errors.toJSON() } };
}

// ------------------------------------------------------------------------------------------
// CPU accounting of a measurement window
// ------------------------------------------------------------------------------------------

export interface CpuUse {
  /** Gateway process (all threads), when its pid is known. */
  gatewayCores: number | null;
  /** This load generator (it shares the machine with the gateway). */
  loadgenCores: number;
  /** Whole machine busy. */
  machineCores: number | null;
  /** Machine − gateway − load generator: other processes, or kernel work not charged to either (noise). */
  otherCores: number | null;
}

/** Start a CPU window now; call the result to close it. */
function cpuWindow(pid: number | null): () => CpuUse {
  const g0 = pid !== null ? readCpuSeconds(pid) : null;
  const own0 = process.cpuUsage();
  const sys0 = readSystemCpu();
  const t0 = performance.now();
  return () => {
    const wall = (performance.now() - t0) / 1000;
    const g1 = pid !== null ? readCpuSeconds(pid) : null;
    const own = process.cpuUsage(own0);
    const machineCores = busyCores(sys0, readSystemCpu(), cpus().length);
    const gatewayCores = g0 !== null && g1 !== null ? r2((g1 - g0) / wall) : null;
    const loadgenCores = r2((own.user + own.system) / 1e6 / wall);
    const otherCores = machineCores !== null ? Math.max(0, r2(machineCores - (gatewayCores ?? 0) - loadgenCores)) : null;
    return { gatewayCores, loadgenCores, machineCores, otherCores };
  };
}

// ------------------------------------------------------------------------------------------
// Sequential latency
// ------------------------------------------------------------------------------------------

export interface LatencyResult {
  test: 'latency';
  mode: Mode;
  url: string;
  n: number;
  warmup: number;
  wallSeconds: number;
  /** new WebSocket() → hello-ok. */
  totalMs: Summary | null;
  /** new WebSocket() → open. */
  socketOpenMs: Summary | null;
  /** new WebSocket() → connect.challenge received. */
  challengeMs: Summary | null;
  /**
   * connect.challenge received → hello-ok received: the gateway processing `connect` plus the
   * client building (and signing) the frame, ~0.05–0.1 ms. Not split at the send: on a small
   * machine the kernel often runs the gateway inside the client's write, so a mark taken after
   * send() lands after the gateway's work.
   */
  challengeToHelloMs: Summary | null;
  /**
   * The gateway's main thread over the recorded connects, per connect: how often it blocked
   * (waited for the network) and how often the kernel preempted it (null without a pid or off
   * Linux). Two columns compare fairly only when their preemptions are alike.
   */
  gatewayMainThread: { blockedPerConnect: number; preemptedPerConnect: number } | null;
  errors: Record<string, number>;
  cpu: CpuUse;
}

function perConnectSwitches(from: { voluntary: number; involuntary: number } | null, pid: number | null, connects: number): LatencyResult['gatewayMainThread'] {
  const to = pid !== null ? readMainThreadSwitches(pid) : null;
  if (!from || !to || connects === 0) return null;
  return { blockedPerConnect: r2((to.voluntary - from.voluntary) / connects), preemptedPerConnect: r2((to.involuntary - from.involuntary) / connects) };
}

/** `warmup` unrecorded connects, then `n` recorded ones, one socket at a time. */
export async function sequentialLatency(target: Target, prepared: Prepared, n: number, warmup: number, profile: LoadProfile): Promise<LatencyResult> {
  const spec = prepared.specs[0];
  if (!spec) throw new Error('no client slot prepared');
  const marks = new Float64Array(MARK_COUNT);
  const total = new Samples(n);
  const open = new Samples(n);
  const challenge = new Samples(n);
  const toHello = new Samples(n);
  const errors = new Counter();
  let consecutiveErrors = 0;
  const t0 = performance.now();
  const cpu = cpuWindow(target.pid);
  let switches0 = warmup === 0 && target.pid !== null ? readMainThreadSwitches(target.pid) : null;
  for (let i = 0; i < warmup + n; i++) {
    if (i === warmup && i > 0 && target.pid !== null) switches0 = readMainThreadSwitches(target.pid);
    const err = await connectOnce(spec, { timeoutMs: profile.timeoutMs, marks, waitClose: true });
    if (err !== null) {
      if (i >= warmup) errors.add(err);
      if (++consecutiveErrors >= 10) {
        errors.add('aborted-after-10-consecutive-errors');
        break;
      }
      continue;
    }
    consecutiveErrors = 0;
    if (i < warmup) continue;
    const s = marks[MARK.start] as number;
    total.push((marks[MARK.hello] as number) - s);
    open.push((marks[MARK.open] as number) - s);
    challenge.push((marks[MARK.challenge] as number) - s);
    toHello.push((marks[MARK.hello] as number) - (marks[MARK.challenge] as number));
  }
  return {
    test: 'latency',
    mode: prepared.mode,
    url: target.url,
    n,
    warmup,
    wallSeconds: round1((performance.now() - t0) / 1000),
    totalMs: total.summary(),
    socketOpenMs: open.summary(),
    challengeMs: challenge.summary(),
    challengeToHelloMs: toHello.summary(),
    gatewayMainThread: perConnectSwitches(switches0, target.pid, total.length),
    errors: errors.toJSON(),
    cpu: cpu(),
  };
}

// ------------------------------------------------------------------------------------------
// Throughput
// ------------------------------------------------------------------------------------------

export interface ThroughputResult {
  test: 'throughput';
  mode: Mode;
  url: string;
  concurrency: number;
  durationSeconds: number;
  /** hello-oks received inside the measurement window. */
  completedHelloOk: number;
  connectsPerSecond: number;
  /** hello-oks per one-second bucket of the window. */
  perSecond: number[];
  /** Latency of every completed connect (including the last ones finishing after the window). */
  latencyMs: Summary | null;
  errors: Record<string, number>;
  wallSeconds: number;
  gatewayCpuCoresUsed: number | null;
  cpu: CpuUse;
  gatewayRssAfterMiB: number | null;
}

/** `concurrency` clients loop connect → hello-ok → close for `durationSeconds`, then stop. */
export async function throughput(
  target: Target,
  prepared: Prepared,
  concurrency: number,
  durationSeconds: number,
  profile: LoadProfile,
): Promise<ThroughputResult> {
  const buckets = new Uint32Array(Math.ceil(durationSeconds));
  const lat = new Samples(Math.max(1024, concurrency * durationSeconds * 100));
  const errors = new Counter();
  let inWindow = 0;
  const cpuEnd = cpuWindow(target.pid);
  const start = performance.now();
  const end = start + durationSeconds * 1000;

  const worker = async (slot: number) => {
    const spec = prepared.specs[slot % prepared.specs.length] as ConnectSpec;
    const marks = new Float64Array(MARK_COUNT);
    while (performance.now() < end) {
      const err = await connectOnce(spec, { timeoutMs: profile.timeoutMs, marks });
      if (err !== null) {
        errors.add(err);
        await sleep(10); // no hot spin on a refusing gateway
        continue;
      }
      const helloAt = marks[MARK.hello] as number;
      lat.push(helloAt - (marks[MARK.start] as number));
      if (helloAt <= end) {
        inWindow++;
        const b = Math.floor((helloAt - start) / 1000);
        if (b < buckets.length) buckets[b] = (buckets[b] as number) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, (_, i) => worker(i)));
  const wall = (performance.now() - start) / 1000;
  const window = (end - start) / 1000;
  const cpu = cpuEnd();
  return {
    test: 'throughput',
    mode: prepared.mode,
    url: target.url,
    concurrency,
    durationSeconds,
    completedHelloOk: inWindow,
    connectsPerSecond: round1(inWindow / window),
    perSecond: [...buckets],
    latencyMs: lat.summary(),
    errors: errors.toJSON(),
    wallSeconds: round1(wall),
    gatewayCpuCoresUsed: cpu.gatewayCores,
    cpu,
    gatewayRssAfterMiB: target.pid !== null ? readRssMiB(target.pid) : null,
  };
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
