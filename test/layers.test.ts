/**
 * The layering rules (biome.layers.jsonc, run by `npm run lint`) fail on every import that breaks
 * them and pass the imports the layers are meant to use. Each case is written as a real file at
 * the path of the layer it stands for, in a temporary copy of the lint configuration, and the real
 * `biome lint` judges it; a case passes only if biome flags exactly the forbidden lines.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
// Tests run from dist/test; the configuration and biome live at the repository root.
const repo = fileURLToPath(new URL('../../', import.meta.url));
const biome = join(repo, 'node_modules', '.bin', 'biome');

/** [file the import is written in, import specifier, whether the rules allow it]. */
type Case = readonly [file: string, specifier: string, allowed: boolean];

const CASES: readonly Case[] = [
  // protocol (packages/protocol): nothing of ours
  ['packages/protocol/src/case.ts', './frames.js', true],
  ['packages/protocol/src/case.ts', '@sinclair/typebox', true],
  ['packages/protocol/src/case.ts', '../../../src/core/gateway.js', false],
  ['packages/protocol/src/case.ts', '../../../src/platform/durable-file.js', false],
  ['packages/protocol/src/case.ts', '../../client/src/index.js', false],
  ['packages/protocol/src/case.ts', '@clawgate/client', false],
  // core: the protocol only, by name, at any depth
  ['src/core/case.ts', '@clawgate/protocol/frames', true],
  ['src/core/case.ts', './principal.js', true],
  ['src/core/case.ts', 'node:crypto', true],
  ['src/core/case.ts', '@sinclair/typebox', true],
  ['src/core/case.ts', '../../packages/protocol/src/frames.js', false],
  ['src/core/case.ts', '../store/sqlite.js', false],
  ['src/core/case.ts', '../server/server.js', false],
  ['src/core/case.ts', '../methods/devices.js', false],
  ['src/core/case.ts', '../automations/cron.js', false],
  ['src/core/case.ts', '../client/connection.js', false],
  ['src/core/case.ts', '../node-host/host.js', false],
  ['src/core/case.ts', '../ui/web/app.js', false],
  ['src/core/case.ts', '../cli/main.js', false],
  ['src/core/case.ts', '../platform/durable-file.js', false],
  ['src/core/case.ts', '../app.js', false],
  ['src/core/case.ts', '@clawgate/client', false],
  ['src/core/case.ts', '../../packages/client/src/node.js', false],
  ['src/core/case.ts', '../../test/helpers/gateway.js', false],
  ['src/core/deeper/case.ts', '@clawgate/protocol/frames', true],
  ['src/core/deeper/case.ts', '../gateway.js', true],
  ['src/core/deeper/case.ts', '../../store/types.js', false],
  // platform: the protocol only
  ['src/platform/case.ts', '@clawgate/protocol/fingerprint', true],
  ['src/platform/case.ts', '../core/env.js', false],
  // store adapters: on top of core
  ['src/store/case.ts', '../core/cluster.js', true],
  ['src/store/case.ts', '../platform/durable-file.js', true],
  ['src/store/case.ts', '../server/server.js', false],
  ['src/store/case.ts', '../methods/nodes.js', false],
  ['src/store/case.ts', '../cli/state.js', false],
  // automations and methods
  ['src/automations/case.ts', '../store/types.js', true],
  ['src/automations/case.ts', '../methods/automations.js', false],
  ['src/methods/case.ts', '../automations/cron.js', true],
  ['src/methods/case.ts', '../server/server.js', false],
  ['src/methods/case.ts', '../cli/common.js', false],
  // server: never the SDK (its durable files come from src/platform)
  ['src/server/case.ts', '../store/types.js', true],
  ['src/server/case.ts', '../platform/durable-file.js', true],
  ['src/server/case.ts', '@clawgate/client', false],
  ['src/server/case.ts', '@clawgate/client/node', false],
  ['src/server/case.ts', '../methods/devices.js', false],
  ['src/server/case.ts', '../cli/main.js', false],
  // clawgate's own client stack and the node host are clients: they may use the SDK, by name
  ['src/client/case.ts', '@clawgate/client', true],
  ['src/client/case.ts', '../../packages/client/src/node-support.js', false],
  ['src/client/case.ts', '../store/types.js', false],
  ['src/node-host/case.ts', '../client/connection.js', true],
  ['src/node-host/case.ts', '@clawgate/client', true],
  ['src/node-host/case.ts', '../../packages/client/dist/node.js', false],
  ['src/node-host/case.ts', '../cli/state.js', false],
  ['src/node-host/case.ts', '../server/tls.js', false],
  // the companion is a client too: the SDK by name, the node host's command runner
  ['src/companion/case.ts', '@clawgate/client', true],
  ['src/companion/case.ts', '../node-host/invoker.js', true],
  ['src/companion/case.ts', '../../packages/client/src/client.js', false],
  ['src/companion/case.ts', '../server/tls.js', false],
  ['src/companion/case.ts', '../cli/main.js', false],
  // the Control UI runs in the browser: the packages' build output by relative path only
  ['src/ui/web/case.ts', '../../../packages/protocol/dist/views.js', true],
  ['src/ui/web/case.ts', '../../../packages/client/dist/browser.js', true],
  ['src/ui/web/case.ts', '@clawgate/protocol/views', false],
  ['src/ui/web/case.ts', '@clawgate/client/browser', false],
  ['src/ui/web/case.ts', '../../../packages/client/src/browser.js', false],
  ['src/ui/web/case.ts', '../../core/nodes.js', false],
  ['src/ui/web/case.ts', '../../client/connection.js', false],
  ['src/ui/web/case.ts', '../../platform/durable-file.js', false],
  // the CLI sits on top of everything, but nothing imports its entry point
  ['src/cli/case.ts', '../app.js', true],
  ['src/cli/case.ts', '../server/server.js', true],
  ['src/cli/case.ts', './state.js', true],
  ['src/cli/case.ts', '@clawgate/client', true],
  ['src/cli/case.ts', './main.js', false],
  ['src/cli/case.ts', '../../packages/client/src/node.js', false],
  ['src/app.ts', './server/server.js', true],
  ['src/app.ts', './cli/main.js', false],
  // the SDK: the protocol package only
  ['packages/client/src/case.ts', './client.js', true],
  ['packages/client/src/case.ts', '@clawgate/protocol/frames', true],
  ['packages/client/src/case.ts', 'ws', true],
  ['packages/client/src/case.ts', '../../protocol/src/frames.js', false],
  ['packages/client/src/case.ts', '../../../src/core/gateway.js', false],
  ['packages/client/src/case.ts', '../../../src/platform/durable-file.js', false],
  ['packages/client/src/case.ts', '../../../src/node-host/state.js', false],
  // a temporary exception covers its own file and its own import only
  ['src/node-host/state.ts', '../server/tls.js', false],
  ['src/core/gateway.ts', '../cli/main.js', false],
];

