/**
 * The import graph of a source folder, read from the TypeScript sources (not the build), and
 * the cycles in it. Type-only imports count: a cycle of types still ties the modules together.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';

/** Every relative `from '…'` / `import('…')` / side-effect import of a module, as a path inside `dir`. */
export function importsOf(source: string, fromFile: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g;
  for (const m of source.matchAll(re)) {
    const spec = m[1] as string;
    const joined = posix.normalize(posix.join(posix.dirname(fromFile), spec));
    out.push(joined.replace(/\.js$/, '.ts'));
  }
  return out;
}

/** Module → the modules of the same folder tree it imports (paths relative to `dir`). */
export function importGraph(dir: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const path = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(path);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) graph.set(path, []);
    }
  };
  walk('');
  for (const file of graph.keys()) {
    const text = readFileSync(join(dir, file), 'utf8');
    graph.set(
      file,
      importsOf(text, file).filter((p) => graph.has(p)),
    );
  }
  return graph;
}

/** The strongly connected components with more than one module (or a module importing itself): each is a cycle. */
export function importCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  // Tarjan's algorithm, iterative enough for a few hundred modules.
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) as number, idx.get(w) as number));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(scc.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) visit(v);
  return cycles;
}
