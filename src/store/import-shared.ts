/**
 * The import decision every adapter shares: given what the target already holds for one device,
 * which rows an import adds. Pure, so the memory, SQLite and PostgreSQL adapters (and a dry run)
 * report exactly the same thing.
 */
import type { Role } from '@clawgate/protocol/frames';
import type {
  AuditInput,
  DeviceImportReport,
  DeviceRecord,
  GrantRecord,
  ImportDevicesInput,
  ImportedDevice,
  ImportedGrant,
  ImportedToken,
  NodeSurfaceRecord,
  TokenRecord,
} from './types.js';

/** What the target holds for one device id. */
export interface ExistingDevice {
  device: DeviceRecord | null;
  grants: GrantRecord[];
  tokens: TokenRecord[];
  surface: NodeSurfaceRecord | null;
}

export interface DeviceImportPlan {
  report: DeviceImportReport;
  /** The device row to create (null: it exists, or the device is skipped). */
  newDevice: DeviceRecord | null;
  grants: GrantRecord[];
  tokens: ImportedToken[];
  surface: NodeSurfaceRecord | null;
  audit: AuditInput | null;
}

/** The request id an imported surface carries (it came from no request of this gateway). */
export const IMPORTED_SURFACE_REQUEST = 'imported';

export function planDeviceImport(existing: ExistingDevice, d: ImportedDevice, input: Pick<ImportDevicesInput, 'source' | 'atMs' | 'actor'>): DeviceImportPlan {
  const report: DeviceImportReport = { deviceId: d.deviceId, outcome: 'unchanged', roles: [], tokens: [], surface: false, notes: [] };
  const empty: DeviceImportPlan = { report, newDevice: null, grants: [], tokens: [], surface: null, audit: null };
  if (existing.device && existing.device.publicKey !== d.publicKey) {
    report.outcome = 'skipped';
    report.notes.push('this device id is paired here with a different public key');
    return empty;
  }
  const held = new Set<Role>(existing.grants.map((g) => g.role));
  const grants: GrantRecord[] = [];
  for (const g of d.grants) {
    if (held.has(g.role)) continue;
    grants.push(grantOf(d.deviceId, g));
  }
  const added = new Set(grants.map((g) => g.role));
  const tokens: ImportedToken[] = [];
  for (const t of d.tokens) {
    if (added.has(t.role)) {
      tokens.push(t);
      continue;
    }
    const here = existing.tokens.find((x) => x.role === t.role && x.revokedAtMs === undefined);
    // A role already paired here keeps its own token: importing the old one again would bring
    // back a credential this gateway has rotated or revoked since.
    if (here?.tokenId !== t.tokenId && held.has(t.role)) report.notes.push(`${t.role}: kept the token this gateway already holds`);
  }
  let surface: NodeSurfaceRecord | null = null;
  const hasNode = added.has('node') || held.has('node');
  if (d.surface && hasNode && !existing.surface) {
    surface = {
      deviceId: d.deviceId,
      caps: [...d.surface.caps],
      commands: [...d.surface.commands],
      requestId: IMPORTED_SURFACE_REQUEST,
      approvedAtMs: d.surface.approvedAtMs,
      approvedBy: input.actor,
    };
  }
  report.roles = grants.map((g) => g.role);
  report.tokens = tokens.map((t) => t.role);
  report.surface = surface !== null;
  const newDevice: DeviceRecord | null = existing.device
    ? null
    : {
        deviceId: d.deviceId,
        publicKey: d.publicKey,
        ...d.meta,
        label: d.label,
        createdAtMs: d.createdAtMs,
        lastSeenAtMs: d.lastSeenAtMs,
      };
  if (grants.length === 0 && tokens.length === 0 && surface === null) {
    if (!existing.device && d.grants.length === 0) {
      report.outcome = 'skipped';
      report.notes.push('no approved role');
    }
    return empty;
  }
  report.outcome = existing.device ? 'merged' : 'imported';
  const audit: AuditInput = {
    atMs: input.atMs,
    actor: input.actor,
    action: 'device.imported',
    subject: d.deviceId,
    data: { source: input.source, roles: report.roles, tokenIds: tokens.map((t) => t.tokenId), surface: report.surface },
  };
  return { report, newDevice, grants, tokens, surface, audit };
}

function grantOf(deviceId: string, g: ImportedGrant): GrantRecord {
  return { deviceId, role: g.role, scopes: [...g.scopes], epoch: 1, approvedAtMs: g.approvedAtMs, approvedVia: g.approvedVia };
}

/** Devices read, planned and written together inside an import's transaction. */
export const IMPORT_BATCH_DEVICES = 500;

/** `items` in arrays of at most `size`, read lazily. */
export function* batchesOf<T>(items: Iterable<T>, size: number): Generator<T[]> {
  let batch: T[] = [];
  for (const item of items) {
    batch.push(item);
    if (batch.length === size) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

/**
 * Counts, batch by batch, the devices of the import that the target already holds under the
 * same key; the rest of the target (`total` minus those) is what a non-merge import refuses.
 */
export class ImportTally {
  private readonly ids = new Set<string>();
  private same = 0;
  constructor(private readonly totalDevices: number) {}
  add(batch: readonly ImportedDevice[], existing: Map<string, ExistingDevice>): void {
    for (const d of batch) {
      if (this.ids.has(d.deviceId)) continue;
      this.ids.add(d.deviceId);
      const e = existing.get(d.deviceId);
      if (e?.device && e.device.publicKey === d.publicKey) this.same += 1;
    }
  }
  /** Devices of the target that this import does not account for (its id is not imported, or another key holds it). */
  get otherDevices(): number {
    return this.totalDevices - this.same;
  }
}

/** Thrown inside an import's transaction to roll it back when the target turns out not to be empty. */
export class ImportRefused extends Error {
  constructor(readonly otherDevices: number) {
    super('import refused: the target holds other devices');
  }
}
