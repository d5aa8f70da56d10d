/**
 * What the gateway core reports to an operator's monitoring. The core only calls this small
 * interface; the composition root (src/app.ts) binds it to a Prometheus registry, so nothing
 * under src/core knows the exposition format or imports a metrics library. Every method is
 * fire-and-forget and must never throw into the caller.
 */
export interface GatewayMetrics {
  /** A connect finished: `outcome` is `ok`, `waiting` or the refusal's catalogue detail code. */
  connect(outcome: string, authMethod: string): void;
  /** A pending pairing request was approved by an operator, `latencyMs` after it was filed. */
  approval(latencyMs: number): void;
  /** A live session was closed because its authority went away, `latencyMs` after the change was made. */
  revocationClose(reason: string, latencyMs: number): void;
  /** A node.invoke finished (`ok`, or the catalogue detail code of its failure). */
  invoke(outcome: string, latencyMs: number): void;
  /** A wrong credential ran out the failure budget of an address for one credential kind. */
  lockout(kind: string): void;
  /** The retention prune deleted `count` records of one kind. */
  pruned(kind: string, count: number): void;
}

export const noMetrics: GatewayMetrics = {
  connect() {},
  approval() {},
  revocationClose() {},
  invoke() {},
  lockout() {},
  pruned() {},
};
