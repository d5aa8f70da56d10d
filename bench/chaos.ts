/**
 * `npm run chaos` — the crash harness and the protocol fuzzer in long mode (docs/reliability.md).
 *
 *   npm run chaos -- --kills 300 [--seed 7] [--devices 6] [--store postgres] [--keep]
 *   npm run chaos -- --fuzz 100000 [--seed 7]
 *
 * Exit code 0 when no invariant was violated, 1 otherwise (the violations are printed).
 */
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { runChaos } from '../test/helpers/chaos.js';
import { runFuzz } from '../test/helpers/fuzz.js';
import { pgBinDir, startPgCluster } from '../test/helpers/pg-cluster.js';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      kills: { type: 'string' },
      fuzz: { type: 'string' },
      seed: { type: 'string' },
      devices: { type: 'string' },
      store: { type: 'string' },
      keep: { type: 'boolean' },
    },
    strict: true,
  });
  const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
  if (!Number.isSafeInteger(seed)) throw new Error('--seed must be a whole number');
  const log = (line: string) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);
  if (values.fuzz !== undefined) {
    const runs = Number(values.fuzz);
    log(`fuzz: ${runs} frames, seed ${seed}`);
    const report = await runFuzz({ seed, frames: runs, log });
    log(JSON.stringify({ ...report, failures: report.failures.length }, null, 2));
    for (const f of report.failures) log(`FAILURE ${f}`);
    return report.failures.length === 0 ? 0 : 1;
  }
  const kills = Number(values.kills ?? 50);
  const stores: Array<'sqlite' | 'postgres'> = values.store === 'postgres' ? ['postgres'] : values.store === 'both' ? ['sqlite', 'postgres'] : ['sqlite'];
  let failed = false;
  for (const kind of stores) {
    let pg: Awaited<ReturnType<typeof startPgCluster>> | null = null;
    try {
      if (kind === 'postgres') {
        if (!pgBinDir()) throw new Error('PostgreSQL server binaries not found (scripts/system-deps.sh installs them)');
        pg = await startPgCluster();
      }
      const store = pg ? { kind: 'postgres' as const, url: await pg.createDatabase() } : { kind: 'sqlite' as const };
      log(`chaos: ${kills} kills, seed ${seed}, store ${kind}`);
      const report = await runChaos({ seed, kills, devices: Number(values.devices ?? 6), store, log, probesPerRestart: 8, waitForLeases: true });
      log(`done: ${report.restarts} restarts, counts ${JSON.stringify(report.counts)}`);
      for (const a of report.anomalies.slice(0, 50)) log(`anomaly: ${a}`);
      for (const v of report.violations) log(`VIOLATION ${v}`);
      log(`${report.violations.length} violations (seed ${seed}, store ${kind}, state dir ${values.keep ? report.stateDir : 'removed'})`);
      if (!values.keep) rmSync(report.stateDir, { recursive: true, force: true });
      if (report.violations.length > 0) failed = true;
    } finally {
      await pg?.stop();
    }
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${(err as Error)?.stack ?? err}\n`);
    process.exit(1);
  },
);
