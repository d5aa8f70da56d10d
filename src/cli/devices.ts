/** `clawgate devices …` and `clawgate audit`: thin wrappers over the device RPCs; `audit --verify` reads the store itself. */

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { printable } from '@clawgate/protocol/text';
import Database from 'better-sqlite3';
import { parseDuration } from '../core/approval-policy.js';
import { type AuditVerdict, verifyAnchoredAudit } from '../core/audit-anchor.js';
import type { DeviceView, PendingView } from '../methods/devices.js';
import { AUDIT_ANCHOR_FILE, readAuditAnchor } from '../server/audit-anchor.js';
import { readGatewayKeyFingerprint } from '../server/gateway-key.js';
import { type AuditRow, toAudit } from '../store/shared.js';
import { type AuditEntry, DEVICE_PAGE_MAX, DEVICE_SEARCH_MAX_CHARS } from '../store/types.js';
import { field, out, parseGatewayCommand, positiveIntFlag } from './common.js';
import { CliFailure } from './connect-errors.js';
import { readConfigFile } from './gateway-config.js';
import type { CliConnection } from './gateway-session.js';
import { withGateway } from './gateway-session.js';
import { resolveStoreChoice } from './postgres.js';
import { ambiguityMessage, resolveRef } from './resolve.js';
import { resolveStateDir } from './state.js';
import { UsageError } from './usage.js';

const ago = (ms: number | null) => {
  if (ms === null) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : s < 86400 ? `${Math.round(s / 3600)}h ago` : `${Math.round(s / 86400)}d ago`;
};

function printList(list: { pending: PendingView[]; paired: DeviceView[] }): void {
  out(`Pending (${list.pending.length})`);
  for (const p of list.pending) {
    const name = field(p.displayName ?? p.clientId ?? p.deviceId.slice(0, 12));
    const what =
      p.kind === 'scope-upgrade'
        ? `adds ${p.adds.join(', ')} (holds ${(p.approvedScopes ?? []).join(', ') || 'none'})`
        : `${p.kind}, scopes ${p.scopes.join(', ') || '(none)'}`;
    const quorum = p.approvals && p.approvals.required > 1 ? `  approvals ${p.approvals.received}/${p.approvals.required}` : '';
    out(`  ${p.requestId}  ${name}  role ${p.role}  ${what}${quorum}  from ${p.remoteIp}  code ${p.confirmationCode}  last retry ${ago(p.ts)}`);
  }
  out(`Paired (${list.paired.length})`);
  for (const d of list.paired) {
    const name = field(d.label ?? d.displayName ?? d.clientId ?? '');
    const roles =
      d.grants
        .map(
          (g) =>
            `${g.role}[${g.scopes.join(',')}]${g.expiresAtMs ? `(until ${new Date(g.expiresAtMs).toISOString()}${g.scopesAfterExpiry?.length ? `, then ${g.scopesAfterExpiry.join(',')}` : ''})` : ''}`,
        )
        .join(' ') || '(no roles)';
    out(`  ${d.deviceId}  ${name}  ${roles}  ${d.connected ? 'connected' : `last seen ${ago(d.lastSeenAtMs)}`}  ${d.remoteIp ?? ''}`);
  }
}

/** `devices list` paging flags as device.pair.list params; undefined without any (the whole list). */
function listPageParams(values: Record<string, unknown>): { limit?: number; cursor?: string; search?: string } | undefined {
  const limit = positiveIntFlag(values, 'limit');
  if (limit !== undefined && limit > DEVICE_PAGE_MAX) throw new UsageError(`--limit must be at most ${DEVICE_PAGE_MAX}, got ${limit}`);
  const cursor = values.cursor as string | undefined;
  const search = values.search as string | undefined;
  if (cursor === '') throw new UsageError('--cursor needs the value printed after "more devices:"');
  if (search === '') throw new UsageError('--search needs a prefix of a device id or name');
  if (limit === undefined && cursor === undefined && search === undefined) return undefined;
  return { ...(limit === undefined ? {} : { limit }), ...(cursor === undefined ? {} : { cursor }), ...(search === undefined ? {} : { search }) };
}

