import { join } from 'node:path';
import {
  applySetupCode,
  ClientError,
  type ClientState,
  type FileCredentialStore,
  GatewayClient,
  type GatewayRecord,
  nodePlatform,
  type Role,
} from '@clawgate/client';
import { clientStore, crashHook } from './client-store.js';
import { field, out, positiveIntFlag } from './common.js';
import { explainNetworkMessage } from './connect-errors.js';
import { reportClientFailure } from './gateway-session.js';
import { readSetupCode, SETUP_CODE_FLAGS } from './secret-input.js';
import { resolveStateDir } from './state.js';
import { commandHint } from './target.js';
import { parse, UsageError } from './usage.js';

/**
 * Print a client failure. A socket that reached no gateway (the SDK reports `connect
 * ECONNREFUSED …`) is said as what it means and what to do, like every other CLI command.
 */
function report(err: unknown, url?: string): number {
  const explained = url && (err instanceof ClientError || err instanceof Error) ? explainNetworkMessage(err.message, url) : null;
  if (explained) {
    process.stderr.write(`error: ${field(explained.message)}\nnext: ${field(explained.nextStep)}\n`);
    return 1;
  }
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
  let dialled: string | undefined;
  try {
    const { record } = await applySetupCode(store, platform, code, {
      ...(displayName ? { displayName } : {}),
      ...(values.url ? { url: values.url as string } : {}),
      ...(checkpoint ? { checkpoint } : {}),
    });
    dialled = record.url;
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
          `${s.warning ? `  warning: ${field(s.warning)}\n` : ''}  try: ${field(commandHint(values, 'call health'))}`,
      );
    }
    return 0;
  } catch (err) {
    return report(err, dialled);
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
      out(
        `  ${r.role}: ${roleState(r, values.offline === true)}${r.reason ? ` (${field(r.reason)})` : ''}; ${credentialWords(r.credential)}; scopes ${scopes}`,
      );
      const unreachable = r.state === 'unreachable' && r.message ? explainNetworkMessage(r.message, g.gateway) : null;
      if (unreachable) out(`    ${field(unreachable.message)}\n    next: ${field(unreachable.nextStep)}`);
      else if (r.nextStep && r.state !== 'connected') out(`    next: ${field(r.nextStep)}`);
      else if (r.message && r.state !== 'connected') out(`    ${field(r.message)}`);
    }
  }
  return problems.length > 0 ? 1 : 0;
}

/** A role's connection state in words; "not-checked" says why it was not. */
function roleState(r: RoleStatus, offline: boolean): string {
  if (r.state !== 'not-checked') return r.state;
  if (r.credential === null) return 'cannot connect';
  if (offline) return 'not checked (--offline)';
  if (r.credential === 'bootstrap-token') return 'not checked (a setup code is redeemed by `clawgate pair` or `clawgate call`, never by status)';
  return 'not checked';
}

/** Which credential a role would connect with. */
function credentialWords(credential: string | null): string {
  if (credential === 'device-token') return 'credential: device token';
  if (credential === 'shared-token') return 'credential: shared gateway token';
  if (credential === 'bootstrap-token') return 'credential: setup code (not yet redeemed)';
  return 'no credential stored (pair again: clawgate pair --code-file <file>)';
}
