/**
 * Crash harness: a real gateway process under concurrent trust traffic (pairing approvals and
 * rejections, scope upgrades, setup-code races, token rotation and revocation, webhook sends,
 * cron runs), SIGKILLed at seeded random moments and restarted, with the invariants checked
 * after every restart against what the clients were told (the ledger), the store read directly
 * (src/store adapters) and the CLI (`clawgate audit --verify`). docs/reliability.md describes it.
 *
 * The seed fixes the schedule (which action each worker picks next, how long the gateway lives
 * before each kill, what the webhook target answers); the interleaving of real processes is not
 * reproducible, so a violation report carries the ledger facts it was derived from.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Role } from '@clawgate/protocol/frames';
import { decodeSetupCode } from '@clawgate/protocol/setup-code';
import pg from 'pg';
import {
  ConnectError,
  connectGateway,
  type DeviceIdentity,
  type GatewayConnection,
  GatewayRequestError,
  generateIdentity,
} from '../../src/client/connection.js';
import type { AuditEntry, Delivery, GrantRecord, SetupCodeRecord, Store } from '../../src/core/store.js';
import { DELIVERY_LEASE_MS } from '../../src/store/postgres/store.js';
import { verifyAuditChain } from '../../src/store/shared.js';
import { SqliteStore } from '../../src/store/sqlite/store.js';
import { connectOwner, GatewayProcess, sharedToken } from './gateway-process.js';
import { freePort } from './net.js';
import { type Received, WebhookTarget } from './webhook.js';

const execFileAsync = promisify(execFile);

// --- seeded randomness ------------------------------------------------------------------------

/** mulberry32: small, fast, good enough to pick actions; the same seed gives the same stream. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// --- options and report -----------------------------------------------------------------------

export interface ChaosOptions {
  seed: number;
  /** SIGKILLs before the final drain. */
  kills: number;
  /** Concurrent device workers (each drives one device's lifecycle, serialised per device). */
  devices?: number;
  /** How long the gateway lives before each kill: uniform in [min, max] milliseconds. */
  liveMs?: [number, number];
  store?: { kind: 'sqlite' } | { kind: 'postgres'; url: string };
  /** Run `clawgate audit --verify` through the CLI after every Nth restart (1 = every one). */
  cliEvery?: number;
  /** Dead tokens probed after each restart (all of them at the end). */
  probesPerRestart?: number;
  /** PostgreSQL: wait for leases of killed instances to end (DELIVERY_LEASE_MS) instead of checking them. */
  waitForLeases?: boolean;
  /**
   * Kinds of traffic (ledger counts) the run must have done: after the last kill the traffic goes
   * on, for up to a minute, until each has happened once, so a slow machine (fewer operations
   * between kills) makes the run longer instead of vacuous.
   */
  expect?: readonly string[];
  /** Progress lines (long mode); tests leave it out. */
  log?: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  kills: number;
  restarts: number;
  violations: string[];
  /** Unexpected but not invariant-breaking outcomes (kept for the report, never hidden). */
  anomalies: string[];
  counts: Record<string, number>;
  stateDir: string;
}

// --- ledger: what the clients were told --------------------------------------------------------

interface AckedApproval {
  requestId: string;
  deviceId: string;
  role: Role;
  scopes: string[];
}

interface DeviceFacts {
  /** Scopes the harness tried to approve for it (request scopes, setup-code profiles): the only ones it may hold. */
  allowed: Set<string>;
  /** Trust-changing operations on this device after which its grant is not known exactly. */
  uncertain: boolean;
}

interface DeadToken {
  deviceId: string;
  identity: DeviceIdentity;
  token: string;
  why: string;
}

export class Ledger {
  readonly approvals: AckedApproval[] = [];
  readonly rejections: Array<{ requestId: string; deviceId: string }> = [];
  readonly devices = new Map<string, DeviceFacts>();
  readonly deadTokens: DeadToken[] = [];
  /** setupId → device ids that got hello-ok with its bootstrap token. */
  readonly redeemedBy = new Map<string, Set<string>>();
  /** Setup codes whose revocation returned ok before anyone tried them. */
  readonly revokedSetups = new Set<string>();
  readonly setupScopes = new Map<string, string[]>();
  /** `send` calls that returned ok: each must arrive at least once. */
  readonly sends: Array<{ deliveryId: string; idempotencyKey: string; content: string }> = [];
  /** Manual cron runs that returned ok. */
  readonly cronRuns: Array<{ runId: string; deliveryId?: string }> = [];
  readonly counts: Record<string, number> = {};

  facts(deviceId: string): DeviceFacts {
    let f = this.devices.get(deviceId);
    if (!f) {
      f = { allowed: new Set(), uncertain: false };
      this.devices.set(deviceId, f);
    }
    return f;
  }

  count(what: string): void {
    this.counts[what] = (this.counts[what] ?? 0) + 1;
  }
}

// --- the gateway's up/down gate ---------------------------------------------------------------

class Gate {
  epoch = 0;
  private isUp = false;
  private opened: Promise<void> = new Promise(() => {});
  private release: () => void = () => {};
  stopping = false;

