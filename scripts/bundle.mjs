#!/usr/bin/env node
// Single-file build of the CLI for `clawgate gateway run` (run by `npm run build` after tsc):
// dist/clawgate.cjs holds the compiled CLI with TypeBox, `ws`, better-sqlite3's JavaScript and
// every other pure-JS module in one file, so a start reads one file instead of ~400 (module
// resolution and loading were most of the cold start). Only better-sqlite3's native addon is
// loaded from node_modules. `pg` (only for --store postgres) is bundled but, like every module
// the gateway imports on demand, runs only when chosen (esbuild keeps a dynamic import lazy:
// the module's code runs when the import() runs, not at start). Modules that find files next to
// themselves (the Control UI assets) also look relative to dist/, where the bundle lives.
//
// The bundle is CommonJS because Node 20 caches compiled code for scripts only: after it,
// scripts/code-cache.mjs starts the bundled gateway once and writes V8's code cache
// (dist/clawgate.code-cache), which bin/single-file.js hands to V8 at every start.
//
// bin/clawgate.js uses the bundle only when it is at least as new as dist/src/cli/main.js, so a
// plain `tsc` after it never runs stale code.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import singleFile from '../bin/single-file.js';

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
const outfile = join(root, 'dist', 'clawgate.cjs');
// The former ES-module bundle and any cache of an earlier bundle go first: nothing stale stays.
for (const old of ['clawgate.mjs', 'clawgate.mjs.map', 'clawgate.code-cache']) rmSync(join(root, 'dist', old), { force: true });
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
// better-sqlite3's JavaScript is bundled; its `bindings` helper finds the addon from the caller's
// file name, which would be the bundle. Instead the addon is required from the installed package
// (build/Release, where its install puts it), or found by `bindings` from there. The JavaScript
// and the addon must be of one version: a different installed version is named, not run.
const sqliteDir = dirname(fileURLToPath(import.meta.resolve('better-sqlite3/package.json')));
const sqliteVersion = JSON.parse(readFileSync(join(sqliteDir, 'package.json'), 'utf8')).version;
const sqliteAddon = {
  name: 'sqlite-addon-from-package',
  setup(b) {
    b.onResolve({ filter: /^bindings$/ }, (args) => (/[\\/]better-sqlite3[\\/]/.test(args.importer) ? { path: 'bindings', namespace: 'sqlite-addon' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'sqlite-addon' }, () => ({
      loader: 'js',
      resolveDir: root,
      contents: `
const { dirname, join } = require('node:path');
const BUNDLED_VERSION = ${JSON.stringify(sqliteVersion)};
module.exports = function loadSqliteAddon(name) {
  const pkgFile = require.resolve('better-sqlite3/package.json');
  const { version } = require(pkgFile);
  if (version !== BUNDLED_VERSION) {
    throw new Error('better-sqlite3 ' + version + ' is installed but dist/clawgate.cjs holds ' + BUNDLED_VERSION + ': run npm run build (or set CLAWGATE_NO_BUNDLE=1)');
  }
  try {
    return require(join(dirname(pkgFile), 'build', 'Release', name));
  } catch (err) {
    if (err?.code !== 'MODULE_NOT_FOUND') throw err;
  }
  return require(require.resolve('bindings', { paths: [dirname(pkgFile)] }))({ bindings: name, module_root: dirname(pkgFile) });
};
`,
    }));
  },
};
// pg picks its socket at load time: on a runtime without `navigator` (Node 20) it probes for
// Cloudflare Workers by constructing a `Response`, and touching that global loads Node's whole
// fetch implementation (undici), ~10-30 ms of a PostgreSQL start for nothing: the gateway runs
// on Node only. The probe is cut from the bundled copy; should pg change that code, the build
// stops here instead of shipping the probe unnoticed.
const PG_RUNTIME_PROBE = 'if (isCloudflareRuntime()) {';
const pgNodeSocketsOnly = {
  name: 'pg-node-sockets-only',
  setup(b) {
    b.onLoad({ filter: /[\\/]node_modules[\\/]pg[\\/]lib[\\/]stream\.js$/ }, (args) => {
      const source = readFileSync(args.path, 'utf8');
      if (!source.includes(PG_RUNTIME_PROBE)) {
        throw new Error(`${args.path} no longer holds "${PG_RUNTIME_PROBE}": check how pg picks its socket and update scripts/bundle.mjs`);
      }
      return { loader: 'js', contents: source.replace(PG_RUNTIME_PROBE, 'if (false) {') };
    });
  },
};
const result = await esbuild.build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // pg's optional native binding, which pg requires only inside a try, and the installed
  // better-sqlite3's package.json (its version is checked at run time).
  external: ['pg-native', 'better-sqlite3/package.json'],
  // The file is one function expression, the parameters of Node's CommonJS wrapper:
  // bin/single-file.js compiles it as it is (no copy of ~900 KiB to wrap it) and calls it.
  // 'use strict': the modules were ES modules, strict like the former ESM bundle. And
  // import.meta.url is the bundle's own URL.
  banner: {
    js: "(function (exports, require, module, __filename, __dirname, $cgimp) {'use strict';const __cgBundleUrl = require('node:url').pathToFileURL(__filename).href;",
  },
  footer: { js: '})' },
  define: { 'import.meta.url': '__cgBundleUrl' },
  // Non-ASCII characters are written as escapes (esbuild's default, kept explicit): the loader
  // reads the file as Latin-1, a plain copy, and the build checks it below.
  charset: 'ascii',
  sourcemap: 'linked',
  legalComments: 'none',
  // Less source to decode and pre-parse at every start; identifiers stay, so stack traces read as before.
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
  metafile: true,
  // Written below, after the checks, each file by a rename: a gateway starting meanwhile reads
  // the old bundle or the new one, never half of one.
  write: false,
  plugins: [cliVerbsStayModules, sqliteAddon, pgNodeSocketsOnly],
});
// A script compiled with V8's code cache cannot run import() under Node 20 (the cached code
// lacks the loader's host options: ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING). The imports of the
// CLI verbs left out become calls of `$cgimp`, the loader's own import() of the module next to
// the bundle; same length, so the source map's columns stay right. Any other import() left in
// the bundle would fail at run time: the build stops instead.
const output = (path) => result.outputFiles.find((f) => f.path === path);
const bundleText = Buffer.from(output(outfile).contents).toString('latin1').replace(/\bimport\((?="\.\/src\/cli\/[a-z-]+\.js"\))/g, '$cgimp(');
const leftover = /\bimport\(.{0,40}/.exec(bundleText);
if (leftover) {
  process.stderr.write(`bundle: ${outfile} holds an import() the code-cached script cannot run: ${leftover[0]}\n`);
  process.exit(1);
}
if (/[^\x00-\x7f]/.test(bundleText)) {
  process.stderr.write(`bundle: ${outfile} holds non-ASCII characters; bin/single-file.js reads it as Latin-1\n`);
  process.exit(1);
}
singleFile.writeAtomically(`${outfile}.map`, output(`${outfile}.map`).contents);
singleFile.writeAtomically(outfile, Buffer.from(bundleText, 'latin1'));
const bytes = statSync(outfile).size;
const inputs = Object.keys(result.metafile.inputs).length;
process.stdout.write(`bundle: ${outfile} (${(bytes / 1024).toFixed(0)} KiB from ${inputs} modules)\n`);
// The warm-up start runs in its own process, with no CLAWGATE_* settings and no NODE_OPTIONS
// (V8 rejects a cache made under other flags).
const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CLAWGATE_') && k !== 'NODE_OPTIONS'));
try {
  const out = execFileSync(process.execPath, [join(root, 'scripts', 'code-cache.mjs')], { cwd: root, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  // The warm-up gateway's own banner is not the build's business.
  process.stdout.write(out.split('\n').filter((l) => l.startsWith('code cache:')).join('\n').concat('\n'));
} catch (err) {
  // The gateway still runs from the bundle, compiling it at each start.
  process.stderr.write(`bundle: no code cache (the warm-up start failed): ${err.stderr || err.message}\n`);
}
