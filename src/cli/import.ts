/**
 * `clawgate import openclaw`: take over an OpenClaw gateway's paired devices so they reconnect
 * to clawgate with no new approval (docs/migrating-from-openclaw.md).
 *
 * The OpenClaw files are only read (the database opened read-only). Devices stream into the store
 * in ONE transaction (Store.importDevices reads them in batches inside it), so an import applies
 * completely or not at all, whatever its size; tokens go
 * in only as hashes. The gateway token and password go to the state dir's credentials file, the
 * way clawgate keeps its own, after the store said yes and rolled back if the store then fails.
 */
import { existsSync, readFileSync, unlinkSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { systemClock, systemRandom } from '../core/env.js';
import { generateSecret } from '../core/secrets.js';
import type { DeviceImportReport, ImportDevicesInput, ImportedDevice, Store } from '../store/types.js';
import { readOpenClawDevices, readOpenClawSecrets, type SourceSkip } from './openclaw-state.js';
import { resolveStoreChoice } from './postgres.js';
import { CREDENTIALS_FILE, type Credentials, ensureStateDir, readCredentials, resolveStateDir, writeSecretFile } from './state.js';
import { parse, UsageError } from './usage.js';

const USAGE =
  'usage: clawgate import openclaw [--from <openclaw-state-dir>] [--state-dir <dir>] [--dry-run] [--merge] [--json] [--store sqlite|postgres] [--postgres-url <url>]';

/** What happened to a gateway secret of the source. */
type SecretOutcome = 'imported' | 'unchanged' | 'absent' | 'kept-existing';

export interface ImportReport {
  source: string;
  dryRun: boolean;
  devices: Array<DeviceImportReport & { name?: string | undefined; from: string }>;
  /** Records of the source that could not be imported at all. */
  skipped: SourceSkip[];
  token: SecretOutcome;
  password: SecretOutcome;
  notes: string[];
}

/** The OpenClaw state dir: --from > OPENCLAW_STATE_DIR > ~/.openclaw. */
export function resolveOpenClawDir(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag ?? (env.OPENCLAW_STATE_DIR?.trim() || join(homedir(), '.openclaw'));
}

export async function importCommand(sub: string | undefined, args: string[]): Promise<number> {
  if (sub !== 'openclaw') throw new UsageError(USAGE);
  const { values, positionals } = parse(args, {
    from: { type: 'string' },
    'state-dir': { type: 'string' },
    'dry-run': { type: 'boolean' },
    merge: { type: 'boolean' },
    json: { type: 'boolean' },
    store: { type: 'string' },
    'postgres-url': { type: 'string' },
  });
  if (positionals.length > 0) throw new UsageError(USAGE);
  const from = resolveOpenClawDir(values.from as string | undefined);
  const stateDir = resolveStateDir(values['state-dir'] as string | undefined);
  const dryRun = values['dry-run'] === true;
  const merge = values.merge === true;
  const choice = resolveStoreChoice(values.store as string | undefined, values['postgres-url'] as string | undefined, {});

  // The source streams (devices are never all in memory at once): read through once before
  // touching the target, so a source that fails to read writes nothing; the store then reads it
  // again inside its transaction, in batches. Per device only what the report prints is kept.
  const extra = new Map<string, { notes: string[]; from: string; name?: string | undefined }>();
  let skipped: SourceSkip[] = [];
  const source: Iterable<ImportedDevice> = {
    *[Symbol.iterator]() {
      const mine: SourceSkip[] = [];
      skipped = mine;
      for (const s of readOpenClawDevices(from, mine)) {
        extra.set(s.device.deviceId, { notes: s.notes, from: s.from, name: s.device.label ?? s.device.meta.displayName });
        yield s.device;
      }
    },
  };
  for (const _ of source) {
    // the first read only checks the source and collects what the report prints
  }
  const secrets = readOpenClawSecrets(from);

  if (!dryRun) ensureStateDir(stateDir);
  const store = await openStore(choice, stateDir, dryRun);
  let report: ImportReport;
  try {
    const input: ImportDevicesInput = { source: `openclaw:${from}`, devices: source, merge, dryRun: true, atMs: systemClock.now(), actor: 'owner' };
    // Ask first (nothing written): a refused import must not leave new credentials behind either.
    const plan = store ? await store.importDevices(input) : await planOnEmpty(input);
    if (!plan.ok) {
      const msg = `the clawgate state in ${stateDir} already holds ${plan.otherDevices} device(s) not in this OpenClaw state: pass --merge to add to it`;
      if (values.json) process.stdout.write(`${JSON.stringify({ ok: false, error: 'not-empty', otherDevices: plan.otherDevices, message: msg })}\n`);
      else process.stderr.write(`refused: ${msg}\n`);
      return 1;
    }
    const creds = readCredentials(stateDir);
    const secretPlan = planSecrets(creds, secrets, merge);
    let devices = plan.devices;
    if (!dryRun) {
      const before = existsSync(join(stateDir, CREDENTIALS_FILE)) ? readFileSync(join(stateDir, CREDENTIALS_FILE), 'utf8') : null;
      if (secretPlan.next) writeSecretFile(join(stateDir, CREDENTIALS_FILE), `${JSON.stringify(secretPlan.next, null, 2)}\n`);
      try {
        const done = await (store as Store).importDevices({ ...input, dryRun: false });
        if (!done.ok) throw new Error('the clawgate state changed during the import: run it again');
        devices = done.devices;
      } catch (err) {
        // The store wrote nothing; neither may the credentials file.
        if (secretPlan.next) {
          if (before === null) unlinkSync(join(stateDir, CREDENTIALS_FILE));
          else writeSecretFile(join(stateDir, CREDENTIALS_FILE), before);
        }
        throw err;
      }
    }
    report = {
      source: from,
      dryRun,
      devices: devices.map((d) => {
        const x = extra.get(d.deviceId);
        return { ...d, notes: [...d.notes, ...(x?.notes ?? [])], name: x?.name, from: x?.from ?? 'sqlite' };
      }),
      skipped,
      token: secretPlan.token,
      password: secretPlan.password,
      notes: [...secrets.notes, ...secretPlan.notes],
    };
  } finally {
    await store?.close();
  }
  if (values.json) process.stdout.write(`${JSON.stringify({ ok: true, ...report })}\n`);
  else printReport(report, stateDir);
  return 0;
}

/** A dry run against a state dir that does not exist yet: plan against an empty in-memory SQLite store. */
async function planOnEmpty(input: ImportDevicesInput) {
  const { SqliteStore } = await import('../store/sqlite/store.js');
  const store = new SqliteStore(':memory:');
  try {
    return await store.importDevices(input);
  } finally {
    await store.close();
  }
}

async function openStore(choice: { kind: 'sqlite' | 'postgres'; url?: string | undefined }, stateDir: string, dryRun: boolean): Promise<Store | null> {
  if (choice.kind === 'postgres') {
    const { PostgresStore } = await import('../store/postgres/store.js');
    return PostgresStore.open(choice.url as string);
  }
  const file = join(stateDir, 'clawgate.sqlite');
  // A dry run never creates the state database.
  if (dryRun && !existsSync(file)) return null;
  const { SqliteStore } = await import('../store/sqlite/store.js');
  return new SqliteStore(file);
}

interface SecretPlan {
  next: Credentials | null;
  token: SecretOutcome;
  password: SecretOutcome;
  notes: string[];
}

/**
 * The credentials file after the import. A fresh state takes OpenClaw's token and password (and
 * gets a new owner credential); an existing one keeps its own token unless it already is
 * OpenClaw's, and gains the password only when it has none.
 */
function planSecrets(creds: Credentials | null, src: { token?: string | undefined; password?: string | undefined }, merge: boolean): SecretPlan {
  const notes: string[] = [];
  let token: SecretOutcome = 'absent';
  let password: SecretOutcome = 'absent';
  const now = systemClock.now();
  let next: Credentials | null = null;
  if (!creds) {
    if (src.token === undefined && src.password === undefined) return { next: null, token, password, notes };
    next = {
      version: 1,
      token: src.token ?? generateSecret('cgs', systemRandom),
      owner: generateSecret('cgo', systemRandom),
      ...(src.password !== undefined ? { password: src.password } : {}),
      ...(src.token !== undefined ? { tokenImportedFrom: 'openclaw' } : {}),
      createdAtMs: now,
    };
    if (src.token !== undefined) token = 'imported';
    if (src.password !== undefined) password = 'imported';
    return { next, token, password, notes };
  }
  const updated: Credentials = { ...creds };
  if (src.token !== undefined) {
    if (creds.token === src.token) token = 'unchanged';
    else {
      token = 'kept-existing';
      notes.push(
        merge
          ? 'clawgate already has its own gateway token: kept it (clients using OpenClaw’s token need clawgate’s, or start the gateway with --token)'
          : 'clawgate already has its own gateway token: kept it',
      );
    }
  }
  if (src.password !== undefined) {
    if (creds.password === src.password) password = 'unchanged';
    else if (creds.password === undefined) {
      updated.password = src.password;
      password = 'imported';
    } else {
      password = 'kept-existing';
      notes.push('clawgate already has a gateway password: kept it');
    }
  }
  if (password === 'imported') next = updated;
  return { next, token, password, notes };
}

function printReport(r: ImportReport, stateDir: string): void {
  const w = (s: string) => process.stdout.write(`${s}\n`);
  w(`${r.dryRun ? 'dry run: nothing written. ' : ''}OpenClaw state ${r.source} → clawgate state ${stateDir}`);
  for (const d of r.devices) {
    const what = [d.roles.length ? `roles ${d.roles.join('+')}` : '', d.tokens.length ? `tokens ${d.tokens.join('+')}` : '', d.surface ? 'node commands' : '']
      .filter(Boolean)
      .join(', ');
    w(`  ${d.outcome.padEnd(9)} ${d.deviceId.slice(0, 12)}… ${d.name ?? ''}${what ? ` (${what})` : ''}`);
    for (const n of d.notes) w(`            - ${n}`);
  }
  for (const s of r.skipped) w(`  skipped   ${s.deviceId.slice(0, 12)}… ${s.reason}`);
  w(`  gateway token: ${r.token}; password: ${r.password}`);
  for (const n of r.notes) w(`  - ${n}`);
  if (!r.dryRun) w('next: stop OpenClaw, then `clawgate gateway run --port <the port OpenClaw used>`: paired devices reconnect as they are.');
}
