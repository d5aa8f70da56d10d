/** SQLite store, domain: node command surfaces and the requests asking for them. */
import { mergeNodeSurfaceRequest } from '../nodes-shared.js';
import type { AuditInput, NodeSurfaceRecord, NodeSurfaceRequest, NodeSurfaceStore, UpsertNodeSurfaceInput } from '../types.js';
import type { SqliteDb } from './db.js';

export function nodeRequestSync(core: SqliteDb, where: 'request_id' | 'device_id', key: string): NodeSurfaceRequest | undefined {
  const r = core.stmt(`SELECT body_json FROM node_surface_requests WHERE ${where} = ?`).get(key) as { body_json: string } | undefined;
  return r ? (JSON.parse(r.body_json) as NodeSurfaceRequest) : undefined;
}

export function sqliteNodeSurfaces(core: SqliteDb): NodeSurfaceStore {
  return {
    async getNodeSurface(deviceId: string) {
      const r = core.stmt('SELECT body_json FROM node_surfaces WHERE device_id = ?').get(deviceId) as { body_json: string } | undefined;
      return r ? (JSON.parse(r.body_json) as NodeSurfaceRecord) : null;
    },
    async listNodeSurfaces() {
      return (core.stmt('SELECT body_json FROM node_surfaces ORDER BY approved_at_ms').all() as Array<{ body_json: string }>).map(
        (r) => JSON.parse(r.body_json) as NodeSurfaceRecord,
      );
    },
    async upsertNodeSurfaceRequest(input: UpsertNodeSurfaceInput) {
      return core.tx(() => {
        const res = mergeNodeSurfaceRequest(nodeRequestSync(core, 'device_id', input.deviceId), input);
        core.stmt('DELETE FROM node_surface_requests WHERE device_id = ?').run(input.deviceId);
        core
          .stmt('INSERT INTO node_surface_requests (request_id, device_id, body_json, created_at_ms) VALUES (?,?,?,?)')
          .run(res.request.requestId, input.deviceId, JSON.stringify(res.request), res.request.createdAtMs);
        if (res.created) core.appendAuditSync(input.audit);
        return res;
      });
    },
    async getNodeSurfaceRequest(requestId: string) {
      return nodeRequestSync(core, 'request_id', requestId) ?? null;
    },
    async listNodeSurfaceRequests() {
      return (core.stmt('SELECT body_json FROM node_surface_requests ORDER BY created_at_ms, rowid').all() as Array<{ body_json: string }>).map(
        (r) => JSON.parse(r.body_json) as NodeSurfaceRequest,
      );
    },
    async approveNodeSurface(requestId: string, atMs: number, approvedBy: string, audit: AuditInput) {
      return core.tx(() => {
        const r = nodeRequestSync(core, 'request_id', requestId);
        if (!r) return null;
        const surface: NodeSurfaceRecord = { deviceId: r.deviceId, caps: r.caps, commands: r.commands, requestId, approvedAtMs: atMs, approvedBy };
        core.stmt('DELETE FROM node_surface_requests WHERE request_id = ?').run(requestId);
        core
          .stmt(
            'INSERT INTO node_surfaces (device_id, body_json, approved_at_ms) VALUES (?,?,?) ON CONFLICT(device_id) DO UPDATE SET body_json = excluded.body_json, approved_at_ms = excluded.approved_at_ms',
          )
          .run(r.deviceId, JSON.stringify(surface), atMs);
        core.appendAuditSync(audit);
        return surface;
      });
    },
    async deleteNodeSurfaceRequest(requestId: string, audit: AuditInput) {
      return core.tx(() => {
        const n = core.stmt('DELETE FROM node_surface_requests WHERE request_id = ?').run(requestId).changes;
        if (n > 0) core.appendAuditSync(audit);
        return n > 0;
      });
    },
  };
}
