#!/usr/bin/env node
// The warm-up start behind dist/clawgate.code-cache (run by scripts/bundle.mjs after esbuild):
// compiles the single-file build from source, starts `gateway run` on a loopback port with a
// throwaway state dir, waits until /readyz answers 200, and writes V8's code cache of the bundle
// then. The cache holds the bytecode of every function that start ran (opening and migrating a
// SQLite store, creating the gateway key and credentials, listening, answering readiness), so a
// real start compiles almost nothing. Then the gateway stops as on SIGTERM.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import singleFile from '../bin/single-file.js';

const { CODE_CACHE_FILE, loadBundle, writeCodeCache } = singleFile;

const DEADLINE_MS = 30_000;
const stateDir = mkdtempSync(join(tmpdir(), 'clawgate-code-cache-'));

function status(url) {
  return new Promise((resolve) => {
    get(url, { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', () => resolve(0));
  });
}

/** The gateway's URL once it listens (gateway.json is written right after listen). */
function listeningUrl() {
  try {
    return JSON.parse(readFileSync(join(stateDir, 'gateway.json'), 'utf8')).url;
  } catch {
    return undefined;
  }
}

const loaded = loadBundle({ useCodeCache: false });
loaded.exports.setBuildInfo({ build: 'single-file', codeCache: 'off' });
const run = loaded.exports.main(['gateway', 'run', '--port', '0', '--bind', 'loopback', '--state-dir', stateDir]);
let exited = false;
run.finally(() => (exited = true));
try {
  const deadline = Date.now() + DEADLINE_MS;
  let ready = false;
  while (!ready && !exited && Date.now() < deadline) {
    const url = listeningUrl();
    ready = url !== undefined && (await status(`${url.replace(/^ws/, 'http')}/readyz`)) === 200;
    if (!ready) await sleep(5);
  }
  if (!ready) throw new Error(exited ? `the gateway exited with ${await run}` : `the gateway was not ready within ${DEADLINE_MS} ms`);
  writeCodeCache(loaded);
  process.stdout.write(`code cache: ${CODE_CACHE_FILE} (${(readFileSync(CODE_CACHE_FILE).length / 1024).toFixed(0)} KiB)\n`);
} finally {
  if (!exited) process.kill(process.pid, 'SIGTERM');
  process.exitCode = await run;
  rmSync(stateDir, { recursive: true, force: true });
}