  constructor() {
    this.close();
  }
  get up(): boolean {
    return this.isUp;
  }
  open(): void {
    this.isUp = true;
    this.release();
  }
  close(): void {
    this.isUp = false;
    this.epoch++;
    this.opened = new Promise((r) => (this.release = r));
  }
  wait(): Promise<void> {
    return this.opened;
  }
}

/** An error that happened because the gateway was killed under the operation (its outcome is unknown). */
class Interrupted extends Error {}

// --- the run ----------------------------------------------------------------------------------

const READ = 'operator.read';
const WRITE = 'operator.write';
const UPGRADE_SCOPES = ['operator.admin', 'operator.pairing', 'operator.approvals', 'operator.talk'];
const CHANNEL = 'chaos';

export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const rnd = prng(opts.seed);
  const log = opts.log ?? (() => {});
  const ledger = new Ledger();
  const violations: string[] = [];
  const anomalies: string[] = [];
  const violate = (what: string) => {
    violations.push(what);
    log(`VIOLATION ${what}`);
  };
  const anomaly = (what: string) => {
    if (anomalies.length < 200) anomalies.push(what);
  };
  const gate = new Gate();
  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-chaos-'));
  const port = await freePort();
  const target = await WebhookTarget.start();
  const configPath = join(stateDir, 'chaos-config.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      gateway: {
        // Every grant in this run comes from an approval the harness made (or a setup code).
        autoApproveLocal: false,
        // Probing dead tokens is a stream of deliberate failures from loopback.
        rateLimit: { maxFailures: 1_000_000_000 },
      },
      automations: {
        channels: { webhooks: [{ name: CHANNEL, url: target.url }] },
        // Retries stay fast and never give up: a dead letter would hide a lost delivery.
        webhook: { maxAttempts: 1_000_000, baseBackoffMs: 20, maxBackoffMs: 300, timeoutMs: 2_000 },
      },
    }),
  );
  const storeArgs = opts.store?.kind === 'postgres' ? ['--store', 'postgres'] : [];
  const storeEnv: Record<string, string> = opts.store?.kind === 'postgres' ? { CLAWGATE_POSTGRES_URL: opts.store.url } : {};
  const openStore = async (): Promise<Store> => {
    if (opts.store?.kind === 'postgres') {
      const { PostgresStore } = await import('../../src/store/postgres/store.js');
      return PostgresStore.open(opts.store.url);
    }
    return new SqliteStore(join(stateDir, 'clawgate.sqlite'));
  };

  let gw: GatewayProcess | null = null;
  let restarts = 0;
  const startGateway = async (): Promise<void> => {
    try {
      gw = await GatewayProcess.start({ stateDir, configPath, port, args: storeArgs, env: storeEnv });
    } catch (err) {
      violate(`the gateway did not start cleanly after ${restarts} restarts: ${(err as Error).message}`);
      throw err;
    }
    restarts++;
  };

  // One owner session shared by every worker, reopened after each restart.
  let ownerConn: Promise<GatewayConnection> | null = null;
  let ownerEpoch = -1;
  const owner = (): Promise<GatewayConnection> => {
    if (!ownerConn || ownerEpoch !== gate.epoch) {
      ownerEpoch = gate.epoch;
      ownerConn = connectOwner(`ws://127.0.0.1:${port}`, stateDir);
      ownerConn.catch(() => {});
    }
    return ownerConn;
  };
  /** Run `fn` while the gateway is up; an error after a kill becomes Interrupted. */
  const guarded = async <T>(fn: () => Promise<T>): Promise<T> => {
    await gate.wait();
    const epoch = gate.epoch;
    try {
      return await fn();
    } catch (err) {
      if (gate.epoch !== epoch || !gate.up) throw new Interrupted(String((err as Error)?.message ?? err));
      throw err;
    }
  };
  const ownerCall = <T>(method: string, params: unknown): Promise<T> => guarded(async () => (await (await owner()).request(method, params, 20_000)) as T);
  const url = `ws://127.0.0.1:${port}`;

  await startGateway();
  const shared = sharedToken(stateDir);
  gate.open();

  // The cron job: an every-second send to the channel, running across every kill.
  const job = await ownerCall<{ job: { jobId: string } }>('cron.add', {
    name: 'chaos-tick',
    schedule: { kind: 'every', everyMs: 1000 },
    action: { kind: 'send', channel: CHANNEL, content: 'tick' },
  });

  let sendSeq = 0;
  let lastKillAtMs = 0;

  // --- device worker: one device at a time, its whole life serialised ---------------------------
  const deviceWorker = async (w: number): Promise<void> => {
    const r = prng(opts.seed * 1000 + w);
    let identity = generateIdentity();
    let granted = false;
    let grantScopes: string[] = [];
    let tokens: string[] = [];
    const facts = () => ledger.facts(identity.deviceId);
    const fresh = () => {
      identity = generateIdentity();
      granted = false;
      grantScopes = [];
      tokens = [];
    };
    /** After an interrupted trust change the device finds out where it stands by connecting. */
    const resync = async (): Promise<void> => {
      facts().uncertain = true;
      // Tokens held across an uncertain change are neither known dead nor known live.
      tokens = [];
      try {
        const c = await guarded(() => connectGateway({ url, identity, auth: { token: shared }, scopes: [READ], client: { id: 'test', mode: 'test' } }));
        if (c.hello.auth.deviceToken) tokens = [c.hello.auth.deviceToken];
        granted = true;
        grantScopes = [...c.hello.auth.scopes];
        await c.close();
      } catch (err) {
        if (err instanceof ConnectError && err.detailCode === 'PAIRING_REQUIRED') granted = false;
        else throw err;
      }
    };
    const pendingOf = async (): Promise<Array<{ requestId: string; scopes: string[]; role: Role }>> => {
      const list = await ownerCall<{ pending: Array<{ requestId: string; deviceId: string; scopes: string[]; role: Role }> }>('device.pair.list', {});
      return list.pending.filter((p) => p.deviceId === identity.deviceId);
    };
    /** The owner approves or rejects every pending request of this device. */
    const decide = async (approveP: number): Promise<void> => {
      for (const p of await pendingOf()) {
        if (r() < approveP) {
          for (const s of p.scopes) facts().allowed.add(s);
          const res = await ownerCall<{ approved: Array<{ requestId: string; role: Role; scopes: string[] }> }>('device.pair.approve', {
            requestId: p.requestId,
          });
          for (const a of res.approved) ledger.approvals.push({ requestId: a.requestId, deviceId: identity.deviceId, role: a.role, scopes: a.scopes });
          const mine = res.approved.find((a) => a.role === 'operator');
          if (mine) {
            granted = true;
            grantScopes = mine.scopes;
          }
          ledger.count('approve');
        } else {
          await ownerCall('device.pair.reject', { requestId: p.requestId });
          ledger.rejections.push({ requestId: p.requestId, deviceId: identity.deviceId });
          ledger.count('reject');
        }
      }
    };
    /** A session of this device with its token (or the shared token when it has none). */
    const session = async (scopes: string[]): Promise<GatewayConnection> => {
      const token = tokens[tokens.length - 1];
      const auth = token ? { deviceToken: token } : { token: shared };
      try {
        const c = await guarded(() => connectGateway({ url, identity, auth, scopes, client: { id: 'test', mode: 'test' } }));
        if (c.hello.auth.deviceToken && c.hello.auth.deviceToken !== token) tokens.push(c.hello.auth.deviceToken);
        return c;
      } catch (err) {
        if (token && err instanceof ConnectError && !facts().uncertain) {
          violate(`device ${identity.deviceId}: its live token was refused (${err.detailCode ?? err.message}); the ledger says nothing retired it`);
        }
        throw err;
      }
    };

    while (!gate.stopping) {
      try {
        const roll = r();
        if (!granted) {
          if (roll < 0.05 && tokens.length === 0) {
            fresh();
            continue;
          }
          // Ask for pairing; the owner decides.
          const scopes = r() < 0.5 ? [READ] : [READ, WRITE];
          try {
            const c = await guarded(() => connectGateway({ url, identity, auth: { token: shared }, scopes, client: { id: 'test', mode: 'test' } }));
            // A grant exists (an interrupted approval committed after all).
            if (c.hello.auth.deviceToken) tokens.push(c.hello.auth.deviceToken);
            granted = true;
            grantScopes = [...c.hello.auth.scopes];
            await c.close();
            continue;
          } catch (err) {
            if (!(err instanceof ConnectError && err.detailCode === 'PAIRING_REQUIRED')) throw err;
          }
          ledger.count('pair-request');
          await decide(0.75);
        } else if (roll < 0.35) {
          // Use the device: connect with its token and send to the webhook channel.
          const c = await session([READ, ...(grantScopes.includes(WRITE) ? [WRITE] : [])]);
          try {
            if (grantScopes.includes(WRITE) && c.hello.auth.scopes.includes(WRITE)) {
              const content = `w${w}-${++sendSeq}`;
              const idem = r() < 0.5 ? `idem-${content}` : undefined;
              const res = (await guarded(() => c.request('send', { channel: CHANNEL, content, ...(idem ? { idempotencyKey: idem } : {}) }, 20_000))) as {
                deliveryId: string;
                idempotencyKey: string;
              };
              ledger.sends.push({ deliveryId: res.deliveryId, idempotencyKey: res.idempotencyKey, content });
              ledger.count('send');
            } else ledger.count('session');
          } finally {
            await c.close().catch(() => {});
          }
        } else if (roll < 0.55) {
          // Scope upgrade: ask for more than the grant; the owner approves or rejects it.
          const extra = UPGRADE_SCOPES[Math.floor(r() * UPGRADE_SCOPES.length)] as string;
          const c = await session([...grantScopes, extra]);
          await c.close().catch(() => {});
          ledger.count('upgrade-request');
          await decide(0.6);
        } else if (roll < 0.7) {
          const res = await ownerCall<{ tokenDelivery: string }>('device.token.rotate', { deviceId: identity.deviceId, role: 'operator' });
          for (const t of tokens) ledger.deadTokens.push({ deviceId: identity.deviceId, identity, token: t, why: `rotated (${res.tokenDelivery})` });
          tokens = [];
          ledger.count('rotate');
        } else if (roll < 0.85) {
          // Half the time the device connects with its token while the owner revokes it: once the
          // revocation returned ok, no session opened with that token may stay usable.
          const token = tokens[tokens.length - 1];
          const racing =
            token && r() < 0.5
              ? guarded(() => connectGateway({ url, identity, auth: { deviceToken: token }, scopes: [READ], client: { id: 'test', mode: 'test' } }))
              : null;
          racing?.catch(() => {});
          // A connect takes two round trips (challenge, connect): a short head start lands the revocation inside it.
          if (racing) await new Promise((res) => setTimeout(res, Math.floor(r() * 12)));
          await ownerCall('device.token.revoke', { deviceId: identity.deviceId, role: 'operator' });
          const raced = await racing?.catch(() => null);
          if (raced) {
            const closed = await Promise.race([raced.closed.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), 5_000))]);
            if (!closed) {
              const still = await raced.request('health', {}, 5_000).then(
                () => true,
                () => false,
              );
              if (still)
                violate(
                  `device ${identity.deviceId}: a session opened with a token racing its revocation is still usable 5 s after the revocation returned ok`,
                );
              await raced.close().catch(() => {});
            }
            ledger.count('revoke-race-session');
          }
          for (const t of tokens) ledger.deadTokens.push({ deviceId: identity.deviceId, identity, token: t, why: 'revoked' });
          tokens = [];
          granted = false;
          grantScopes = [];
          ledger.count('revoke');
        } else if (roll < 0.9) {
          await ownerCall('device.pair.remove', { deviceId: identity.deviceId });
          for (const t of tokens) ledger.deadTokens.push({ deviceId: identity.deviceId, identity, token: t, why: 'device removed' });
          ledger.count('remove');
          fresh();
        } else {
          // Reconnect with the token only (a plain liveness check of the token).
          const c = await session([READ]);
          await c.close().catch(() => {});
          ledger.count('reconnect');
        }
      } catch (err) {
        if (err instanceof Interrupted) {
          ledger.count('interrupted');
          await gate.wait();
          try {
            await resync();
          } catch (e2) {
            if (!(e2 instanceof Interrupted)) anomaly(`worker ${w} resync: ${(e2 as Error).message}`);
          }
          continue;
        }
        if (gate.stopping) break;
        const code = err instanceof GatewayRequestError || err instanceof ConnectError ? err.detailCode : undefined;
        anomaly(`worker ${w} (${identity.deviceId.slice(0, 12)}): ${code ?? ''} ${(err as Error).message}`);
        ledger.count(`error:${code ?? 'other'}`);
        // Find out where we stand rather than trusting the local belief.
        try {
          await resync();
        } catch {
          // Next round.
        }
      }
      await new Promise((res) => setTimeout(res, Math.floor(r() * 20)));
    }
  };

  // --- setup-code racer: mint a code, let several keys race to redeem it -------------------------
  const setupWorker = async (): Promise<void> => {
    const r = prng(opts.seed * 7919 + 1);
    while (!gate.stopping) {
      try {
        // Both profiles with an operator role: a two-role redemption must commit both grants or neither.
        const minted = await ownerCall<{ setupId: string; setupCode: string; scopes: string[] }>('device.pair.setupCode', {
          profile: r() < 0.3 ? 'operator+node' : 'operator',
          scopes: r() < 0.5 ? [READ] : [READ, WRITE],
          ttlMs: 600_000,
        });
        ledger.setupScopes.set(minted.setupId, minted.scopes);
        const decoded = decodeSetupCode(minted.setupCode);
        if (!decoded.ok) throw new Error(`minted setup code does not decode: ${decoded.problem}`);
        const bootstrapToken = decoded.payload.bootstrapToken;
        if (r() < 0.15) {
          await ownerCall('device.pair.setupRevoke', { setupId: minted.setupId });
          ledger.revokedSetups.add(minted.setupId);
          ledger.count('setup-revoke');
        }
        const racers = Array.from({ length: 2 + Math.floor(r() * 3) }, () => generateIdentity());
        for (const id of racers) for (const s of minted.scopes) ledger.facts(id.deviceId).allowed.add(s);
        const winners = ledger.redeemedBy.get(minted.setupId) ?? new Set<string>();
        ledger.redeemedBy.set(minted.setupId, winners);
        await Promise.all(
          racers.map(async (id) => {
            try {
              const c = await guarded(() =>
                connectGateway({ url, identity: id, auth: { bootstrapToken }, scopes: [READ], client: { id: 'test', mode: 'test' } }),
              );
              winners.add(id.deviceId);
              await c.close().catch(() => {});
            } catch (err) {
              if (err instanceof Interrupted) ledger.facts(id.deviceId).uncertain = true;
              else if (!(err instanceof ConnectError)) throw err;
            }
          }),
        );
        ledger.count('setup-race');
      } catch (err) {
        if (err instanceof Interrupted) {
          await gate.wait();
          continue;
        }
        if (gate.stopping) break;
        anomaly(`setup worker: ${(err as Error).message}`);
      }
      await new Promise((res) => setTimeout(res, 20 + Math.floor(r() * 50)));
    }
  };

  // --- automation worker: owner sends and manual cron runs ------------------------------------
  const automationWorker = async (): Promise<void> => {
    const r = prng(opts.seed * 104729 + 2);
    let retryKey: { key: string; content: string } | null = null;
    while (!gate.stopping) {
      try {
        if (r() < 0.25) {
          const res = await ownerCall<{ run: { runId: string; status: string; result?: { deliveryId?: string } } }>('cron.run', { jobId: job.job.jobId });
          ledger.cronRuns.push({ runId: res.run.runId, ...(res.run.result?.deliveryId ? { deliveryId: res.run.result.deliveryId } : {}) });
          ledger.count('cron-run');
        } else {
          // A send interrupted by a kill is retried with the same key, as a careful client would.
          const pick: { key: string; content: string } = retryKey ?? { key: `owner-${++sendSeq}`, content: `o-${sendSeq}` };
          retryKey = pick;
          const res = await ownerCall<{ deliveryId: string; idempotencyKey: string; duplicate: boolean }>('send', {
            channel: CHANNEL,
            content: pick.content,
            idempotencyKey: pick.key,
          });
          retryKey = null;
          ledger.sends.push({ deliveryId: res.deliveryId, idempotencyKey: res.idempotencyKey, content: pick.content });
          ledger.count(res.duplicate ? 'send-retried-duplicate' : 'send');
        }
      } catch (err) {
        if (err instanceof Interrupted) {
          await gate.wait();
          continue;
        }
        if (gate.stopping) break;
        anomaly(`automation worker: ${(err as Error).message}`);
      }
      await new Promise((res) => setTimeout(res, 10 + Math.floor(r() * 60)));
    }
  };

  const nDevices = opts.devices ?? 6;
  const workers = [...Array.from({ length: nDevices }, (_, i) => deviceWorker(i)), setupWorker(), automationWorker()];

  // --- checks -------------------------------------------------------------------------------
  const checkStore = async (final: boolean, parked = new Set<string>()): Promise<void> => {
    const store = await openStore();
    try {
      await checkInvariants(store, ledger, target.received, { final, violate, jobId: job.job.jobId, parked });
    } finally {
      await store.close();
    }
  };
  const checkCli = async (): Promise<void> => {
    // --verify checks the whole chain; --limit only trims what is printed (thousands of entries overflow a pipe buffer).
    // --verify reads the store itself (and the anchor in the state dir), so it is told which store.
    const res = await runCli(['audit', '--verify', '--json', '--limit', '1', ...storeArgs], stateDir, storeEnv);
    if (res.code !== 0) {
      violate(`clawgate audit --verify exited ${res.code}: ${res.stderr.slice(0, 500)}`);
      return;
    }
    const out = JSON.parse(res.stdout) as { verified: boolean; brokenAtSeq: number | null };
    if (!out.verified) violate(`clawgate audit --verify: chain broken at entry ${out.brokenAtSeq}`);
    // What the owner sees through the CLI is what the store holds (the traffic is paused).
    const list = await runCli(['devices', 'list', '--json'], stateDir);
    if (list.code !== 0) {
      violate(`clawgate devices list exited ${list.code}: ${list.stderr.slice(0, 500)}`);
      return;
    }
    const seen = JSON.parse(list.stdout) as { paired: Array<{ deviceId: string; grants: Array<{ role: Role; scopes: string[] }> }> };
    const viaCli = new Map<string, string>();
    for (const d of seen.paired) for (const g of d.grants) viaCli.set(`${d.deviceId}/${g.role}`, [...g.scopes].sort().join(' '));
    const store = await openStore();
    try {
      const direct = new Map((await store.listGrants()).map((g) => [`${g.deviceId}/${g.role}`, [...g.scopes].sort().join(' ')]));
      for (const [key, scopes] of direct)
        if (viaCli.get(key) !== scopes) violate(`grant ${key}: the store holds [${scopes}], clawgate devices list shows [${viaCli.get(key) ?? 'nothing'}]`);
      for (const key of viaCli.keys()) if (!direct.has(key)) violate(`clawgate devices list shows grant ${key}, which the store does not hold`);
    } finally {
      await store.close();
    }
  };
  const probeDeadTokens = async (n: number): Promise<void> => {
    const sample =
      n >= ledger.deadTokens.length
        ? ledger.deadTokens
        : Array.from({ length: n }, () => ledger.deadTokens[Math.floor(rnd() * ledger.deadTokens.length)] as DeadToken);
    for (const d of sample) {
      try {
        const c = await connectGateway({ url, identity: d.identity, auth: { deviceToken: d.token }, scopes: [READ], client: { id: 'test', mode: 'test' } });
        await c.close();
        violate(`device ${d.deviceId}: a token was accepted after the client was told it was ${d.why}`);
      } catch (err) {
        if (!(err instanceof ConnectError)) throw err;
        ledger.count('probe-refused');
      }
    }
  };
  // A crash-recovered start, and the life after it, log no error (a thrown handler, a failed delivery pass, a store error).
  const checkErrors = (): void => {
    for (const e of (gw as GatewayProcess | null)?.errorLines() ?? []) violate(`gateway (restart ${restarts}) logged an error: ${e.line.slice(0, 500)}`);
  };

  try {
    for (let k = 0; k < opts.kills; k++) {
      const [lo, hi] = opts.liveMs ?? [150, 900];
      await new Promise((res) => setTimeout(res, lo + Math.floor(rnd() * (hi - lo))));
      target.answer = rnd() < 0.2 ? 500 : rnd() < 0.1 ? 'drop' : 204;
      gate.close();
      checkErrors();
      lastKillAtMs = Date.now();
      await (gw as GatewayProcess | null)?.kill();
      await startGateway();
      await checkStore(false);
      if ((k + 1) % (opts.cliEvery ?? 1) === 0) await checkCli();
      await probeDeadTokens(opts.probesPerRestart ?? 4);
      gate.open();
      log(`kill ${k + 1}/${opts.kills}: violations ${violations.length}, ${JSON.stringify(ledger.counts)}`);
    }
    const expectBy = Date.now() + 60_000;
    while ((opts.expect ?? []).some((what) => !((ledger.counts[what] ?? 0) > 0)) && Date.now() < expectBy) {
      await new Promise((res) => setTimeout(res, 50));
    }
    // Final: stop the traffic, let the outbox drain, check everything, stop cleanly.
    gate.stopping = true;
    target.answer = 204;
    await Promise.all(workers);
    const store = await openStore();
    let parked = new Set<string>();
    try {
      // PostgreSQL leases a delivery to the worker attempting it; one leased by a killed instance
      // is attempted again when the lease ends (DELIVERY_LEASE_MS), not before. Unless asked to
      // wait that long, such a delivery counts as safe when its lease was taken before the last kill.
      const settled = async (): Promise<boolean> => {
        const pending = await store.listDeliveries({ status: 'pending', limit: 1_000_000 });
        if (pending.length === 0) return true;
        if (opts.store?.kind !== 'postgres' || opts.waitForLeases) return false;
        parked = await parkedOnDeadLeases(opts.store.url, lastKillAtMs);
        return pending.every((d) => parked.has(d.deliveryId));
      };
      const drainMs = opts.store?.kind === 'postgres' && opts.waitForLeases ? DELIVERY_LEASE_MS + 60_000 : 60_000;
      const deadline = Date.now() + drainMs;
      while (!(await settled())) {
        if (Date.now() > deadline) {
          violate(`webhook deliveries still pending ${drainMs / 1000} s after the last restart`);
          break;
        }
        await new Promise((res) => setTimeout(res, 50));
      }
      // Cron keeps running: take the job away so nothing new is queued while we compare.
      await ownerCall('cron.remove', { jobId: job.job.jobId });
      await new Promise((res) => setTimeout(res, 200));
      const again = Date.now() + 30_000;
      while (!(await settled()) && Date.now() < again) await new Promise((res) => setTimeout(res, 50));
      if (parked.size > 0) ledger.counts['parked-on-dead-lease'] = parked.size;
    } finally {
      await store.close();
    }
    await checkStore(true, parked);
    await checkCli();
    await probeDeadTokens(Number.POSITIVE_INFINITY);
    checkErrors();
    const ownerFinal = await (ownerConn as Promise<GatewayConnection> | null)?.catch(() => null);
    await ownerFinal?.close().catch(() => {});
    const code = await (gw as GatewayProcess | null)?.stop();
    if (code !== 0) violate(`the gateway did not stop cleanly on SIGTERM (exit ${code})`);
  } finally {
    gate.stopping = true;
    gate.open();
    await (gw as GatewayProcess | null)?.kill();
    await target.close();
  }
  return { seed: opts.seed, kills: opts.kills, restarts, violations, anomalies, counts: ledger.counts, stateDir };
}

