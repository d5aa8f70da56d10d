/**
 * The companion side of the CLI, built on @clawgate/client: `clawgate pair`, `clawgate status
 * --client`, and `clawgate call` with the credentials `pair` stored. Client credentials live in
 * `<state-dir>/client/` (one 0600 file per gateway), apart from the gateway's own state.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  applySetupCode,
  type Checkpoint,
  ClientError,
  type ClientState,
  FileCredentialStore,
  GatewayCallError,
  GatewayClient,
  type GatewayRecord,
  nodePlatform,
  normalizeGatewayUrl,
  type Role,
} from '../../packages/client/src/node.js';
import { printableLines } from '../protocol/text.js';
import { positiveIntFlag } from './common.js';
import { parse, UsageError } from './main.js';
import { resolveStateDir } from './state.js';

/**
 * TEST-ONLY crash hook: when CLAWGATE_TEST_CRASH_AT names a checkpoint (docs/client.md lists
 * them), the process SIGKILLs itself there, so tests can prove the hand-off survives a crash at
 * that exact point. Unset in normal use; it never changes behaviour otherwise.
 */
function crashHook(): ((name: Checkpoint) => void) | undefined {
  const at = process.env.CLAWGATE_TEST_CRASH_AT;
  if (!at) return undefined;
  return (name) => {
    if (name === at) process.kill(process.pid, 'SIGKILL');
  };
}

export function clientStore(stateDir: string): FileCredentialStore {
  const dir = join(stateDir, 'client');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const checkpoint = crashHook();
  return new FileCredentialStore(dir, checkpoint ? { checkpoint } : {});
}

function report(err: unknown): number {
  if (err instanceof ClientError) {
    const code = err.gatewayCode && err.gatewayCode !== err.code ? ` [${err.gatewayCode}]` : ` [${err.code}]`;
    process.stderr.write(`error: ${err.message}${code}\n${err.nextStep ? `next: ${err.nextStep}\n` : ''}`);
    return 1;
  }
  if (err instanceof GatewayCallError) {
    process.stderr.write(`error: ${err.message} [${err.code}]\n${err.nextStep ? `next: ${err.nextStep}\n` : ''}`);
    return 1;
  }
  throw err;
}

function describeRoles(rec: GatewayRecord): Record<string, { scopes: string[] }> {
  const out: Record<string, { scopes: string[] }> = {};
  for (const role of ['operator', 'node'] as const) {
    const t = rec.tokens[role];
    if (t) out[role] = { scopes: t.scopes };
  }
  return out;
}

export async function pairCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    name: { type: 'string' },
    node: { type: 'boolean' },
    url: { type: 'string' },
    'state-dir': { type: 'string' },
    json: { type: 'boolean' },
    timeout: { type: 'string' },
  });
  const code = positionals[0];
  if (!code || positionals.length > 1) throw new UsageError('usage: clawgate pair <setup-code|oc-pair://link> [--name <n>] [--node] [--url <gateway-url>]');
  const store = clientStore(resolveStateDir(values['state-dir'] as string | undefined));
  const platform = nodePlatform();
  const checkpoint = crashHook();
  const displayName = values.name as string | undefined;
  const role: Role = values.node ? 'node' : 'operator';
  const connectTimeoutMs = positiveIntFlag(values, 'timeout') ?? 30_000;
  let client: GatewayClient | null = null;
  try {
    const { record } = await applySetupCode(store, platform, code, {
      ...(displayName ? { displayName } : {}),
      ...(values.url ? { url: values.url as string } : {}),
      ...(checkpoint ? { checkpoint } : {}),
    });
    client = new GatewayClient({
      url: record.url,
      role,
      store,
      platform,
      forceBootstrap: true,
      client: role === 'node' ? { id: 'node-host', mode: 'node' } : { id: 'cli', mode: 'cli' },
      ...(checkpoint ? { checkpoint } : {}),
    });
    const s = await client.connect({ timeoutMs: connectTimeoutMs });
    const rec = (await store.load(record.key)) as GatewayRecord;
    const out = {
      gateway: rec.url,
      deviceId: rec.deviceId,
      connectedAs: s.role,
      roles: describeRoles(rec),
      bootstrapCleared: rec.bootstrap === undefined,
      gatewayKey: rec.gatewayKey ?? null,
      ...(s.warning ? { warning: s.warning } : {}),
    };
    if (values.json) process.stdout.write(`${JSON.stringify(out)}\n`);
    else {
      const roles = Object.entries(out.roles).map(([r, v]) => `${r} (${v.scopes.join(', ') || 'no scopes'})`);
      process.stdout.write(
        `paired with ${out.gateway} as device ${out.deviceId}\n  roles: ${roles.join('; ')}\n  credentials: ${join(store.dir, 'gateways')} (mode 0600)\n` +
          `${out.gatewayKey ? `  gateway key: SHA-256 ${out.gatewayKey} (pinned: every connect checks it before sending anything)\n` : ''}` +
          `${s.warning ? `  warning: ${s.warning}\n` : ''}  try: clawgate call health\n`,
      );
    }
    return 0;
  } catch (err) {
    return report(err);
  } finally {
    client?.close();
  }
}

