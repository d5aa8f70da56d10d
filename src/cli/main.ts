/**
 * `clawgate` — one binary, verbs close to OpenClaw's. This module only dispatches: it finds the
 * command in the registry, answers `--help`, checks the flags against the command's spec, runs
 * it, and turns failures into messages. Exit codes: 0 ok, 1 failure, 2 usage, 3 pairing request
 * pending (--no-wait).
 */
import { parseArgs } from 'node:util';
import { printableLines } from '@clawgate/protocol/text';
import { ConnectError, GatewayRequestError } from '../client/connection.js';
import { CliFailure, explainConnectError } from './connect-errors.js';
import { OVERVIEW } from './overview.js';
import { ROOT } from './registry.js';
import { type CommandSpec, parseOptionsOf, renderHelp, unknownFlagMessage, usageLines, wantsHelp } from './spec.js';
import { closest, UsageError, useCommandOptions } from './usage.js';

// The single-file build's loader (bin/single-file.js) says which build runs before main().
export { setBuildInfo } from './build-info.js';

const HELP_WORDS = ['help', '--help', '-h'];

/** Walk the words of `argv` down the command tree; stops at the first word that is not a subcommand. */
function locate(argv: string[]): { path: string[]; spec: CommandSpec; rest: string[] } {
  let spec = ROOT;
  const path: string[] = [];
  let i = 0;
  while (spec.subcommands) {
    const word = argv[i];
    const next = word === undefined ? undefined : spec.subcommands.find((s) => s.name === word);
    if (!next) break;
    spec = next;
    path.push(next.name);
    i++;
  }
  return { path, spec, rest: argv.slice(i) };
}

function unknownCommand(path: string[], spec: CommandSpec, word: string): UsageError {
  const names = (spec.subcommands ?? []).map((s) => s.name);
  const best = closest(word, names);
  const where = path.length > 0 ? `clawgate ${path.join(' ')}` : 'clawgate';
  return new UsageError(
    `unknown command: ${[...path, word].join(' ')}${best ? ` (did you mean \`${where} ${best}\`?)` : ''}\n` +
      `commands of ${where}: ${names.join(', ')} (see clawgate help${path.length > 0 ? ` ${path.join(' ')}` : ''})`,
  );
}

/** `clawgate help [words]`: the overview, or one command's help. */
function help(words: string[]): number {
  if (words.length === 0) {
    process.stdout.write(`${OVERVIEW}\n`);
    return 0;
  }
  const { path, spec, rest } = locate(words);
  if (rest.length > 0) throw unknownCommand(path, spec, rest[0] as string);
  process.stdout.write(`${renderHelp(path, spec)}\n`);
  return 0;
}

/** Check the command line against the spec before the command sees it: unknown flags and missing values are named. */
function checkFlags(path: string[], spec: CommandSpec, args: string[]): void {
  try {
    parseArgs({ args, options: parseOptionsOf(spec), allowPositionals: true, strict: true });
  } catch (err) {
    const e = err as Error & { code?: string };
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const flag = /'(-[^']*)'/.exec(e.message)?.[1] ?? args.find((a) => a.startsWith('-')) ?? '?';
      throw new UsageError(unknownFlagMessage(path, spec, flag));
    }
    const usage = usageLines(path, spec).map((u) => `  ${u}`);
    throw new UsageError([e.message.replace(/^Option '(-[^']*)'/, 'option $1'), 'usage:', ...usage].join('\n'));
  }
}

async function dispatch(argv: string[]): Promise<number> {
  const [first, ...after] = argv;
  if (first === undefined) {
    process.stderr.write(`${OVERVIEW}\n`);
    return 2;
  }
  if (HELP_WORDS.includes(first)) return help(after);
  let { path, spec, rest } = locate(argv);
  if (spec.subcommands && !spec.run) {
    const word = rest[0];
    if (word === undefined || word === '--help' || word === '-h') {
      if (word === undefined && !spec.defaultSub) {
        process.stderr.write(`${renderHelp(path, spec)}\n`);
        return 2;
      }
      if (word !== undefined) {
        process.stdout.write(`${renderHelp(path, spec)}\n`);
        return 0;
      }
    }
    if (word !== undefined && !word.startsWith('-')) throw unknownCommand(path, spec, word);
    const sub = spec.subcommands.find((s) => s.name === spec.defaultSub);
    if (!sub) throw unknownCommand(path, spec, word ?? '');
    path = [...path, sub.name];
    spec = sub;
  }
  if (wantsHelp(rest)) {
    process.stdout.write(`${renderHelp(path, spec)}\n`);
    return 0;
  }
  checkFlags(path, spec, rest);
  useCommandOptions(parseOptionsOf(spec));
  return (spec.run as (args: string[]) => Promise<number>)(rest);
}

export async function main(argv: string[]): Promise<number> {
  try {
    return await dispatch(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${printableLines(err.message)}\n`);
      return 2;
    }
    const status = (await import('./gateway-session.js')).reportClientFailure(err, argv.includes('--json'));
    if (status !== null) return status;
    if (err instanceof CliFailure) {
      process.stderr.write(printableLines(`error: ${err.message}\n${err.nextStep ? `next: ${err.nextStep}\n` : ''}`));
      return 1;
    }
    if (err instanceof ConnectError || err instanceof GatewayRequestError) {
      const e = err.error;
      const transport = err instanceof ConnectError ? explainConnectError(err) : null;
      const next = transport?.nextStep ?? (e?.details as { nextStep?: string } | undefined)?.nextStep;
      // A gateway's message can quote what a client named: escaped like every other listing.
      process.stderr.write(
        printableLines(`error: ${transport?.message ?? err.message}${e?.details?.code ? ` [${e.details.code}]` : ''}\n${next ? `next: ${next}\n` : ''}`),
      );
      return 1;
    }
    process.stderr.write(`error: ${printableLines((err as Error).message)}\n`);
    return 1;
  }
}