/** Pending deliveries whose lease was taken by an instance killed at or before `lastKillAtMs`. */
async function parkedOnDeadLeases(url: string, lastKillAtMs: number): Promise<Set<string>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const r = await client.query<{ delivery_id: string; claimed_until_ms: string | null }>(
      "SELECT delivery_id, claimed_until_ms FROM deliveries WHERE status = 'pending'",
    );
    const now = Date.now();
    return new Set(
      r.rows
        .filter(
          (row) => row.claimed_until_ms !== null && Number(row.claimed_until_ms) > now && Number(row.claimed_until_ms) <= lastKillAtMs + DELIVERY_LEASE_MS,
        )
        .map((row) => row.delivery_id),
    );
  } finally {
    await client.end();
  }
}

/** The CLI with the state dir's owner credential; a large output buffer (devices list grows with the run). */
async function runCli(args: string[], stateDir: string, env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileAsync(process.execPath, [join(process.cwd(), 'bin', 'clawgate.js'), ...args], {
      env: { ...process.env, CLAWGATE_STATE_DIR: stateDir, ...env },
      maxBuffer: 256 * 1024 * 1024,
    });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

// --- invariants --------------------------------------------------------------------------------

type GrantKey = `${string}/${Role}`;

/** The grants the audit log says exist: every grant change is audited with what it set. */
export function grantsFromAudit(entries: readonly AuditEntry[]): Map<GrantKey, string[]> {
  const grants = new Map<GrantKey, string[]>();
  for (const e of entries) {
    const d = (e.data ?? {}) as { role?: Role; roles?: Role[]; scopes?: string[] };
    const subject = e.subject ?? '';
    switch (e.action) {
      case 'pairing.approved':
        grants.set(`${subject}/${d.role as Role}`, [...(d.scopes ?? [])].sort());
        break;
      case 'setup.redeemed':
        for (const role of d.roles ?? []) {
          const key: GrantKey = `${subject}/${role}`;
          const add = role === 'operator' ? (d.scopes ?? []) : [];
          grants.set(key, [...new Set([...(grants.get(key) ?? []), ...add])].sort());
        }
        break;
      case 'token.rotated':
        if (d.scopes && grants.has(`${subject}/${d.role as Role}`)) grants.set(`${subject}/${d.role as Role}`, [...d.scopes].sort());
        break;
      case 'token.revoked':
        grants.delete(`${subject}/${d.role as Role}`);
        break;
      case 'node.removed':
        grants.delete(`${subject}/node`);
        break;
      case 'device.removed':
        grants.delete(`${subject}/operator`);
        grants.delete(`${subject}/node`);
        break;
    }
  }
  return grants;
}

export interface CheckContext {
  final: boolean;
  /** Deliveries leased by a killed PostgreSQL instance: attempted again when the lease ends. */
  parked?: ReadonlySet<string>;
  violate: (what: string) => void;
  jobId: string;
}

export async function checkInvariants(store: Store, ledger: Ledger, received: readonly Received[], ctx: CheckContext): Promise<void> {
  const { violate } = ctx;
  const audit = await store.listAudit({ afterSeq: 0, limit: 10_000_000 });
  const broken = verifyAuditChain(audit);
  if (broken !== null) violate(`audit chain (store) broken at entry ${broken}`);

  // 1. The grants in the store are exactly the ones the audit log accounts for.
  const grants: GrantRecord[] = await store.listGrants();
  const fromAudit = grantsFromAudit(audit);
  const inStore = new Map<GrantKey, string[]>(grants.map((g) => [`${g.deviceId}/${g.role}` as GrantKey, [...g.scopes].sort()]));
  for (const [key, scopes] of inStore) {
    const audited = fromAudit.get(key);
    if (!audited) violate(`grant ${key} ${JSON.stringify(scopes)} exists without an audit entry that created it`);
    else if (audited.join(' ') !== scopes.join(' ')) violate(`grant ${key} holds ${JSON.stringify(scopes)}, the audit log says ${JSON.stringify(audited)}`);
  }
  for (const [key, scopes] of fromAudit) {
    if (!inStore.has(key)) violate(`the audit log records grant ${key} ${JSON.stringify(scopes)} but the store has none`);
  }

  // 2. Every approval the owner was told succeeded has exactly one audit entry; its grant is there unless a later change may have dropped it.
  const approvedEntries = new Map<string, number>();
  for (const e of audit) {
    const rid = (e.data as { requestId?: string } | undefined)?.requestId;
    if (e.action === 'pairing.approved' && rid) approvedEntries.set(rid, (approvedEntries.get(rid) ?? 0) + 1);
  }
  const laterChange = new Map<string, number>();
  for (const e of audit) if (e.subject && e.action !== 'pairing.requested' && e.action !== 'token.issued') laterChange.set(e.subject, e.seq);
  for (const a of ledger.approvals) {
    const n = approvedEntries.get(a.requestId) ?? 0;
    if (n !== 1) violate(`approval ${a.requestId} of ${a.deviceId} returned ok but has ${n} audit entries`);
    const entry = audit.find((e) => e.action === 'pairing.approved' && (e.data as { requestId?: string } | undefined)?.requestId === a.requestId);
    if (entry && laterChange.get(a.deviceId) === entry.seq) {
      const g = inStore.get(`${a.deviceId}/${a.role}`);
      if (!g) violate(`approval ${a.requestId} of ${a.deviceId} returned ok, nothing changed the device since, and it has no ${a.role} grant`);
      else if (!a.scopes.every((s) => g.includes(s))) violate(`approval ${a.requestId}: grant ${JSON.stringify(g)} lacks approved ${JSON.stringify(a.scopes)}`);
    }
  }
  // Rejected requests are gone and were not approved.
  for (const r of ledger.rejections) {
    if ((approvedEntries.get(r.requestId) ?? 0) > 0) violate(`request ${r.requestId} was rejected (ok) but also approved`);
    if (await store.getPairingRequest(r.requestId)) violate(`request ${r.requestId} was rejected (ok) but is still pending`);
  }

  // 3. No device holds a scope nobody approved.
  for (const g of grants) {
    if (g.role !== 'operator') continue;
    const allowed = ledger.devices.get(g.deviceId)?.allowed;
    for (const s of g.scopes) {
      if (!allowed?.has(s)) violate(`device ${g.deviceId} holds ${s}, which the owner never approved for it`);
    }
  }

  // 4. A setup code is redeemed by at most one key, the one the client saw succeed.
  const codes: SetupCodeRecord[] = await store.listSetupCodes();
  const redeemAudits = new Map<string, Set<string>>();
  for (const e of audit) {
    if (e.action !== 'setup.redeemed') continue;
    const id = (e.data as { setupId?: string }).setupId ?? '';
    const set = redeemAudits.get(id) ?? new Set();
    set.add(e.subject ?? '');
    redeemAudits.set(id, set);
  }
  for (const [setupId, winners] of ledger.redeemedBy) {
    if (winners.size > 1) violate(`setup code ${setupId} let ${winners.size} different keys in: ${[...winners].join(', ')}`);
    if (ledger.revokedSetups.has(setupId) && winners.size > 0) violate(`setup code ${setupId} was revoked (ok) before use, yet ${[...winners][0]} redeemed it`);
    const code = codes.find((c) => c.setupId === setupId);
    for (const w of winners) {
      if (code?.deviceId !== w) violate(`setup code ${setupId}: the client ${w} got hello-ok, the store binds it to ${code?.deviceId ?? 'nobody'}`);
    }
  }
  for (const [setupId, subjects] of redeemAudits) {
    if (subjects.size > 1) violate(`setup code ${setupId} has first-redemption audit entries for ${subjects.size} keys`);
  }
  for (const c of codes) {
    const audited = redeemAudits.get(c.setupId);
    if (c.deviceId && !audited?.has(c.deviceId)) violate(`setup code ${c.setupId} is bound to ${c.deviceId} without a setup.redeemed audit entry`);
  }

  // 5. No acknowledged webhook send is lost; every arrival carries its delivery's idempotency key.
  const deliveries: Delivery[] = await store.listDeliveries({ limit: 10_000_000 });
  const byId = new Map(deliveries.map((d) => [d.deliveryId, d]));
  const byKey = new Map(deliveries.map((d) => [d.idempotencyKey, d]));
  const arrivedKeys = new Map<string, Received[]>();
  for (const rcv of received) {
    const key = String(rcv.headers['idempotency-key'] ?? '');
    const list = arrivedKeys.get(key) ?? [];
    list.push(rcv);
    arrivedKeys.set(key, list);
  }
  for (const s of ledger.sends) {
    const d = byId.get(s.deliveryId);
    if (!d) {
      violate(`send ${s.deliveryId} (${s.content}) returned ok but the outbox has no such delivery`);
      continue;
    }
    if (d.idempotencyKey !== s.idempotencyKey)
      violate(`delivery ${s.deliveryId}: key ${d.idempotencyKey} in the store, ${s.idempotencyKey} told to the client`);
    if (ctx.final && !ctx.parked?.has(d.deliveryId) && !arrivedKeys.has(d.idempotencyKey))
      violate(`delivery ${s.deliveryId} (${s.content}) never arrived at the webhook`);
  }
  for (const run of ledger.cronRuns) {
    if (run.deliveryId && !byId.has(run.deliveryId)) violate(`cron run ${run.runId} returned delivery ${run.deliveryId}, which the outbox does not have`);
  }
  for (const [key, list] of arrivedKeys) {
    const d = byKey.get(key);
    if (!d) {
      violate(`the webhook received a request with idempotency key ${JSON.stringify(key)} that matches no delivery`);
      continue;
    }
    for (const rcv of list) {
      if (JSON.stringify(rcv.body) !== JSON.stringify(d.body))
        violate(`delivery ${d.deliveryId}: body ${JSON.stringify(rcv.body)} arrived, ${JSON.stringify(d.body)} queued`);
    }
  }
  if (ctx.final) {
    for (const d of deliveries) {
      if (ctx.parked?.has(d.deliveryId)) continue;
      if (d.status !== 'delivered') violate(`delivery ${d.deliveryId} ended ${d.status} (${d.lastError ?? ''})`);
      else if (!arrivedKeys.has(d.idempotencyKey)) violate(`delivery ${d.deliveryId} is marked delivered but never arrived`);
    }
    const runs = await store.listCronRuns(ctx.jobId, 1_000_000);
    for (const run of runs) {
      const id = run.result?.deliveryId as string | undefined;
      if (run.status === 'ok' && id && !byId.has(id)) violate(`cron run ${run.runId} recorded delivery ${id}, which the outbox does not have`);
    }
  }
}
