/**
 * Naming a device or node on the command line: its full id, its name (label or display name,
 * any case), or a unique prefix of its id. A name or prefix that fits more than one is refused
 * with the candidates listed, never guessed.
 */
import { printable } from '@clawgate/protocol/text';

/** Prefixes shorter than this are too likely to be typos of something else. */
export const MIN_ID_PREFIX_CHARS = 6;

export interface Candidate {
  id: string;
  names: ReadonlyArray<string | null | undefined>;
}

export type Resolution = { kind: 'found'; id: string } | { kind: 'none' } | { kind: 'ambiguous'; by: 'name' | 'id prefix'; candidates: Candidate[] };

export function resolveRef(candidates: readonly Candidate[], ref: string): Resolution {
  const unique = [...new Map(candidates.map((c) => [c.id, c])).values()];
  if (unique.some((c) => c.id === ref)) return { kind: 'found', id: ref };
  const lower = ref.toLowerCase();
  const byName = unique.filter((c) => c.names.some((n) => typeof n === 'string' && n.toLowerCase() === lower));
  if (byName.length === 1) return { kind: 'found', id: (byName[0] as Candidate).id };
  if (byName.length > 1) return { kind: 'ambiguous', by: 'name', candidates: byName };
  const byPrefix = ref.length >= MIN_ID_PREFIX_CHARS ? unique.filter((c) => c.id.startsWith(lower)) : [];
  if (byPrefix.length === 1) return { kind: 'found', id: (byPrefix[0] as Candidate).id };
  if (byPrefix.length > 1) return { kind: 'ambiguous', by: 'id prefix', candidates: byPrefix };
  return { kind: 'none' };
}

/** "more than one device has the id prefix 3f9c: 3f9c…(laptop), 3f9c…(phone); pass more of the id". */
export function ambiguityMessage(what: string, ref: string, r: Extract<Resolution, { kind: 'ambiguous' }>): string {
  const list = r.candidates
    .map((c) => {
      const name = c.names.find((n) => typeof n === 'string' && n !== '');
      return `  ${c.id}${name ? `  ${printable(name)}` : ''}`;
    })
    .join('\n');
  return `more than one ${what} ${r.by === 'name' ? 'is named' : 'has the id prefix'} ${printable(ref)}:\n${list}\npass the full id (or enough of it to be unique)`;
}
