/** PostgreSQL store, domain: node command surfaces and the requests asking for them. */
import { mergeNodeSurfaceRequest } from '../nodes-shared.js';
import type { AuditInput, NodeSurfaceRecord, NodeSurfaceRequest, NodeSurfaceStore, UpsertNodeSurfaceInput } from '../types.js';
import type { PgDb, PgQuery } from './db.js';

export async function nodeRequestTx(tx: PgQuery, where: 'request_id' | 'device_id', key: string): Promise<NodeSurfaceRequest | undefined> {
  const r = await tx.one<{ body_json: string }>(`SELECT body_json FROM node_surface_requests WHERE ${where} = $1`, [key]);
  return r ? (JSON.parse(r.body_json) as NodeSurfaceRequest) : undefined;
}

export function postgresNodeSurfaces(core: PgDb): NodeSurfaceStore {
  return {
    async getNodeSurface(deviceId: string) {
      const r = await core.q.one<{ body_json: string }>('SELECT body_json FROM node_surfaces WHERE device_id = $1', [deviceId]);
      return r ? (JSON.parse(r.body_json) as NodeSurfaceRecord) : null;
    },
    async listNodeSurfaces() {
      return (await core.q.all<{ body_json: string }>('SELECT body_json FROM node_surfaces ORDER BY approved_at_ms, ord')).map(
        (r) => JSON.parse(r.body_json) as NodeSurfaceRecord,
      );
    },
    async upsertNodeSurfaceRequest(input: UpsertNodeSurfaceInput) {
      return core.write(async (tx) => {
        const res = mergeNodeSurfaceRequest(await nodeRequestTx(tx, 'device_id', input.deviceId), input);
        await tx.run('DELETE FROM node_surface_requests WHERE device_id = $1', [input.deviceId]);
        await tx.run('INSERT INTO node_surface_requests (request_id, device_id, body_json, created_at_ms) VALUES ($1,$2,$3,$4)', [
          res.request.requestId,
          input.deviceId,
          JSON.stringify(res.request),
          res.request.createdAtMs,
        ]);
        if (res.created) await core.appendAuditTx(tx, input.audit);
        return res;
      });
    },
    async getNodeSurfaceRequest(requestId: string) {
      return (await nodeRequestTx(core.q, 'request_id', requestId)) ?? null;
    },
    async listNodeSurfaceRequests() {
      return (await core.q.all<{ body_json: string }>('SELECT body_json FROM node_surface_requests ORDER BY created_at_ms, ord')).map(
        (r) => JSON.parse(r.body_json) as NodeSurfaceRequest,
      );
    },
    async approveNodeSurface(requestId: string, atMs: number, approvedBy: string, audit: AuditInput) {
      return core.write(async (tx) => {
        const r = await nodeRequestTx(tx, 'request_id', requestId);
        if (!r) return null;
        const surface: NodeSurfaceRecord = { deviceId: r.deviceId, caps: r.caps, commands: r.commands, requestId, approvedAtMs: atMs, approvedBy };
        await tx.run('DELETE FROM node_surface_requests WHERE request_id = $1', [requestId]);
        await tx.run(
          'INSERT INTO node_surfaces (device_id, body_json, approved_at_ms) VALUES ($1,$2,$3) ON CONFLICT (device_id) DO UPDATE SET body_json = excluded.body_json, approved_at_ms = excluded.approved_at_ms',
          [r.deviceId, JSON.stringify(surface), atMs],
        );
        await core.appendAuditTx(tx, audit);
        return surface;
      });
    },
    async deleteNodeSurfaceRequest(requestId: string, audit: AuditInput) {
      return core.write(async (tx) => {
        const n = await tx.run('DELETE FROM node_surface_requests WHERE request_id = $1', [requestId]);
        if (n > 0) await core.appendAuditTx(tx, audit);
        return n > 0;
      });
    },
  };
}
