/**
 * What every `clawgate` command shares for reading its command line: the usage error (exit 2)
 * and the parser. The parser accepts the flags of the command being run (its spec in
 * registry.ts, installed by the dispatcher) on top of the ones a module asks for, so the spec
 * that prints `--help` is also what the command line is checked against.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';

/** A command line the CLI cannot run: printed with the usage, exit code 2. */
export class UsageError extends Error {}

type ParseOptions = NonNullable<ParseArgsConfig['options']>;
let commandOptions: ParseOptions = {};

/** The dispatcher installs the parse options of the command it runs (one command per process). */
export function useCommandOptions(options: ParseOptions): void {
  commandOptions = options;
}

export function parse(
  args: string[],
  options: ParseArgsConfig['options'],
): { values: Record<string, string | boolean | string[] | undefined>; positionals: string[] } {
  try {
    const r = parseArgs({ args, options: { ...commandOptions, ...options }, allowPositionals: true, strict: true });
    return { values: r.values as Record<string, string | boolean | string[] | undefined>, positionals: r.positionals };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

/** Levenshtein distance: how many one-character edits turn `a` into `b`. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length] as number;
}

/** The candidate closest to `word` (ties: the first listed); undefined when there is none. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const c of candidates) {
    // A candidate that starts with what was typed is the likeliest meaning of an abbreviation.
    const d = c.startsWith(word) ? 0.5 : editDistance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}
