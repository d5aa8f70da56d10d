#!/usr/bin/env node
/**
 * Makes the SDK's build output (packages/client/dist) self-contained: the SDK's sources import the
 * wire protocol by name (`@clawgate/protocol/<module>`), and this step copies the protocol modules
 * they reach (JavaScript and declarations, with everything those import in turn) into
 * dist/protocol/ and points the imports there. So a browser loads dist/browser.js as plain ES
 * modules, without a bundler or an import map, and the packed tarball installs without fetching
 * any package of ours. Runs after `tsc -b` (npm run build); running it twice changes nothing.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(pkg, 'dist');
const protocolDist = join(pkg, '..', 'protocol', 'dist');
const vendorDir = join(dist, 'protocol');
const BY_NAME = /(["'])@clawgate\/protocol\/([\w-]+)\1/g;
const RELATIVE = /(["'])\.\/([\w-]+)\.js\1/g;

const outputs = (dir, out = []) => {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (p !== vendorDir) outputs(p, out);
    } else if (p.endsWith('.js') || p.endsWith('.d.ts')) out.push(p);
  }
  return out;
};

const needed = new Set();
for (const file of outputs(dist)) {
  const text = readFileSync(file, 'utf8');
  const up = relative(dirname(file), vendorDir).split(sep).join('/') || '.';
  const next = text.replace(BY_NAME, (_all, q, mod) => {
    needed.add(mod);
    return `${q}${up.startsWith('.') ? up : `./${up}`}/${mod}.js${q}`;
  });
  if (next !== text) writeFileSync(file, next);
}
// Modules vendored by an earlier run still count: their importers no longer name the package.
if (existsSync(vendorDir)) for (const f of readdirSync(vendorDir)) if (f.endsWith('.js')) needed.add(f.slice(0, -3));

// The closure: protocol modules import each other by relative path only.
const pending = [...needed];
while (pending.length > 0) {
  const mod = pending.pop();
  for (const ext of ['.js', '.d.ts']) {
    const src = join(protocolDist, mod + ext);
    if (!existsSync(src)) throw new Error(`@clawgate/protocol has no ${mod + ext}: build packages/protocol first`);
    for (const m of readFileSync(src, 'utf8').matchAll(RELATIVE)) {
      if (!needed.has(m[2])) {
        needed.add(m[2]);
        pending.push(m[2]);
      }
    }
  }
}
mkdirSync(vendorDir, { recursive: true });
for (const mod of needed) for (const ext of ['.js', '.d.ts']) copyFileSync(join(protocolDist, mod + ext), join(vendorDir, mod + ext));
console.log(`@clawgate/client: vendored ${needed.size} protocol module(s) into dist/protocol`);