/** Which stored gateway a client command means: --url, else CLAWGATE_URL, else the only one stored. */
async function pickRecord(store: FileCredentialStore, url: string | undefined): Promise<GatewayRecord | null> {
  if (url) return store.load(normalizeGatewayUrl(url).key);
  const all = await store.list();
  return all.length === 1 ? all[0]! : null;
}

/**
 * `clawgate call` with stored client credentials; null when nothing is stored for the target
 * (the caller then reports the missing credential).
 */
export async function callWithStoredCredentials(values: Record<string, unknown>, method: string, params: unknown, timeoutMs: number): Promise<number | null> {
  const store = clientStore(resolveStateDir(values['state-dir'] as string | undefined));
  const rec = await pickRecord(store, (values.url as string | undefined) ?? process.env.CLAWGATE_URL);
  if (!rec) return null;
  const checkpoint = crashHook();
  const client = new GatewayClient({
    url: (values.url as string | undefined) ?? rec.url,
    store,
    platform: nodePlatform(),
    requestTimeoutMs: timeoutMs,
    ...(checkpoint ? { checkpoint } : {}),
  });
  client.onState((s) => {
    if (s.status === 'awaiting-approval')
      process.stderr.write(`waiting for approval of request ${s.requestId ?? '?'} (clawgate devices approve ${s.requestId ?? '<id>'})\n`);
  });
  try {
    await client.connect();
    const result = await client.request(method, params);
    process.stdout.write(`${printableLines(JSON.stringify(result, null, values.json ? 0 : 2))}\n`);
    return 0;
  } catch (err) {
    return report(err);
  } finally {
    client.close();
  }
}

interface RoleStatus {
  role: Role;
  credential: string | null;
  storedScopes: string[] | null;
  state: string;
  scopes?: string[];
  reason?: string;
  message?: string;
  nextStep?: string;
  requestId?: string | null;
}

async function probe(store: FileCredentialStore, rec: GatewayRecord, role: Role, timeoutMs: number): Promise<Partial<RoleStatus>> {
  const client = new GatewayClient({ url: rec.url, role, store, platform: nodePlatform(), waitForApproval: false, backoff: { baseMs: timeoutMs } });
  try {
    client.start();
    const s: ClientState = await client
      .waitFor((x) => x.status === 'connected' || x.status === 'paused' || (x.status === 'connecting' && x.retryAtMs !== undefined), timeoutMs)
      .catch(() => client.state);
    if (s.status === 'connected') return { state: 'connected', scopes: s.scopes };
    if (s.status === 'paused')
      return { state: 'paused', reason: s.reason, message: s.message, nextStep: s.nextStep, ...(s.requestId ? { requestId: s.requestId } : {}) };
    if (s.status === 'connecting' && s.lastError) return { state: 'unreachable', message: s.lastError.message };
    return { state: 'unreachable', message: `no answer within ${timeoutMs} ms` };
  } finally {
    client.close();
  }
}

