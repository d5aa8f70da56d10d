/**
 * The gateway core stays a set of modules that can be read, tested and replaced one at a time:
 * no import cycle inside src/core (a cycle makes every module of it load, and change, together).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { importCycles, importGraph, importsOf } from './helpers/import-graph.js';

// Tests run from dist/test; the sources live at the repo root.
const coreDir = fileURLToPath(new URL('../../src/core', import.meta.url));

test('src/core has no import cycle', () => {
  const graph = importGraph(coreDir);
  assert.ok(graph.size > 10 && graph.has('gateway.ts'), `read the core sources (${graph.size} modules)`);
  const cycles = importCycles(graph);
  assert.deepEqual(
    cycles.map((c) => c.join(' ↔ ')),
    [],
    'a core module imports (directly or through others) a module that imports it back: move the shared type or function into its own module',
  );
});

test('no core module depends on the Gateway facade: each receives the narrow part it uses', () => {
  const graph = importGraph(coreDir);
  const dependents = [...graph].filter(([file, deps]) => file !== 'gateway.ts' && deps.includes('gateway.ts')).map(([file]) => file);
  assert.deepEqual(dependents, []);
});

test('the cycle check finds a cycle through type-only imports and a self import', () => {
  const a = "import type { B } from './b.js';\nexport const x = 1;";
  const b = "import { c } from './c.js';";
  const c = "import type { A } from './a.js';";
  const graph = new Map([
    ['a.ts', importsOf(a, 'a.ts')],
    ['b.ts', importsOf(b, 'b.ts')],
    ['c.ts', importsOf(c, 'c.ts')],
    ['d.ts', importsOf("import { d } from './d.js';", 'd.ts')],
    ['e.ts', importsOf("import { a } from './a.js';", 'e.ts')],
  ]);
  assert.deepEqual(
    importCycles(graph)
      .map((c) => c.join(' '))
      .sort(),
    ['a.ts b.ts c.ts', 'd.ts'],
  );
});

test('imports are resolved relative to the importing module, subfolders included', () => {
  assert.deepEqual(importsOf("import { x } from '../y.js';\nimport './z.js';\nconst m = await import('./w/v.js');", 'sub/f.ts'), [
    'y.ts',
    'sub/z.ts',
    'sub/w/v.ts',
  ]);
});
