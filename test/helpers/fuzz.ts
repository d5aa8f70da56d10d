/**
 * Protocol fuzzer: fast-check generates frames (malformed JSON, wrong types, huge and deeply
 * nested values, unicode, binary), connect params and method params (from the registered
 * methods' schemas) and sends them over real sockets to a spawned `clawgate gateway run` with a
 * real SQLite store. It checks that the process never dies, every refusal is a catalogued code
 * (packages/protocol/src/errors.ts) and never INTERNAL_ERROR, every request is answered or the socket is
 * closed with a documented close code, and the gateway's resident memory stays bounded.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CATALOGUE, CLOSE, type DetailCode, ERROR_CODES } from '@clawgate/protocol/errors';
import type { TSchema } from '@sinclair/typebox';
import fc from 'fast-check';
import { generateIdentity } from '../../src/client/connection.js';
import { ownerAuth, startTestGateway } from './gateway.js';
import { GatewayProcess, ownerCredential, sharedToken } from './gateway-process.js';
import { freePort } from './net.js';
import { deviceParams, type Frame, plainParams, RawClient } from './raw.js';
import { WebhookTarget } from './webhook.js';

export interface FuzzOptions {
  seed: number;
  /** Generated cases (each one socket: a frame sequence, a connect, or a session of calls). */
  frames: number;
  log?: (line: string) => void;
  /** Allowed RSS growth: final ≤ baseline × factor + slackBytes. */
  rssFactor?: number;
  rssSlackBytes?: number;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  failures: string[];
  answers: Record<string, number>;
  rss: { baselineBytes: number; finalBytes: number; peakBytes: number; boundBytes: number };
}

/** Methods whose valid calls reach outside the host or schedule work (webhook URLs, cron jobs): only their refusals are fuzzed. */
const OUTSIDE_EFFECTS = new Set(['channels.add', 'cron.add', 'cron.update']);

// --- JSON-schema (TypeBox) driven arbitraries -------------------------------------------------

type Schema = {
  type?: string;
  const?: unknown;
  anyOf?: Schema[];
  properties?: Record<string, Schema>;
  required?: string[];
  patternProperties?: Record<string, Schema>;
  items?: Schema;
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  pattern?: string;
};

const weirdString = fc.oneof(
  fc.string(),
  fc.string({ unit: 'grapheme' }),
  fc.string({ unit: 'binary' }),
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    '\uFFFF',
    '\uD800',
    '🦞'.repeat(100),
    '../../etc/passwd',
    '%00',
    '$' + '{x}',
    '<script>',
    'operator.admin',
    'a'.repeat(70_000),
  ),
);

const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  { depthSize: 'small' },
  fc.jsonValue(),
  weirdString,
  fc.constantFrom(null, true, false, 0, -1, 1e308, -0, Number.MAX_SAFE_INTEGER + 2),
  fc.array(fc.jsonValue(), { maxLength: 5 }),
);

/**
 * A value nested `depth` levels, written out as text when the frame is serialised (JSON.stringify
 * of a value this deep would overflow the fuzzer's own stack).
 */
export class Deep {
  constructor(
    readonly depth: number,
    readonly arrays: boolean,
  ) {}
  text(): string {
    return this.arrays ? `${'['.repeat(this.depth)}${']'.repeat(this.depth)}` : `${'{"a":'.repeat(this.depth)}1${'}'.repeat(this.depth)}`;
  }
}

const deepValue = fc.tuple(fc.integer({ min: 65, max: 20_000 }), fc.boolean()).map(([n, arrays]) => new Deep(n, arrays));

