/**
 * The declarative shape of a `clawgate` command: its words, flags (type, placeholder, default,
 * description), usage lines and examples. One table drives the command-line check (unknown
 * flags, missing values) and the `--help` text, so they cannot disagree.
 */
import type { ParseArgsConfig } from 'node:util';
import { closest } from './usage.js';

export interface FlagSpec {
  type: 'string' | 'boolean';
  /** The flag may be given more than once (its values are collected). */
  multiple?: boolean;
  /** How the value is written in help, e.g. `<ws-url>`. */
  value?: string;
  /** What happens when the flag is absent, as a sentence fragment for help (never applied by the parser). */
  default?: string;
  description: string;
}
export type FlagTable = Readonly<Record<string, FlagSpec>>;

export interface CommandSpec {
  /** The word that selects this command (`devices`, `approve`). */
  name: string;
  summary: string;
  /** Usage lines without the leading `clawgate` and the command's words. */
  usage?: string[];
  /** Flags of this command; a table per group of flags keeps help readable. */
  flags?: ReadonlyArray<{ title: string; flags: FlagTable }>;
  examples?: string[];
  notes?: string[];
  subcommands?: CommandSpec[];
  /** The subcommand run when none is named (`clawgate gateway` runs `gateway run`). */
  defaultSub?: string;
  /** Runs the command with the arguments after its words; loaded on demand (see registry.ts). */
  run?: (args: string[]) => Promise<number>;
}

/** Every flag of a command, merged over its groups. */
export function flagsOf(spec: CommandSpec): FlagTable {
  return Object.assign({}, ...(spec.flags ?? []).map((g) => g.flags));
}

/** The parseArgs options of a command (type and multiple only: help defaults are not parser defaults). */
export function parseOptionsOf(spec: CommandSpec): NonNullable<ParseArgsConfig['options']> {
  const options: NonNullable<ParseArgsConfig['options']> = {};
  for (const [name, f] of Object.entries(flagsOf(spec))) options[name] = f.multiple ? { type: f.type, multiple: true } : { type: f.type };
  return options;
}

/** `help` and `-h` answer every command; they are not listed as flags of each one. */
export const HELP_FLAGS = ['--help', '-h'];

/** True when the arguments ask for help (before a `--`, after which everything is positional). */
export function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (HELP_FLAGS.includes(a)) return true;
  }
  return false;
}

export function usageLines(path: string[], spec: CommandSpec): string[] {
  const prefix = ['clawgate', ...path].join(' ');
  if (spec.subcommands && !spec.run) return [`${prefix} <${spec.subcommands.map((s) => s.name).join('|')}> [flags]`];
  return (spec.usage ?? ['']).map((u) => `${prefix}${u ? ` ${u}` : ''}`);
}

function flagLine(name: string, f: FlagSpec): string[] {
  const left = `  --${name}${f.type === 'string' ? ` ${f.value ?? '<value>'}` : ''}${f.multiple ? ' …' : ''}`;
  const right = `${f.description}${f.default ? ` (default: ${f.default})` : ''}`;
  return left.length < 30 ? [`${left.padEnd(30)}${right}`] : [left, `${' '.repeat(30)}${right}`];
}

/** The `--help` text of a command (or a group of subcommands). */
export function renderHelp(path: string[], spec: CommandSpec): string {
  const lines = [`clawgate ${path.join(' ')} — ${spec.summary}`, '', 'Usage:', ...usageLines(path, spec).map((u) => `  ${u}`)];
  if (spec.subcommands) {
    lines.push('', 'Commands:');
    const width = Math.max(...spec.subcommands.map((s) => s.name.length)) + 4;
    for (const s of spec.subcommands)
      lines.push(`  ${s.name.padEnd(width)}${s.summary}${spec.defaultSub === s.name ? ` (the default: \`clawgate ${path.join(' ')}\` alone runs it)` : ''}`);
    lines.push('', `Run \`clawgate ${path.join(' ')} <command> --help\` for its flags and an example.`);
  }
  for (const group of spec.flags ?? []) {
    lines.push('', `${group.title}:`);
    for (const [name, f] of Object.entries(group.flags)) lines.push(...flagLine(name, f));
  }
  const examples = spec.examples ?? spec.subcommands?.flatMap((s) => s.examples?.slice(0, 1) ?? []) ?? [];
  if (examples.length > 0) lines.push('', examples.length > 1 ? 'Examples:' : 'Example:', ...examples.map((e) => `  ${e}`));
  if (spec.notes && spec.notes.length > 0) lines.push('', ...spec.notes);
  return lines.join('\n');
}

/** The message for a flag the command does not know: names it, the closest valid flag, and the usage. */
export function unknownFlagMessage(path: string[], spec: CommandSpec, flag: string): string {
  const names = Object.keys(flagsOf(spec));
  const typed = flag.replace(/^-+/, '').split('=')[0] as string;
  const best = closest(typed, names);
  return [
    `unknown flag ${flag} for \`clawgate ${path.join(' ')}\`${best ? `; the closest valid flag is --${best}` : ' (it takes no flags)'}`,
    'usage:',
    ...usageLines(path, spec).map((u) => `  ${u}`),
    `(clawgate ${path.join(' ')} --help lists every flag)`,
  ].join('\n');
}