interface Finding {
  rule: string;
  file: string;
  line: number;
  message: string;
}

/** Lint `root` with the repository's configuration; biome's GitHub reporter gives one line per finding. */
async function lint(root: string): Promise<Finding[]> {
  const out = await run(biome, ['lint', '--reporter=github', '--max-diagnostics=none', '.'], { cwd: root }).then(
    (r) => r.stdout,
    (err: { stdout?: string; code?: number }) => {
      // Exit 1 is "findings"; anything else (a broken configuration) is a failure of the check itself.
      assert.equal(err.code, 1, `biome failed to run: ${String(err)}`);
      return err.stdout ?? '';
    },
  );
  const findings: Finding[] = [];
  for (const m of out.matchAll(/^::error title=([^,]+),file=([^,]+),line=(\d+),[^:]*::(.*)$/gm)) {
    findings.push({ rule: m[1] as string, file: (m[2] as string).slice(root.length + 1), line: Number(m[3]), message: m[4] as string });
  }
  return findings;
}

function fixture(t: { after: (fn: () => void) => void }): string {
  const root = mkdtempSync(join(tmpdir(), 'clawgate-layers-'));
  t.after(() => rmSync(root, { recursive: true, force: true }));
  copyFileSync(join(repo, 'biome.json'), join(root, 'biome.json'));
  copyFileSync(join(repo, 'biome.layers.jsonc'), join(root, 'biome.layers.jsonc'));
  return root;
}

function write(root: string, file: string, text: string): void {
  mkdirSync(dirname(join(root, file)), { recursive: true });
  writeFileSync(join(root, file), text);
}

test('every layering rule flags the imports it forbids and only those', async (t) => {
  const root = fixture(t);
  const byFile = new Map<string, Case[]>();
  for (const c of CASES) byFile.set(c[0], [...(byFile.get(c[0]) ?? []), c]);
  for (const [file, cases] of byFile) {
    // One re-export per line, so a finding's line number names its case.
    write(root, file, cases.map(([, spec], i) => `export * as m${i} from '${spec}';\n`).join(''));
  }
  const restricted = (await lint(root)).filter((f) => f.rule === 'lint/style/noRestrictedImports');
  const wrong: string[] = [];
  for (const [file, cases] of byFile) {
    cases.forEach(([, spec, allowed], i) => {
      const hit = restricted.find((f) => f.file === file && f.line === i + 1);
      if (allowed && hit) wrong.push(`${file} may import ${spec}, but lint says: ${hit.message}`);
      if (!allowed && !hit) wrong.push(`${file} must not import ${spec}, but lint lets it through`);
      if (hit) assert.match(hit.message, /^Layering \(docs\/architecture\.md\): /);
    });
  }
  assert.deepEqual(wrong, []);
});

test('an import cycle fails the lint', async (t) => {
  const root = fixture(t);
  write(root, 'src/methods/cycle-a.ts', "import { b } from './cycle-b.js';\nexport const a = () => b;\n");
  write(root, 'src/methods/cycle-b.ts', "import type { a } from './cycle-a.js';\nexport const b = (f?: typeof a) => f;\n");
  write(root, 'src/methods/no-cycle.ts', "import { b } from './cycle-b.js';\nexport const c = b;\n");
  const cycles = (await lint(root)).filter((f) => f.rule === 'lint/suspicious/noImportCycles').map((f) => f.file);
  // A type-only import closes a cycle too: the layering is about what depends on what, not what survives compilation.
  assert.deepEqual([...new Set(cycles)].sort(), ['src/methods/cycle-a.ts', 'src/methods/cycle-b.ts']);
});

test('the repository itself passes the layering rules', async () => {
  const r = await run(biome, ['lint', '--max-diagnostics=none', 'src', 'packages'], { cwd: repo }).catch((err: { stdout?: string }) => {
    assert.fail(`npm run lint fails on the tree:\n${err.stdout ?? String(err)}`);
  });
  assert.ok(r);
});

test('every top-level folder of src/ is a layer the rules know', () => {
  const config = readFileSync(join(repo, 'biome.layers.jsonc'), 'utf8');
  const unknown = readdirSync(join(repo, 'src'))
    .filter((name) => statSync(join(repo, 'src', name)).isDirectory())
    .filter((name) => !config.includes(`"src/${name}/**"`));
  assert.deepEqual(unknown, [], 'a new folder under src/ needs its rule in biome.layers.jsonc (and its place in docs/architecture.md)');
});