/** A word as one POSIX shell argument: bare when it is safe, else single-quoted. */
function shellWord(s: string): string {
  return /^[A-Za-z0-9_./:@=+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The command that lists the next page, carrying the flags that chose this gateway and this listing. */
function nextPageCommand(values: Record<string, unknown>, page: { limit?: number; search?: string }, cursor: string): string {
  const words = ['clawgate', 'devices', 'list'];
  for (const flag of ['url', 'state-dir', 'token-file', 'tls-fingerprint', 'gateway-key']) {
    const v = values[flag];
    if (typeof v === 'string') words.push(`--${flag}`, shellWord(v));
  }
  if (page.limit !== undefined) words.push('--limit', String(page.limit));
  if (page.search !== undefined) words.push('--search', shellWord(page.search));
  words.push('--cursor', cursor);
  return words.join(' ');
}

type DeviceList = { pending: PendingView[]; paired: DeviceView[] };

/**
 * Every pending request, and the paired devices a reference can name: those the gateway finds
 * by searching for the reference itself (id prefix, label or name, every page of them), not every
 * device of a large gateway. A reference too long to be a search lists them all.
 */
async function candidatesFor(c: CliConnection, ref: string): Promise<DeviceList> {
  if (ref.length > DEVICE_SEARCH_MAX_CHARS) return c.request<DeviceList>('device.pair.list', {});
  type Page = DeviceList & { nextCursor: string | null };
  const first = await c.request<Page>('device.pair.list', { search: ref, limit: DEVICE_PAGE_MAX });
  const paired = [...first.paired];
  for (let cursor = first.nextCursor; cursor; ) {
    const page = await c.request<Page>('device.pair.list', { search: ref, limit: DEVICE_PAGE_MAX, cursor });
    paired.push(...page.paired);
    cursor = page.nextCursor;
  }
  return { pending: first.pending, paired };
}

/**
 * The device id a command-line reference names: a full id, a unique id prefix, or a label or
 * display name. A reference that matches nothing is passed on unchanged, so the gateway's own
 * error (with its catalogue code) reaches the user; an ambiguous one is refused here.
 */
async function deviceIdOf(c: CliConnection, ref: string, list?: DeviceList): Promise<string> {
  if (/^[0-9a-f]{64}$/.test(ref)) return ref;
  const { pending, paired } = list ?? (await candidatesFor(c, ref));
  const candidates = [
    ...paired.map((d) => ({ id: d.deviceId, names: [d.label, d.displayName] })),
    ...pending.map((p) => ({ id: p.deviceId, names: [p.displayName] })),
  ];
  const r = resolveRef(candidates, ref);
  if (r.kind === 'ambiguous') throw new CliFailure(ambiguityMessage('device', ref, r), 'clawgate devices list shows every device with its id');
  return r.kind === 'found' ? r.id : ref;
}

export async function devicesCommand(sub: string | undefined, args: string[]): Promise<number> {
  const { values, positionals, print } = parseGatewayCommand(args, {
    device: { type: 'string' },
    role: { type: 'string' },
    scope: { type: 'string', multiple: true },
    name: { type: 'string' },
    limit: { type: 'string' },
    cursor: { type: 'string' },
    search: { type: 'string' },
    ttl: { type: 'string' },
  });
  const ttl = values.ttl as string | undefined;
  if (ttl !== undefined && parseDuration(ttl) === null) throw new UsageError(`--ttl must be a duration like 8h, 30m, 1h30m or 7d (1s to 366d), got ${ttl}`);
  const role = values.role as string | undefined;
  if (role !== undefined && role !== 'operator' && role !== 'node') throw new UsageError(`--role must be operator or node, got ${role}`);

  switch (sub) {
    case 'list': {
      const page = listPageParams(values);
      return withGateway(values, async (c) => {
        const list = await c.request<{ pending: PendingView[]; paired: DeviceView[]; nextCursor?: string | null }>('device.pair.list', page ?? {});
        print(list, () => {
          printList(list);
          if (list.nextCursor) out(`more devices: ${nextPageCommand(values, page ?? {}, list.nextCursor)}`);
        });
        return 0;
      });
    }
    case 'approve': {
      const id = positionals[0];
      if (!id) throw new UsageError('usage: clawgate devices approve <requestId|device> [--ttl <duration>]  (no implicit "latest": name what you approve)');
      return withGateway(values, async (c) => {
        // A pending request id goes as it is; else the reference names a device (id, prefix or name).
        const list = await candidatesFor(c, id);
        const isRequest = list.pending.some((p) => p.requestId === id);
        const deviceId = isRequest ? null : await deviceIdOf(c, id, list);
        const target = deviceId !== null && (deviceId !== id || /^[0-9a-f]{64}$/.test(id)) ? { deviceId } : { requestId: id };
        const params = { ...target, ...(ttl !== undefined ? { ttl } : {}) };
        const res = await c.request<{
          approved: Array<{ requestId: string; deviceId: string; role: string; scopes: string[]; expiresAtMs?: number | null }>;
          awaiting?: Array<{ requestId: string; approvals: { received: number; required: number } }>;
        }>('device.pair.approve', params);
        print(res, () => {
          for (const a of res.approved)
            out(
              `approved ${a.requestId}: device ${a.deviceId} role ${a.role} scopes ${a.scopes.join(', ') || '(none)'}${a.expiresAtMs ? `; expires ${new Date(a.expiresAtMs).toISOString()}` : ''}`,
            );
          for (const a of res.awaiting ?? [])
            out(`approval recorded for ${a.requestId}: approvals ${a.approvals.received}/${a.approvals.required} (another approver must approve it too)`);
        });
        return 0;
      });
    }
    case 'extend': {
      const id = positionals[0] ?? (values.device as string | undefined);
      if (!id || !role || ttl === undefined) throw new UsageError('usage: clawgate devices extend <device> --role <operator|node> --ttl <duration>');
      return withGateway(values, async (c) => {
        const deviceId = await deviceIdOf(c, id);
        const res = await c.request<{ expiresAtMs: number; scopes: string[] }>('device.grant.extend', { deviceId, role, ttl });
        print(res, () => out(`extended ${role} of ${deviceId} (scopes ${res.scopes.join(', ') || '(none)'}) until ${new Date(res.expiresAtMs).toISOString()}`));
        return 0;
      });
    }
    case 'reject': {
      const id = positionals[0];
      if (!id) throw new UsageError('usage: clawgate devices reject <requestId|device>');
      return withGateway(values, async (c) => {
        // A request id, or a device (id, prefix or name) with a pending request.
        const list = await candidatesFor(c, id);
        let requestId = id;
        if (!list.pending.some((p) => p.requestId === id)) {
          const deviceId = await deviceIdOf(c, id, list);
          requestId = list.pending.find((p) => p.deviceId === deviceId)?.requestId ?? id;
        }
        const res = await c.request('device.pair.reject', { requestId });
        print(res, () => out(`rejected ${requestId}`));
        return 0;
      });
    }
    case 'remove': {
      const id = positionals[0] ?? (values.device as string | undefined);
      if (!id) throw new UsageError('usage: clawgate devices remove <deviceId>');
      return withGateway(values, async (c) => {
        const deviceId = await deviceIdOf(c, id);
        const res = await c.request('device.pair.remove', { deviceId });
        print(res, () => out(`removed ${deviceId}; its live connections were closed`));
        return 0;
      });
    }
    case 'rename': {
      const id = positionals[0] ?? (values.device as string | undefined);
      const name = positionals[1] ?? (values.name as string | undefined);
      if (!id || !name) throw new UsageError('usage: clawgate devices rename <deviceId> <name>');
      return withGateway(values, async (c) => {
        const deviceId = await deviceIdOf(c, id);
        const res = await c.request('device.pair.rename', { deviceId, label: name });
        print(res, () => out(`renamed ${deviceId} to ${field(name)}`));
        return 0;
      });
    }
    case 'rotate':
    case 'revoke': {
      const ref = values.device as string | undefined;
      if (!ref || !role)
        throw new UsageError(`usage: clawgate devices ${sub} --device <id> --role <operator|node>${sub === 'rotate' ? ' [--scope <s>…]' : ''}`);
      return withGateway(values, async (c) => {
        const deviceId = await deviceIdOf(c, ref);
        if (sub === 'rotate') {
          const scopes = values.scope as string[] | undefined;
          const res = await c.request<{ scopes: string[]; tokenDelivery: string; token?: string }>('device.token.rotate', {
            deviceId,
            role,
            ...(scopes ? { scopes } : {}),
          });
          print(res, () => out(`rotated ${role} token of ${deviceId}: scopes ${res.scopes.join(', ') || '(none)'}; ${rotationNextStep(res, role)}`));
        } else {
          const res = await c.request('device.token.revoke', { deviceId, role });
          print(res, () => out(`revoked ${role} of ${deviceId}; its live connections were closed`));
        }
        return 0;
      });
    }
    default:
      throw new UsageError(
        'usage: clawgate devices list [--limit <n>] [--cursor <c>] [--search <prefix>]|approve <id> [--ttl <d>]|extend <deviceId> --role <r> --ttl <d>|reject <requestId>|remove <deviceId>|rename <deviceId> <name>|rotate --device <id> --role <r> [--scope <s>…]|revoke --device <id> --role <r> [--json]',
      );
  }
}

export async function auditCommand(args: string[]): Promise<number> {
  const { values } = parseGatewayCommand(args, {
    verify: { type: 'boolean' },
    limit: { type: 'string' },
    store: { type: 'string' },
    'postgres-url': { type: 'string' },
    config: { type: 'string' },
  });
  const limit = positiveIntFlag(values, 'limit');
  if (values.verify) return verifyAuditCommand(values, limit);
  return withGateway(values, async (c) => {
    const entries: AuditEntry[] = [];
    for (let after = 0; ; ) {
      const page = await c.request<{ entries: AuditEntry[] }>('audit.list', { afterSeq: after, limit: 1000 });
      entries.push(...page.entries);
      if (page.entries.length < 1000) break;
      after = page.entries[page.entries.length - 1]?.seq ?? after;
    }
    const shown = entries.slice(-(limit ?? entries.length));
    if (values.json) out(JSON.stringify({ entries: shown }));
    else printAudit(shown);
    return 0;
  });
}

function printAudit(entries: AuditEntry[]): void {
  for (const e of entries)
    out(`${e.seq}\t${new Date(e.atMs).toISOString()}\t${field(e.actor)}\t${field(e.action)}\t${field(e.subject)}\t${e.data ? JSON.stringify(e.data) : ''}`);
}

/**
 * `clawgate audit --verify`: read the log straight from the store (the state dir's SQLite file,
 * or PostgreSQL with --store postgres) and check it against the anchor in the state dir, signed
 * with the gateway key kept there. Needs no running gateway and trusts none: run it on the
 * gateway host. Exit 0 only when the chain is intact and reaches the anchored head.
 */
async function verifyAuditCommand(values: Record<string, unknown>, limit: number | undefined): Promise<number> {
  const stateDir = resolveStateDir(values['state-dir'] as string | undefined);
  const file = values.config ? readConfigFile(values.config as string) : {};
  const choice = resolveStoreChoice(values.store as string | undefined, values['postgres-url'] as string | undefined, file.gateway ?? {});
  let entries: AuditEntry[];
  if (choice.kind === 'sqlite') {
    const path = join(stateDir, 'clawgate.sqlite');
    if (!existsSync(path)) {
      process.stderr.write(`no SQLite state at ${path}: pass the gateway's --state-dir (or --store postgres --postgres-url <url>)\n`);
      return 1;
    }
    // Read-only and outside the store adapter: verifying writes nothing, not even a migration.
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      entries = (db.prepare('SELECT * FROM audit ORDER BY seq').all() as AuditRow[]).map(toAudit);
    } finally {
      db.close();
    }
  } else {
    const { PostgresStore } = await import('../store/postgres/store.js');
    const store = await PostgresStore.open(choice.url as string);
    try {
      entries = await store.listAudit();
    } finally {
      await store.close();
    }
  }
  const read = readAuditAnchor(stateDir);
  const verdict: AuditVerdict = read.ok
    ? verifyAnchoredAudit(entries, read.anchor, readGatewayKeyFingerprint(stateDir))
    : { ok: false, problem: read.problem, brokenAtSeq: null };
  const shown = entries.slice(-(limit ?? entries.length));
  if (values.json) {
    out(
      JSON.stringify({
        entries: shown,
        verified: verdict.ok,
        brokenAtSeq: verdict.ok ? null : verdict.brokenAtSeq,
        ...(verdict.ok ? { anchoredSeq: verdict.anchoredSeq, unanchored: verdict.unanchored } : { problem: verdict.problem }),
      }),
    );
  } else {
    printAudit(shown);
    if (verdict.ok) {
      const head =
        verdict.anchoredSeq === null
          ? 'the log is empty'
          : `the head at entry ${verdict.anchoredSeq} is signed by this gateway's key (${join(stateDir, AUDIT_ANCHOR_FILE)})` +
            (verdict.unanchored > 0 ? `; ${verdict.unanchored} newer entries are chained but not yet anchored` : '');
      out(`audit log verified: ${verdict.entries} entries, chain intact; ${head}`);
    } else process.stderr.write(`audit log NOT intact: ${printable(verdict.problem)}\n`);
  }
  return verdict.ok ? 0 : 1;
}

/** What the person rotating a token should know about how the device gets its new one. */
function rotationNextStep(res: { tokenDelivery: string; token?: string }, role: string): string {
  if (res.token) return `new token: ${res.token}`;
  if (res.tokenDelivery === 'pushed-live') return 'the new token was pushed to the device over its live connection; it reconnects with it by itself';
  return (
    'the device was not connected, so the new token was withheld: the old token no longer works, and on its next connect the device needs ' +
    (role === 'node'
      ? 'the gateway token (`CLAWGATE_NODE_TOKEN=<gateway token> clawgate node run …` or `--token-file <path>`) or a new setup code (`clawgate qr --profile node`, then `clawgate node run --code-file <setup-code-file>`)'
      : 'the gateway token or a new setup code (`clawgate qr`)') +
    ', and then receives a fresh device token'
  );
}
