/** Node surface helpers shared by the store adapters. */
import type { NodeSurfaceRequest, UpsertNodeSurfaceInput } from '../core/store.js';

/** Surfaces arrive normalized (sorted, de-duplicated), so equality is element-wise. */
export function sameSurface(a: { caps: readonly string[]; commands: readonly string[] }, b: { caps: readonly string[]; commands: readonly string[] }): boolean {
  const eq = (x: readonly string[], y: readonly string[]) => x.length === y.length && x.every((v, i) => v === y[i]);
  return eq(a.caps, b.caps) && eq(a.commands, b.commands);
}

/**
 * The request after an upsert: the same surface keeps its id and creation time (refreshed),
 * anything else starts a new request.
 */
export function mergeNodeSurfaceRequest(
  existing: NodeSurfaceRequest | undefined,
  input: UpsertNodeSurfaceInput,
): { request: NodeSurfaceRequest; created: boolean; replacedRequestId?: string } {
  if (existing && sameSurface(existing, input)) {
    return { request: { ...existing, meta: input.meta, address: input.address, refreshedAtMs: input.atMs }, created: false };
  }
  const request: NodeSurfaceRequest = {
    requestId: input.requestId,
    deviceId: input.deviceId,
    caps: [...input.caps],
    commands: [...input.commands],
    meta: input.meta,
    address: input.address,
    createdAtMs: input.atMs,
    refreshedAtMs: input.atMs,
  };
  return existing ? { request, created: true, replacedRequestId: existing.requestId } : { request, created: true };
}
