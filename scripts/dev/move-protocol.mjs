#!/usr/bin/env node
/**
 * Moves the wire protocol from src/protocol/ into the workspace package packages/protocol
 * (`@clawgate/protocol`) and rewrites every import of it; also points imports of the client SDK
 * at its package name. Idempotent: run it again after merging code written against the old
 * layout and it moves/rewrites only what still uses it (a second run on a converted tree changes
 * nothing). Usage, from the repository root: `node scripts/dev/move-protocol.mjs`.
 *
 * Node code (src/, test/, bench/, packages/client/src/) imports `@clawgate/protocol/<module>` and
 * `@clawgate/client`; the Control UI (src/ui/) runs in the browser without a bundler, so it keeps
 * relative imports, pointed at the packages' build output (packages/<name>/dist/).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';

const root = process.cwd();
if (!existsSync(join(root, 'package.json')) || !existsSync(join(root, 'packages'))) {
  console.error('run this from the repository root');
  process.exit(2);
}

// 1. The move (git mv keeps the history). Any file found under src/protocol moves, so code merged
//    later that added a module there follows.
const oldDir = join(root, 'src', 'protocol');
const newDir = join(root, 'packages', 'protocol', 'src');
let moved = 0;
if (existsSync(oldDir)) {
  mkdirSync(newDir, { recursive: true });
  for (const name of readdirSync(oldDir)) {
    execFileSync('git', ['mv', '-k', join('src', 'protocol', name), join('packages', 'protocol', 'src', name)], { cwd: root });
    moved++;
  }
  if (readdirSync(oldDir).length === 0) rmdirSync(oldDir);
}

// 2. The imports.
const walk = (dir, out = []) => {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist') continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
};
const files = [...walk(join(root, 'src')), ...walk(join(root, 'test')), ...walk(join(root, 'bench')), ...walk(join(root, 'packages', 'client', 'src'))];
const toPosix = (p) => p.split(sep).join('/');
const relFrom = (file, target) => {
  const r = toPosix(relative(dirname(file), join(root, target)));
  return r.startsWith('.') ? r : `./${r}`;
};
// An import or re-export (static or dynamic) of a relative path ending in protocol/<module>.js
// that is not already the package's path; other strings (URLs built from paths) are left alone.
const OLD_PROTOCOL = /(\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(['"])(?:\.{1,2}\/)+(?:src\/)?protocol\/([\w-]+)\.js\2/g;
// Confirmation codes moved from src/core to the protocol module before the package did.
const OLD_CONFIRMATION = /(\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(['"])(?:(?:\.{1,2}\/)+core\/|\.\/(?=confirmation\.js))confirmation\.js\2/g;
// Any module of the SDK's sources but its Node-only internals (node-support.ts: src/platform has
// the gateway side's copies): Node code takes it from the package's public entry point.
const OLD_SDK = /(\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)(['"])(?:\.{1,2}\/)+packages\/client\/src\/(?!node-support\.js)([\w-]+)\.js\2/g;
let rewritten = 0;
const rewrittenCode = [];
for (const file of files) {
  const text = readFileSync(file, 'utf8');
  const inUi = toPosix(relative(root, file)).startsWith('src/ui/');
  let next = text.replace(OLD_PROTOCOL, (_all, lead, q, mod) => {
    if (inUi) return `${lead}${q}${relFrom(file, 'packages/protocol/dist')}/${mod}.js${q}`;
    return `${lead}${q}@clawgate/protocol/${mod}${q}`;
  });
  const inCore = toPosix(relative(root, file)).startsWith('src/core/');
  next = next.replace(OLD_CONFIRMATION, (all, lead, q) => {
    if (all.includes('./confirmation.js') && !all.includes('/core/') && !inCore) return all;
    if (inUi) return `${lead}${q}${relFrom(file, 'packages/protocol/dist')}/confirmation.js${q}`;
    return `${lead}${q}@clawgate/protocol/confirmation${q}`;
  });
  next = next.replace(OLD_SDK, (_all, lead, q, entry) => {
    if (inUi) return `${lead}${q}${relFrom(file, 'packages/client/dist')}/${entry === 'index' ? 'browser' : entry}.js${q}`;
    if (entry === 'browser') return `${lead}${q}@clawgate/client/browser${q}`;
    return `${lead}${q}@clawgate/client${q}`;
  });
  // Prose and comments that name the old place.
  next = next.replace(/(?<![\w/])src\/protocol\//g, 'packages/protocol/src/');
  if (next !== text) {
    writeFileSync(file, next);
    rewrittenCode.push(file);
    rewritten++;
  }
}
// Package names sort before relative paths: let biome put the rewritten imports in order.
if (rewrittenCode.length > 0) {
  try {
    execFileSync(join(root, 'node_modules', '.bin', 'biome'), ['check', '--write', ...rewrittenCode.map((f) => relative(root, f))], { cwd: root, stdio: 'inherit' });
  } catch {
    console.error('biome left findings in the rewritten files (above); the rewrite itself is done');
  }
}
// 3. Docs that name the old place.
const docs = ['README.md', 'PROTOCOL.md', 'bench/README.md', ...(existsSync(join(root, 'docs')) ? readdirSync(join(root, 'docs')).map((n) => join('docs', n)) : [])];
for (const doc of docs) {
  const p = join(root, doc);
  if (!doc.endsWith('.md') || !existsSync(p)) continue;
  const text = readFileSync(p, 'utf8');
  const next = text
    .replace(/\.\.\/src\/protocol\//g, '../packages/protocol/src/')
    .replace(/(?<![\w/])src\/protocol\//g, 'packages/protocol/src/').replace(/(?<![\w/])src\/protocol\b/g, 'packages/protocol');
  if (next !== text) {
    writeFileSync(p, next);
    rewritten++;
  }
}
console.log(`moved ${moved} file(s) into packages/protocol/src, rewrote ${rewritten} file(s)`);
