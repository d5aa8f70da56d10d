// Loads the single-file build of `clawgate gateway run` (dist/clawgate.cjs, scripts/bundle.mjs)
// with V8's code cache (dist/clawgate.code-cache): the bundle's ~900 KiB of source is neither
// parsed nor compiled at start, V8 deserializes the bytecode that the build's warm-up start
// (scripts/code-cache.mjs) left behind, including the functions that start ran.
//
// Node 20 has no compile cache for ES modules (module.enableCompileCache is Node 22), but a
// vm.Script takes cachedData: the bundle is one CommonJS-style function expression (strict, like
// the ES modules it was built from) that this module compiles and calls with the parameters of
// Node's CommonJS wrapper.
//
// The cache file starts with the SHA-256 of the bundle it was made from. V8 itself checks only
// its own version, its flags and the source's length, so a rebuilt bundle of the same length
// would run stale bytecode: a cache whose hash does not match is ignored (the bundle compiles
// from source, as it would without a cache). The file sits next to the bundle, written by the
// build like the bundle, never by a running gateway.
'use strict';
const { createHash } = require('node:crypto');
const { readFileSync, renameSync, statSync, writeFileSync } = require('node:fs');
const { createRequire } = require('node:module');
const { dirname, join } = require('node:path');
const { pathToFileURL } = require('node:url');
const vm = require('node:vm');

const BUNDLE_FILE = join(__dirname, '..', 'dist', 'clawgate.cjs');
const CODE_CACHE_FILE = join(__dirname, '..', 'dist', 'clawgate.code-cache');
const TSC_MAIN_FILE = join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
const HASH_BYTES = 32;

/** Whether the bundle exists and is at least as new as the tsc output (a rebuild without the bundle step never runs stale code). */
function bundleIsFresh() {
  try {
    return statSync(BUNDLE_FILE).mtimeMs >= statSync(TSC_MAIN_FILE).mtimeMs;
  } catch {
    return false;
  }
}

/**
 * Compile and run the bundle; returns its exports, the vm.Script (to write a cache from) and
 * what became of the code cache: used, rejected (V8's or the hash check), missing, or off.
 */
function loadBundle({ useCodeCache = true } = {}) {
  const source = readFileSync(BUNDLE_FILE);
  const sourceHash = createHash('sha256').update(source).digest();
  let cachedData;
  let codeCache = useCodeCache ? 'missing' : 'off';
  if (useCodeCache) {
    try {
      const file = readFileSync(CODE_CACHE_FILE);
      if (file.length > HASH_BYTES && file.subarray(0, HASH_BYTES).equals(sourceHash)) cachedData = file.subarray(HASH_BYTES);
      else codeCache = 'rejected';
    } catch {
      // no cache: compile from source
    }
  }
  // The file is one function expression taking the parameters of Node's CommonJS wrapper, and
  // ASCII only (scripts/bundle.mjs): read as Latin-1, V8 gets it without decoding or copying it.
  const script = new vm.Script(source.toString('latin1'), {
    filename: BUNDLE_FILE,
    cachedData,
  });
  if (cachedData) codeCache = script.cachedDataRejected ? 'rejected' : 'used';
  const module = { exports: {} };
  // The CLI verbs left out of the bundle are tsc modules next to it (./src/cli/…): the bundle
  // imports them through this function (scripts/bundle.mjs), as code from a code cache cannot
  // run import() itself under Node 20.
  const importBesideBundle = (specifier) => import(pathToFileURL(join(dirname(BUNDLE_FILE), specifier)).href);
  script
    .runInThisContext()
    .call(module.exports, module.exports, createRequire(BUNDLE_FILE), module, BUNDLE_FILE, dirname(BUNDLE_FILE), importBesideBundle);
  return { exports: module.exports, script, sourceHash, codeCache };
}

/** Replace `path` by a rename: a reader sees the old content or the new one, never half of it. */
function writeAtomically(path, data) {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

/** Write the code cache of a loaded bundle (everything compiled so far). */
function writeCodeCache(loaded) {
  writeAtomically(CODE_CACHE_FILE, Buffer.concat([loaded.sourceHash, loaded.script.createCachedData()]));
}

module.exports = { BUNDLE_FILE, CODE_CACHE_FILE, bundleIsFresh, loadBundle, writeAtomically, writeCodeCache };
