/**
 * Reading an OpenClaw 2026.x state dir for `clawgate import openclaw`, strictly read-only:
 *
 * - `<dir>/state/openclaw.sqlite`, table `device_pairing_paired`: one row per paired device
 *   (`device_id`, `public_key`, `display_name`, `operator_label`, `platform`, `device_family`,
 *   `client_id`, `client_mode`, `role`, `roles_json`, `scopes_json`, `approved_scopes_json`,
 *   `tokens_json` = `{<role>: {token, role, scopes, createdAtMs, rotatedAtMs?, revokedAtMs?,
 *   lastUsedAtMs?}}`, `approved_via`, `node_surface_json` = `{caps, commands, approvedAtMs, …}`,
 *   `created_at_ms`, `approved_at_ms`, `last_seen_at_ms`).
 * - the legacy files older releases kept before that table: `<dir>/devices/paired.json` (a map
 *   of device id to the same record in camelCase) and `<dir>/nodes/paired.json` (node id to
 *   `{caps, commands, …}`, folded into the device with that id). As in OpenClaw's own migration,
 *   the database row wins over a legacy record of the same device.
 * - `<dir>/openclaw.json`: `gateway.auth.token` / `gateway.auth.password` when they are plain
 *   strings (references to env vars or secret stores are reported, not resolved).
 *
 * Every field is validated here, at the edge: a record that does not fit is skipped with a
 * reason, never half imported. Tokens leave this module only as hashes.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Role } from '@clawgate/protocol/frames';
import { normalizeScopes } from '@clawgate/protocol/scopes';
import { deviceIdOf, parsePublicKey } from '../core/identity.js';
import { hashImportedToken, isImportedTokenShape } from '../core/secrets.js';
import type { ApprovedVia, DeviceMeta, ImportedDevice, ImportedGrant, ImportedToken } from '../store/types.js';
import { openSnapshot } from './sqlite-snapshot.js';

export interface SourceSkip {
  deviceId: string;
  reason: string;
}

export interface SourceDevice {
  device: ImportedDevice;
  /** Parts of the record left behind (a revoked token, an unknown role, a pending surface …). */
  notes: string[];
  from: 'sqlite' | 'legacy-json';
}

export interface OpenClawSecrets {
  token?: string | undefined;
  password?: string | undefined;
  /** Why a configured secret could not be taken over. */
  notes: string[];
}

const MAX_TEXT = 256;
const MAX_COMMANDS = 512;
const COMMAND_RE = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;
const SCOPE_RE = /^[a-z][a-z0-9._:-]{0,63}$/;
const ROLES: readonly Role[] = ['operator', 'node'];
const VIA: Record<string, ApprovedVia> = { silent: 'silent', manual: 'manual', owner: 'owner', bootstrap: 'bootstrap' };

export function openclawDbPath(dir: string): string {
  return join(dir, 'state', 'openclaw.sqlite');
}

/** Plain text within bounds and free of control characters, else undefined. */
function text(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  const t = v.trim();
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (t === '' || t.length > MAX_TEXT || /[\u0000-\u001f\u007f]/.test(t)) return undefined;
  return t;
}