export async function statusCommand(args: string[]): Promise<number> {
  const { values } = parse(args, {
    client: { type: 'boolean' },
    offline: { type: 'boolean' },
    json: { type: 'boolean' },
    'state-dir': { type: 'string' },
    timeout: { type: 'string' },
  });
  if (!values.client) throw new UsageError('usage: clawgate status --client [--offline] [--json]  (for the gateway itself: clawgate call status)');
  const store = clientStore(resolveStateDir(values['state-dir'] as string | undefined));
  const timeoutMs = positiveIntFlag(values, 'timeout') ?? 5000;
  const gateways = [];
  const { records, problems } = store.scan();
  for (const rec of records) {
    const roles: RoleStatus[] = [];
    for (const role of ['operator', 'node'] as const) {
      const t = rec.tokens[role];
      const credential = t ? 'device-token' : rec.sharedToken ? 'shared-token' : rec.bootstrap ? 'bootstrap-token' : null;
      if (!t && role === 'node' && credential !== 'bootstrap-token') continue; // a node role is shown once the device has or may get one
      const base: RoleStatus = { role, credential, storedScopes: t?.scopes ?? null, state: 'not-checked' };
      // A bootstrap token is only redeemed by `pair`/`call`: status must not spend it.
      if (!values.offline && credential && credential !== 'bootstrap-token') Object.assign(base, await probe(store, rec, role, timeoutMs));
      roles.push(base);
    }
    gateways.push({
      gateway: rec.url,
      key: rec.key,
      deviceId: rec.deviceId,
      displayName: rec.displayName ?? null,
      sharedToken: rec.sharedToken !== undefined,
      gatewayKey: rec.gatewayKey ?? null,
      bootstrap: rec.bootstrap ? { expiresAtMs: rec.bootstrap.expiresAtMs ?? null } : null,
      lastConnectedAtMs: rec.lastConnectedAtMs ?? null,
      roles,
    });
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ gateways, problems })}\n`);
    return problems.length > 0 ? 1 : 0;
  }
  for (const p of problems) process.stdout.write(`unreadable: ${p.message} (left untouched; restore or remove it, then pair again)\n`);
  if (gateways.length === 0 && problems.length === 0) {
    process.stdout.write(`no gateways stored in ${store.dir}: pair with \`clawgate pair <setup-code>\`\n`);
    return 0;
  }
  for (const g of gateways) {
    process.stdout.write(`${g.gateway}  device ${g.deviceId}${g.displayName ? ` (${g.displayName})` : ''}\n`);
    process.stdout.write(`  shared token: ${g.sharedToken ? 'stored' : 'none'}; setup code: ${g.bootstrap ? 'pending hand-off' : 'none'}\n`);
    process.stdout.write(
      `  gateway key: ${g.gatewayKey ? `pinned SHA-256 ${g.gatewayKey}` : 'not pinned yet (learned at the next connect that proves one)'}\n`,
    );
    for (const r of g.roles) {
      const scopes = (r.scopes ?? r.storedScopes ?? []).join(', ') || '-';
      process.stdout.write(`  ${r.role}: ${r.state}${r.reason ? ` (${r.reason})` : ''} via ${r.credential ?? 'nothing'}; scopes ${scopes}\n`);
      if (r.nextStep && r.state !== 'connected') process.stdout.write(`    next: ${r.nextStep}\n`);
      else if (r.message && r.state !== 'connected') process.stdout.write(`    ${r.message}\n`);
    }
  }
  return problems.length > 0 ? 1 : 0;
}
