#!/usr/bin/env node
// Single-file build of the CLI for `clawgate gateway run` (run by `npm run build` after tsc):
// dist/clawgate.mjs holds the compiled CLI with TypeBox, `ws` and every other pure-JS module in
// one file, so a start reads and compiles one file instead of ~400 (module resolution and
// loading were most of the cold start). Native `better-sqlite3` stays a normal package import.
// `pg` (only for --store postgres) is bundled but, like every module the gateway imports on
// demand, runs only when chosen (esbuild keeps a dynamic import lazy: the
// module's code runs when the import() runs, not at start). Modules that find files next to
// themselves (the Control UI assets) also look relative to dist/, where the bundle lives.
//
// bin/clawgate.js uses the bundle only when it is at least as new as dist/src/cli/main.js, so a
// plain `tsc` after it never runs stale code.
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// The CLI's compiled entry: tsc output (dist/src/…), or dist/packages/… should the source move.
const entry = join(root, 'dist', 'src', 'cli', 'main.js');
if (!existsSync(entry)) {
  process.stderr.write(`bundle: ${entry} is missing: run tsc first\n`);
  process.exit(1);
}
let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  // A production install without dev dependencies: the gateway runs from dist/src as before.
  process.stderr.write('bundle: esbuild is not installed; skipping the single-file build (clawgate runs from dist/src)\n');
  process.exit(0);
}
const outfile = join(root, 'dist', 'clawgate.mjs');
// The command registry (dist/src/cli/registry.js) imports each command's module when it runs.
// Every command but `gateway run | token | key` (gateway-run.js) never runs inside the one verb
// the bundle serves: left out, they are less to compile at every start. Should one run from the
// bundle anyway, its import resolves to the tsc module next to it (dist/src/cli/…).
const registry = join(root, 'dist', 'src', 'cli', 'registry.js');
const BUNDLED_COMMANDS = new Set(['./gateway-run.js']);
const cliVerbsStayModules = {
  name: 'cli-verbs-stay-modules',
  setup(b) {
    b.onResolve({ filter: /^\.\/[a-z-]+\.js$/ }, (args) => {
      if (args.kind !== 'dynamic-import' || (args.importer !== registry && args.importer !== entry)) return undefined;
      if (BUNDLED_COMMANDS.has(args.path)) return undefined;
      return { path: `./src/cli/${args.path.slice(2)}`, external: true };
    });
  },
};
const result = await esbuild.build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // The native addon (and pg's optional native binding, which pg requires only inside a try)
  external: ['better-sqlite3', 'pg-native'],
  // CommonJS dependencies (ws, prom-client) call require() for Node built-ins.
  banner: { js: "import { createRequire as __cgCreateRequire } from 'node:module'; const require = __cgCreateRequire(import.meta.url);" },
  sourcemap: 'linked',
  legalComments: 'none',
  // Less source to decode and pre-parse at every start; identifiers stay, so stack traces read as before.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
  metafile: true,
  plugins: [cliVerbsStayModules],
});
const bytes = statSync(outfile).size;
const inputs = Object.keys(result.metafile.inputs).length;
process.stdout.write(`bundle: ${outfile} (${(bytes / 1024).toFixed(0)} KiB from ${inputs} modules)\n`);