function int(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

function json(v: unknown): unknown {
  if (typeof v !== 'string') return v ?? undefined;
  try {
    return JSON.parse(v) as unknown;
  } catch {
    return undefined;
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function strings(v: unknown, re: RegExp, max: number): string[] | null {
  if (!Array.isArray(v) || v.length > max) return null;
  const out: string[] = [];
  for (const s of v) {
    if (typeof s !== 'string' || !re.test(s)) return null;
    if (!out.includes(s)) out.push(s);
  }
  return out;
}

/** The camelCase record OpenClaw keeps per paired device (legacy JSON, or a database row mapped to it). */
interface RawPaired {
  deviceId: unknown;
  publicKey: unknown;
  displayName?: unknown;
  operatorLabel?: unknown;
  platform?: unknown;
  deviceFamily?: unknown;
  clientId?: unknown;
  clientMode?: unknown;
  role?: unknown;
  roles?: unknown;
  scopes?: unknown;
  approvedScopes?: unknown;
  tokens?: unknown;
  approvedVia?: unknown;
  nodeSurface?: unknown;
  pendingNodeSurface?: unknown;
  createdAtMs?: unknown;
  approvedAtMs?: unknown;
  lastSeenAtMs?: unknown;
}

interface PairedRow {
  device_id: string;
  public_key: string;
  display_name: string | null;
  operator_label: string | null;
  platform: string | null;
  device_family: string | null;
  client_id: string | null;
  client_mode: string | null;
  role: string | null;
  roles_json: string | null;
  scopes_json: string | null;
  approved_scopes_json: string | null;
  tokens_json: string | null;
  approved_via: string | null;
  node_surface_json: string | null;
  pending_node_surface_json: string | null;
  created_at_ms: number;
  approved_at_ms: number;
  last_seen_at_ms: number | null;
}

function fromRow(r: PairedRow): RawPaired {
  return {
    deviceId: r.device_id,
    publicKey: r.public_key,
    displayName: r.display_name ?? undefined,
    operatorLabel: r.operator_label ?? undefined,
    platform: r.platform ?? undefined,
    deviceFamily: r.device_family ?? undefined,
    clientId: r.client_id ?? undefined,
    clientMode: r.client_mode ?? undefined,
    role: r.role ?? undefined,
    roles: json(r.roles_json),
    scopes: json(r.scopes_json),
    approvedScopes: json(r.approved_scopes_json),
    tokens: json(r.tokens_json),
    approvedVia: r.approved_via ?? undefined,
    nodeSurface: json(r.node_surface_json),
    pendingNodeSurface: json(r.pending_node_surface_json),
    createdAtMs: r.created_at_ms,
    approvedAtMs: r.approved_at_ms,
    lastSeenAtMs: r.last_seen_at_ms ?? undefined,
  };
}

/** Convert one OpenClaw record; a string is the reason it cannot be imported at all. */
export function convertPaired(raw: RawPaired, legacySurface?: unknown): { device: ImportedDevice; notes: string[] } | string {
  const deviceId = typeof raw.deviceId === 'string' ? raw.deviceId.trim() : '';
  if (!/^[0-9a-f]{64}$/.test(deviceId)) return 'device id is not a 64-hex key fingerprint';
  const publicKey = typeof raw.publicKey === 'string' ? raw.publicKey.trim() : '';
  const rawKey = parsePublicKey(publicKey);
  if (!rawKey) return 'public key is not a raw Ed25519 key in base64url';
  if (deviceIdOf(rawKey) !== deviceId) return 'device id does not match its public key';
  const createdAtMs = int(raw.createdAtMs);
  const approvedAtMs = int(raw.approvedAtMs);
  if (createdAtMs === undefined || approvedAtMs === undefined) return 'creation or approval time missing';
  const notes: string[] = [];

  const declared = Array.isArray(raw.roles) ? raw.roles : typeof raw.role === 'string' ? [raw.role] : [];
  const roles: Role[] = [];
  for (const r of declared) {
    if (ROLES.includes(r as Role)) {
      if (!roles.includes(r as Role)) roles.push(r as Role);
    } else notes.push(`role ${typeof r === 'string' ? JSON.stringify(r.slice(0, 40)) : '(not a string)'} is not one clawgate knows: left out`);
  }
  if (roles.length === 0) return 'no approved operator or node role';

  const via = typeof raw.approvedVia === 'string' ? VIA[raw.approvedVia] : undefined;
  const grants: ImportedGrant[] = [];
  for (const role of roles) {
    let scopes: string[] = [];
    if (role === 'operator') {
      const approved = strings(raw.approvedScopes ?? raw.scopes ?? [], SCOPE_RE, 64);
      if (approved === null) {
        notes.push('operator: approved scopes are malformed: role left out');
        continue;
      }
      scopes = normalizeScopes(approved.filter((s) => s.startsWith('operator.')));
    }
    grants.push({ role, scopes, approvedAtMs, approvedVia: via ?? 'manual' });
  }
  if (grants.length === 0) return 'no importable role';

  const tokens: ImportedToken[] = [];
  const held = isRecord(raw.tokens) ? raw.tokens : {};
  for (const g of grants) {
    const t = held[g.role];
    if (!isRecord(t)) {
      notes.push(`${g.role}: no device token in OpenClaw (the device gets one on its next approved connect)`);
      continue;
    }
    if (int(t.revokedAtMs) !== undefined) {
      notes.push(`${g.role}: token was revoked in OpenClaw: not imported`);
      continue;
    }
    if (typeof t.token !== 'string' || !isImportedTokenShape(t.token)) {
      notes.push(`${g.role}: token has an unexpected shape: not imported`);
      continue;
    }
    const { tokenId, secretHash } = hashImportedToken(t.token);
    tokens.push({
      role: g.role,
      tokenId,
      secretHash,
      createdAtMs: int(t.createdAtMs) ?? approvedAtMs,
      rotatedAtMs: int(t.rotatedAtMs),
      lastUsedAtMs: int(t.lastUsedAtMs),
    });
  }

  let surface: ImportedDevice['surface'];
  const ns = isRecord(raw.nodeSurface) ? raw.nodeSurface : isRecord(legacySurface) ? legacySurface : undefined;
  if (ns && roles.includes('node')) {
    const commands = strings(ns.commands ?? [], COMMAND_RE, MAX_COMMANDS);
    const caps = strings(ns.caps ?? [], COMMAND_RE, MAX_COMMANDS);
    if (commands === null || caps === null) notes.push('node: approved command surface is malformed: not imported (the node asks again)');
    else surface = { caps, commands, approvedAtMs: int(ns.approvedAtMs) ?? approvedAtMs };
  }
  if (raw.pendingNodeSurface !== undefined && raw.pendingNodeSurface !== null) {
    notes.push('node: a surface change waiting for approval in OpenClaw is not imported (the node asks again)');
  }

  const meta: DeviceMeta = {};
  for (const k of ['displayName', 'platform', 'deviceFamily', 'clientId', 'clientMode'] as const) {
    const v = text(raw[k]);
    if (v !== undefined) meta[k] = v;
    else if (raw[k] !== undefined && raw[k] !== null) notes.push(`${k} is not plain text: left out`);
  }
  const device: ImportedDevice = {
    deviceId,
    publicKey,
    meta,
    label: text(raw.operatorLabel),
    createdAtMs,
    lastSeenAtMs: int(raw.lastSeenAtMs),
    grants,
    tokens,
    surface,
  };
  return { device, notes };
}

function readJsonFile(path: string): unknown {
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, 'utf8')) as unknown;
}

/**
 * Every paired device of the state dir, database rows first (streamed row by row), then legacy
 * records of ids the database does not hold. Throws when the dir holds neither a database nor
 * legacy files, or a file cannot be read.
 */
export function* readOpenClawDevices(dir: string, skipped: SourceSkip[]): Generator<SourceDevice> {
  const dbPath = openclawDbPath(dir);
  const legacyDevicesPath = join(dir, 'devices', 'paired.json');
  const legacyNodesPath = join(dir, 'nodes', 'paired.json');
  const haveDb = existsSync(dbPath);
  if (!haveDb && !existsSync(legacyDevicesPath)) {
    throw new Error(`no OpenClaw state in ${dir} (neither state/openclaw.sqlite nor devices/paired.json)`);
  }
  const legacyNodes = readJsonFile(legacyNodesPath);
  const nodeRows = isRecord(legacyNodes) ? legacyNodes : {};
  const seen = new Set<string>();
  if (haveDb) {
    // An in-memory snapshot: even a read-only open would write its read mark into OpenClaw's -shm.
    const db = openSnapshot(dbPath);
    try {
      const table = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'device_pairing_paired'").get();
      if (!table) throw new Error(`${dbPath} has no device_pairing_paired table: not an OpenClaw 2026.x state database`);
      for (const row of db.prepare('SELECT * FROM device_pairing_paired ORDER BY approved_at_ms, device_id').iterate() as IterableIterator<PairedRow>) {
        const id = String(row.device_id).trim();
        seen.add(id);
        const out = convertPaired(fromRow(row), nodeRows[id]);
        if (typeof out === 'string') skipped.push({ deviceId: id.slice(0, 64), reason: out });
        else yield { ...out, from: 'sqlite' };
      }
    } finally {
      db.close();
    }
  }
  const legacy = readJsonFile(legacyDevicesPath);
  if (isRecord(legacy)) {
    for (const [rawId, rec] of Object.entries(legacy)) {
      const id = rawId.trim();
      if (seen.has(id)) continue;
      seen.add(id);
      if (!isRecord(rec)) {
        skipped.push({ deviceId: id.slice(0, 64), reason: 'legacy record is not an object' });
        continue;
      }
      const out = convertPaired({ ...rec, deviceId: id } as RawPaired, nodeRows[id]);
      if (typeof out === 'string') skipped.push({ deviceId: id.slice(0, 64), reason: out });
      else yield { ...out, from: 'legacy-json' };
    }
  }
}

/** `gateway.auth.token` / `gateway.auth.password` of `<dir>/openclaw.json`, when plain strings. */
export function readOpenClawSecrets(dir: string): OpenClawSecrets {
  const path = join(dir, 'openclaw.json');
  const notes: string[] = [];
  if (!existsSync(path)) return { notes };
  let cfg: unknown;
  try {
    cfg = JSON.parse(readFileSync(path, 'utf8')) as unknown;
  } catch {
    notes.push('openclaw.json is not plain JSON: its gateway token and password were not read');
    return { notes };
  }
  const auth = isRecord(cfg) && isRecord(cfg.gateway) && isRecord(cfg.gateway.auth) ? cfg.gateway.auth : {};
  const pick = (name: 'token' | 'password'): string | undefined => {
    const v = auth[name];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') {
      notes.push(`gateway.auth.${name} is a secret reference: resolve it yourself and pass --${name} to clawgate gateway run`);
      return undefined;
    }
    const t = v.trim();
    if (/^\$\{[^}]+\}$/.test(t)) {
      notes.push(`gateway.auth.${name} names an environment variable: keep setting it and pass --${name} to clawgate gateway run`);
      return undefined;
    }
    // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
    if (t === '' || t.length > 1024 || /[\u0000-\u001f\u007f]/.test(t)) {
      notes.push(`gateway.auth.${name} is empty or not plain text: not imported`);
      return undefined;
    }
    return t;
  };
  return { token: pick('token'), password: pick('password'), notes };
}
