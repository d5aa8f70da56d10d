/**
 * The companion side of the CLI, built on @clawgate/client: `clawgate pair` and `clawgate status
 * --client` (every gateway command uses the stored credentials through device-session.ts). Client credentials live in
 * `<state-dir>/client/` (one 0600 file per gateway), apart from the gateway's own state.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  applySetupCode,
  type Checkpoint,
  type ClientState,
  FileCredentialStore,
  GatewayClient,
  type GatewayRecord,
  nodePlatform,
  type Role,
} from '../../packages/client/src/node.js';
import { field, out, positiveIntFlag } from './common.js';
import { reportClientFailure } from './gateway-session.js';
import { parse, UsageError } from './main.js';
import { readSetupCode, SETUP_CODE_FLAGS } from './secret-input.js';
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
  const status = reportClientFailure(err);
  if (status === null) throw err;
  return status;
}

function describeRoles(rec: GatewayRecord): Record<string, { scopes: string[] }> {
  const out: Record<string, { scopes: string[] }> = {};
  for (const role of ['operator', 'node'] as const) {
    const t = rec.tokens[role];
    if (t) out[role] = { scopes: t.scopes };
  }
  return out;
}

const PAIR_USAGE =
  'usage: clawgate pair --code-file <path> | --code-stdin | - | <setup-code|oc-pair://link> [--name <n>] [--node] [--url <gateway-url>]  (or CLAWGATE_SETUP_CODE)';

export async function pairCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    name: { type: 'string' },
    node: { type: 'boolean' },
    url: { type: 'string' },
    'state-dir': { type: 'string' },
    json: { type: 'boolean' },
    timeout: { type: 'string' },
    ...SETUP_CODE_FLAGS,
  });
  if (positionals.length > 1) throw new UsageError(PAIR_USAGE);
  // The code carries a bootstrap token: the file, standard input or the environment keep it off argv.
  const code = readSetupCode(values, positionals[0], 'clawgate pair <setup-code>')?.value;
  if (!code) throw new UsageError(PAIR_USAGE);
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
    const result = {
      gateway: rec.url,
      deviceId: rec.deviceId,
      connectedAs: s.role,
      roles: describeRoles(rec),
      bootstrapCleared: rec.bootstrap === undefined,
      gatewayKey: rec.gatewayKey ?? null,
      ...(s.warning ? { warning: s.warning } : {}),
    };
    // The URL, device id and warning came from the code or the gateway: `out`/`field` escape them.
    if (values.json) out(JSON.stringify(result));
    else {
      const roles = Object.entries(result.roles).map(([r, v]) => `${r} (${v.scopes.join(', ') || 'no scopes'})`);
      out(
        `paired with ${field(result.gateway)} as device ${field(result.deviceId)}\n  roles: ${field(roles.join('; '))}\n  credentials: ${join(store.dir, 'gateways')} (mode 0600)\n` +
          `${result.gatewayKey ? `  gateway key: SHA-256 ${field(result.gatewayKey)} (pinned: every connect checks it before sending anything)\n` : ''}` +
          `${s.warning ? `  warning: ${field(s.warning)}\n` : ''}  try: clawgate call health`,
      );
    }
    return 0;
  } catch (err) {
    return report(err);
  } finally {
    client?.close();
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
    out(JSON.stringify({ gateways, problems }));
    return problems.length > 0 ? 1 : 0;
  }
  // Every value below came from the store or a gateway: `out` and `field` make controls and bidi visible.
  for (const p of problems) out(`unreadable: ${field(p.message)} (left untouched; restore or remove it, then pair again)`);
  if (gateways.length === 0 && problems.length === 0) {
    out(`no gateways stored in ${field(store.dir)}: pair with \`clawgate pair --code-file <file>\` (the setup code in a file only you can read)`);
    return 0;
  }
  for (const g of gateways) {
    out(`${field(g.gateway)}  device ${field(g.deviceId)}${g.displayName ? ` (${field(g.displayName)})` : ''}`);
    out(`  shared token: ${g.sharedToken ? 'stored' : 'none'}; setup code: ${g.bootstrap ? 'pending hand-off' : 'none'}`);
    out(`  gateway key: ${g.gatewayKey ? `pinned SHA-256 ${field(g.gatewayKey)}` : 'not pinned yet (learned at the next connect that proves one)'}`);
    for (const r of g.roles) {
      const scopes = (r.scopes ?? r.storedScopes ?? []).map(field).join(', ') || '-';
      out(`  ${r.role}: ${r.state}${r.reason ? ` (${field(r.reason)})` : ''} via ${r.credential ?? 'nothing'}; scopes ${scopes}`);
      if (r.nextStep && r.state !== 'connected') out(`    next: ${field(r.nextStep)}`);
      else if (r.message && r.state !== 'connected') out(`    ${field(r.message)}`);
    }
  }
  return problems.length > 0 ? 1 : 0;
}