/** JSON text of a generated value; Deep markers become their text. Generated values are otherwise shallow. */
export function frameText(value: unknown): string {
  if (value instanceof Deep) return value.text();
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : frameText(v))).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const parts = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `${JSON.stringify(k)}:${frameText(v)}`);
    return `{${parts.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** Names that exist on the fuzzed gateway (its webhook channel, the default chat session): valid calls reach the handlers. */
const KNOWN_NAMES = ['fuzz', 'main'];

/** A value for `s`: usually valid, sometimes one field off (wrong type, missing, extra, out of range). */
export function fromSchema(s: Schema, depth = 0): fc.Arbitrary<unknown> {
  const valid = validFromSchema(s, depth);
  return fc.oneof({ weight: 4, arbitrary: valid }, { weight: 1, arbitrary: anyJson });
}

function validFromSchema(s: Schema, depth: number): fc.Arbitrary<unknown> {
  if (depth > 6) return anyJson;
  if (s.const !== undefined) return fc.constant(s.const);
  if (s.anyOf) return fc.oneof(...s.anyOf.map((x) => fromSchema(x, depth + 1)));
  switch (s.type) {
    case 'string': {
      const min = s.minLength ?? 0;
      const max = Math.min(s.maxLength ?? 64, 300);
      return fc.oneof(
        fc.constantFrom(...KNOWN_NAMES),
        fc.string({ minLength: Math.min(min, max), maxLength: max }),
        // Patterned strings (ids): hex-ish strings hit the pattern often enough.
        fc.stringMatching(/^[0-9a-f-]{1,64}$/),
        weirdString,
      );
    }
    case 'integer':
      return fc.oneof(fc.integer({ min: s.minimum ?? -1e9, max: s.maximum ?? 1e9 }), fc.integer(), fc.double());
    case 'number':
      return fc.oneof(fc.double({ min: s.minimum ?? -1e9, max: s.maximum ?? 1e9, noNaN: true }), fc.double());
    case 'boolean':
      return fc.boolean();
    case 'array': {
      const item = s.items ? fromSchema(s.items, depth + 1) : anyJson;
      return fc.array(item, { minLength: Math.min(s.minItems ?? 0, 20), maxLength: Math.min(s.maxItems ?? 5, 20) });
    }
    case 'object': {
      if (s.patternProperties) {
        const inner = Object.values(s.patternProperties)[0] ?? {};
        return fc.dictionary(fc.string({ maxLength: 70 }), fromSchema(inner, depth + 1), { maxKeys: 5 });
      }
      const props = s.properties ?? {};
      const required = new Set(s.required ?? []);
      const shape: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [k, v] of Object.entries(props)) shape[k] = fromSchema(v, depth + 1);
      const requiredKeys = Object.keys(props).filter((k) => required.has(k));
      const base = fc.record(shape, { requiredKeys });
      return fc.oneof(
        { weight: 5, arbitrary: base },
        { weight: 1, arbitrary: fc.tuple(base, fc.string({ maxLength: 12 }), anyJson).map(([o, k, v]) => ({ ...(o as object), [k]: v })) },
      );
    }
    default:
      // Free-form values (T.Unknown, record values) are what handlers store and serialise as given.
      return fc.oneof({ weight: 5, arbitrary: anyJson }, { weight: 1, arbitrary: deepValue });
  }
}

// --- frames -----------------------------------------------------------------------------------

/** Text that nests `depth` levels: arrays or objects. */
const deepText = fc
  .tuple(fc.integer({ min: 100, max: 20_000 }), fc.boolean())
  .map(([n, arr]) => (arr ? `${'['.repeat(n)}${']'.repeat(n)}` : `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`));

/** A raw frame as the first thing on the wire: anything but a well-formed connect. */
export const rawFrame: fc.Arbitrary<string | Buffer> = fc.oneof(
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
  { weight: 3, arbitrary: fc.jsonValue().map((v) => JSON.stringify(v)) },
  {
    weight: 4,
    arbitrary: fc
      .record(
        {
          type: fc.oneof(fc.constant('req'), anyJson),
          id: fc.oneof(fc.string({ maxLength: 80 }), anyJson),
          method: fc.oneof(fc.constant('connect'), anyJson),
          params: anyJson,
        },
        { requiredKeys: [] },
      )
      .map((o) => JSON.stringify(o)),
  },
  { weight: 1, arbitrary: deepText },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 60_000, max: 70_000 }).map((n) => JSON.stringify({ type: 'req', id: 'x', method: 'connect', params: { pad: 'x'.repeat(n) } })),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }).map((s) => `{"type":"req","id":"1","method":"connect","params":${s}`) },
);

/** Mutations of a valid connect: a field replaced, removed or added. */
function connectMutation(valid: Record<string, unknown>): fc.Arbitrary<unknown> {
  const keys = Object.keys(valid);
  return fc.oneof(
    fc.tuple(fc.constantFrom(...keys), anyJson).map(([k, v]) => ({ ...valid, [k]: v })),
    fc.constantFrom(...keys).map((k) => {
      const o = { ...valid };
      delete o[k];
      return o;
    }),
    fc.tuple(fc.string({ maxLength: 20 }), anyJson).map(([k, v]) => ({ ...valid, [k]: v })),
    fc.tuple(fc.constantFrom('client', 'auth', 'device'), fc.string({ maxLength: 20 }), anyJson).map(([outer, k, v]) => ({
      ...valid,
      [outer]: { ...((valid[outer] as object | undefined) ?? {}), [k]: v },
    })),
    anyJson,
  );
}

type Case =
  | { kind: 'frames'; frames: Array<string | Buffer> }
  | { kind: 'connect'; variant: 'plain' | 'owner' | 'device'; mutate: number; params: unknown }
  | { kind: 'session'; as: 'owner' | 'device' | 'node'; calls: Array<{ method: string; params: unknown } | { raw: string | Buffer }> };

// --- the run ----------------------------------------------------------------------------------

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

function healthz(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', timeout: 10_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

const ALLOWED_CLOSE = new Set<number>([...Object.values(CLOSE), 1001, 1005]);

export async function runFuzz(opts: FuzzOptions): Promise<FuzzReport> {
  const log = opts.log ?? (() => {});
  const failures: string[] = [];
  const answers: Record<string, number> = {};
  const fail = (what: string) => {
    if (failures.length < 100) failures.push(what);
    log(`FAILURE ${what}`);
  };

  // The registered methods and their schemas, from a gateway built in this process (SQLite :memory: store).
  const probe = await startTestGateway({ store: 'memory' });
  const methods = probe.gateway.methods.all().map((m) => ({ name: m.name, params: m.params as TSchema | undefined }));
  await probe.stop();
  removeQuietly(probe.stateDir);

  const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-fuzz-'));
  const configPath = join(stateDir, 'fuzz-config.json');
  // Every refusal of a fuzzed credential counts as a failure; a lockout would hide the rest behind RATE_LIMITED.
  // A webhook channel on a local listener: a generated `send` to it reaches the handler and the store.
  const target = await WebhookTarget.start();
  writeFileSync(
    configPath,
    JSON.stringify({
      gateway: { rateLimit: { maxFailures: 1_000_000_000 } },
      automations: { channels: { webhooks: [{ name: 'fuzz', url: target.url }] } },
    }),
  );
  const port = await freePort();
  const gw = await GatewayProcess.start({ stateDir, configPath, port });
  const url = gw.url;
  const owner = ownerCredential(stateDir);
  const shared = sharedToken(stateDir);
  const identity = generateIdentity();
  const nodeIdentity = generateIdentity();

  const methodArb = fc.oneof(
    {
      weight: 8,
      arbitrary: fc.constantFrom(...methods).chain((m) => (m.params ? fromSchema(m.params as Schema) : anyJson).map((params) => ({ method: m.name, params }))),
    },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom('connect', '__proto__', 'constructor', 'health ')), anyJson)
        .map(([method, params]) => ({ method, params })),
    },
    { weight: 1, arbitrary: rawFrame.map((raw) => ({ raw })) },
    // A registered method with deeply nested params (after the handshake the frame cap is 25 MiB).
    {
      weight: 1,
      arbitrary: fc.tuple(fc.constantFrom(...methods.map((m) => m.name)), fc.integer({ min: 500, max: 50_000 }), fc.boolean()).map(([m, n, arr]) => ({
        raw: `{"type":"req","id":"deep","method":${JSON.stringify(m)},"params":{"x":${arr ? `${'['.repeat(n)}${']'.repeat(n)}` : `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`}}}`,
      })),
    },
  );
  const caseArb: fc.Arbitrary<Case> = fc.oneof(
    { weight: 3, arbitrary: fc.array(rawFrame, { minLength: 1, maxLength: 3 }).map((frames) => ({ kind: 'frames' as const, frames })) },
    {
      weight: 3,
      arbitrary: fc
        .tuple(fc.constantFrom<'plain' | 'owner' | 'device'>('plain', 'owner', 'device'), fc.nat(), anyJson)
        .map(([variant, mutate, params]) => ({ kind: 'connect' as const, variant, mutate, params })),
    },
    {
      weight: 4,
      arbitrary: fc
        .tuple(fc.constantFrom<'owner' | 'device' | 'node'>('owner', 'owner', 'owner', 'device', 'node'), fc.array(methodArb, { minLength: 1, maxLength: 8 }))
        .map(([as, calls]) => ({ kind: 'session' as const, as, calls })),
    },
  );

  const tally = (f: Frame | null) => {
    const key = f === null ? 'no-answer' : f.ok ? 'ok' : String((f.error?.details as { code?: string } | undefined)?.code ?? 'uncatalogued');
    answers[key] = (answers[key] ?? 0) + 1;
  };
  /** Is this error answer one of the catalogue's, with the matching top-level code? */
  const checkAnswer = (f: Frame, what: string) => {
    if (f.type !== 'res') return;
    if (f.ok) return;
    const detail = (f.error?.details as { code?: string } | undefined)?.code;
    const entry = detail ? CATALOGUE[detail as DetailCode] : undefined;
    if (!f.error || !detail || !entry) return fail(`${what}: uncatalogued error ${JSON.stringify(f.error).slice(0, 300)}`);
    if (!(ERROR_CODES as readonly string[]).includes(f.error.code) || f.error.code !== entry.code) {
      fail(`${what}: error.code ${f.error.code} does not match the catalogue's ${entry.code} for ${detail}`);
    }
    if (detail === 'INTERNAL_ERROR') fail(`${what}: INTERNAL_ERROR (a thrown exception): ${JSON.stringify(f.error).slice(0, 300)}`);
  };
  const checkClose = async (c: RawClient, what: string) => {
    const info = await Promise.race([c.closed, new Promise<null>((r) => setTimeout(() => r(null), 100))]);
    if (info && !ALLOWED_CLOSE.has(info.code)) fail(`${what}: closed with undocumented code ${info.code} (${info.reason})`);
  };
  const describe = (c: Case) => JSON.stringify(c, (_k, v) => (typeof v === 'string' && v.length > 200 ? `${v.slice(0, 200)}…(${v.length})` : v)).slice(0, 600);

  const runCase = async (c: Case, n: number): Promise<void> => {
    const what = `case ${n} ${describe(c)}`;
    const client = await RawClient.open(url);
    try {
      const challenge = await client.challenge();
      if (c.kind === 'frames') {
        for (const f of c.frames) if (client.open) client.send(f);
        // The first bad frame is answered (or the socket is closed for its size) and the socket closed.
        await Promise.race([client.closed, new Promise((r) => setTimeout(r, 5_000))]);
        if (client.open) fail(`${what}: the socket is still open 5 s after a malformed handshake`);
      } else if (c.kind === 'connect') {
        const valid =
          c.variant === 'plain'
            ? plainParams({ auth: { token: shared } })
            : c.variant === 'owner'
              ? plainParams({ auth: ownerAuth(challenge, url, owner), scopes: ['operator.admin'] })
              : deviceParams({ identity, challenge, auth: { token: shared }, scopes: ['operator.read'] });
        const mutated = fc.sample(connectMutation(valid), { seed: opts.seed + n + c.mutate, numRuns: 1 })[0];
        const res = await client.request('c1', 'connect', mutated, 10_000);
        tally(res);
        if (res) checkAnswer(res, what);
        else if (client.open) fail(`${what}: connect got no answer and the socket stayed open`);
      } else {
        // The owner reaches every handler; a paired device (silently, on loopback, read + write) the non-admin paths.
        const params =
          c.as === 'owner'
            ? plainParams({ auth: ownerAuth(challenge, url, owner), scopes: ['operator.admin'] })
            : c.as === 'device'
              ? deviceParams({ identity, challenge, auth: { token: shared }, scopes: ['operator.read', 'operator.write'] })
              : {
                  ...deviceParams({
                    identity: nodeIdentity,
                    challenge,
                    role: 'node',
                    scopes: [],
                    client: { id: 'node-host', mode: 'node' },
                    auth: { token: shared },
                  }),
                  caps: ['system'],
                  commands: ['system.run', 'system.which'],
                };
        const hello = await client.request('c1', 'connect', params, 10_000);
        if (!hello?.ok) return fail(`${what}: the ${c.as} could not connect: ${JSON.stringify(hello?.error)}`);
        let i = 0;
        for (const call of c.calls) {
          if (!client.open) break;
          if ('raw' in call) {
            client.send(call.raw);
            continue;
          }
          if (OUTSIDE_EFFECTS.has(call.method)) continue;
          const id = `r${++i}`;
          client.send(frameText({ type: 'req', id, method: call.method, ...(call.params === undefined ? {} : { params: call.params }) }));
          const res = await client.response(id, 15_000).catch(() => null);
          tally(res);
          if (res) checkAnswer(res, `${what} call ${call.method}`);
          else if (client.open) fail(`${what}: ${call.method} got no answer and the socket stayed open`);
        }
      }
      // Answers not awaited above (to raw frames, after a close): catalogued too.
      for (const f of client.frames) if (!(c.kind === 'session' && f.type === 'res' && /^r\d+$/.test(String(f.id)))) checkAnswer(f, what);
      if (client.junk.length > 0) fail(`${what}: the gateway sent a non-JSON text frame`);
    } finally {
      await client.close();
      await checkClose(client, what);
    }
  };

  let baseline = 0;
  let peak = 0;
  const total = opts.frames;
  const batch = 200;
  let done = 0;
  const dead = () => gw.child.exitCode !== null || gw.child.signalCode !== null;
  let finalRss = 0;
  let bound = 0;
  try {
    for (let b = 0; done < total && !dead(); b++) {
      const cases = fc.sample(caseArb, { seed: opts.seed + b * 7_919, numRuns: Math.min(batch, total - done) });
      for (const c of cases) {
        done++;
        try {
          await runCase(c, done);
        } catch (err) {
          if (!dead()) fail(`case ${done} ${describe(c)}: ${(err as Error).message}`);
        }
        if (dead()) {
          fail(`the gateway died during case ${done} ${describe(c)}: ${gw.stderr.slice(-1500)}`);
          break;
        }
        if (done === Math.min(50, total)) baseline = rssOf(gw.pid);
        if (done % 20 === 0) peak = Math.max(peak, rssOf(gw.pid));
      }
      log(`fuzz: ${done}/${total} cases, rss ${dead() ? 0 : Math.round(rssOf(gw.pid) / 1e6)} MB, failures ${failures.length}`);
    }
    if (!dead()) {
      if ((await healthz(port)) !== 200) fail('the gateway does not answer /healthz after the fuzzing');
      for (const e of gw.errorLines()) fail(`the gateway logged an error: ${e.line.slice(0, 400)}`);
      // Measured after every socket closed: what the gateway still holds.
      await new Promise((r) => setTimeout(r, 500));
      finalRss = rssOf(gw.pid);
      bound = Math.round((baseline || finalRss) * (opts.rssFactor ?? 2) + (opts.rssSlackBytes ?? 96 * 1024 * 1024));
      if (baseline > 0 && finalRss > bound) fail(`gateway RSS grew from ${baseline} to ${finalRss} bytes (bound ${bound})`);
      const code = await gw.stop();
      if (code !== 0) fail(`the gateway did not stop cleanly on SIGTERM (exit ${code})`);
    }
  } finally {
    await gw.kill();
    await target.close();
    removeQuietly(stateDir);
  }
  return { seed: opts.seed, cases: done, failures, answers, rss: { baselineBytes: baseline, finalBytes: finalRss, peakBytes: peak, boundBytes: bound } };
}

function removeQuietly(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
