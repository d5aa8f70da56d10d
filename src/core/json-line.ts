/**
 * Pieces of the gateway's JSON log lines (stderr and the in-memory ring), built with as little
 * garbage as the format allows: two lines are written per connect, and every object the connect
 * path leaves behind brings the next young-generation collection sooner.
 */

/** `ms` as an ISO 8601 string, remembered for the next call in the same millisecond. */
export function isoClock(now: () => number = Date.now): () => string {
  let lastMs = Number.NaN;
  let lastIso = '';
  return () => {
    const ms = now();
    if (ms !== lastMs) {
      lastMs = ms;
      lastIso = new Date(ms).toISOString();
    }
    return lastIso;
  };
}

/**
 * The JSON object whose members are `head` (serialized members, without braces) followed by those
 * of `fields`, serialized as they are instead of merged into a new object first; null when
 * `fields` does not serialize to an object (its own toJSON), for the caller's general path.
 */
export function jsonWithLeadingMembers(head: string, fields: Record<string, unknown> | undefined): string | null {
  if (fields === undefined || fields === null) return `{${head}}`;
  const rest = JSON.stringify(fields);
  if (rest?.charCodeAt(0) !== 0x7b) return null;
  // `{}` (no field, or only undefined ones) closes the object; otherwise its members follow.
  return rest.length > 2 ? `{${head},${rest.slice(1)}` : `{${head}}`;
}
