/**
 * Where the CLI reads a secret (gateway token, password) from. A command line is readable by
 * every local user (`ps`, /proc/<pid>/cmdline), so the safe forms are a file only the owner can
 * read (`--token-file`), standard input (`--token-stdin`) and the environment (readable only by
 * the same user). `--token <t>` keeps working for compatibility but says so on stderr.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { UsageError } from './usage.js';

/** The parseArgs options of both secrets, in all their forms. */
export const SECRET_FLAGS = {
  token: { type: 'string' },
  'token-file': { type: 'string' },
  'token-stdin': { type: 'boolean' },
  password: { type: 'string' },
  'password-file': { type: 'string' },
  'password-stdin': { type: 'boolean' },
} as const;

export type SecretName = 'token' | 'password';

/** What reading a secret touches; the defaults are the process's own. */
export interface SecretIo {
  env: NodeJS.ProcessEnv;
  warn(line: string): void;
  readStdin(): string;
}

export const processSecretIo: SecretIo = {
  env: process.env,
  warn: (line) => process.stderr.write(`${line}\n`),
  readStdin: readAllStdin,
};

/** A secret's value and where it came from (for messages; never the value itself). */
export interface ResolvedSecret {
  value: string;
  source: 'file' | 'stdin' | 'argv' | 'env';
}

/**
 * Read `name` from its flags (`--<name>-file`, `--<name>-stdin`, `--<name>`), else from the first
 * set variable of `envNames`. Two flag forms at once, or both secrets on stdin, are usage errors.
 */
export function readSecret(
  values: Record<string, unknown>,
  name: SecretName,
  envNames: readonly string[],
  io: SecretIo = processSecretIo,
): ResolvedSecret | undefined {
  return readSecretFlag(values, name, envNames[0], io) ?? readSecretEnv(envNames, io);
}

/** The first set (non-empty) variable of `envNames`. */
export function readSecretEnv(envNames: readonly string[], io: SecretIo = processSecretIo): ResolvedSecret | undefined {
  for (const v of envNames) {
    const text = io.env[v];
    if (text !== undefined && text !== '') return { value: text, source: 'env' };
  }
  return undefined;
}

/** `name` from its flags only; `envHint` is the variable the argv warning recommends. */
export function readSecretFlag(
  values: Record<string, unknown>,
  name: SecretName,
  envHint: string | undefined,
  io: SecretIo = processSecretIo,
): ResolvedSecret | undefined {
  const file = values[`${name}-file`] as string | undefined;
  const stdin = values[`${name}-stdin`] === true;
  const argv = values[name] as string | undefined;
  const given = [file !== undefined && `--${name}-file`, stdin && `--${name}-stdin`, argv !== undefined && `--${name}`].filter(Boolean);
  if (given.length > 1) throw new UsageError(`${given.join(' and ')} exclude each other: pass the ${name} one way`);
  if (stdin && values[`${name === 'token' ? 'password' : 'token'}-stdin`] === true) {
    throw new UsageError('--token-stdin and --password-stdin exclude each other: standard input holds one secret');
  }
  if (file !== undefined) return { value: readSecretFile(file, name), source: 'file' };
  if (stdin) return { value: nonEmpty(stripNewline(io.readStdin()), `--${name}-stdin`, name), source: 'stdin' };
  if (argv !== undefined) {
    io.warn(
      `warning: --${name} puts the ${name} on the command line, where every local user can read it (ps, /proc/<pid>/cmdline); ` +
        `use --${name}-file <path> (mode 0600), --${name}-stdin${envHint ? ` or ${envHint}` : ''} instead`,
    );
    return { value: nonEmpty(argv, `--${name}`, name), source: 'argv' };
  }
  return undefined;
}

/**
 * The secret in `path`: one line (a trailing newline is dropped). A file that group or others
 * may read is refused: the secret would be exactly as exposed as on the command line.
 */
export function readSecretFile(path: string, name: SecretName): string {
  return readOwnerOnlyFile(path, `--${name}-file`, `the ${name}`);
}

/** The one-line contents of `path`, refused unless only its owner may access it; `flag` and `what` name it in messages. */
function readOwnerOnlyFile(path: string, flag: string, what: string): string {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new UsageError(`${flag}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new UsageError(`${flag}: ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      throw new UsageError(`${flag}: refusing ${path}: group or others may access it (mode ${mode}); run chmod 600 ${path}`);
    }
    return oneLine(stripNewline(readFileSync(fd, 'utf8')), `${flag} ${path}`, what);
  } finally {
    closeSync(fd);
  }
}

/** The parseArgs options of a setup code's safe forms (the code itself is a bootstrap secret). */
export const SETUP_CODE_FLAGS = {
  'code-file': { type: 'string' },
  'code-stdin': { type: 'boolean' },
} as const;

/** The variable a setup code may come from (readable only by the same user, like CLAWGATE_TOKEN). */
export const SETUP_CODE_ENV = 'CLAWGATE_SETUP_CODE';

/**
 * A setup code (or link) from `--code-file`, `--code-stdin`, the command line (`argvCode`, given
 * as `argvForm`: `-` there means standard input) or CLAWGATE_SETUP_CODE, in that order. The code
 * carries a bootstrap token, so the command-line form warns exactly like `--token`.
 */
export function readSetupCode(
  values: Record<string, unknown>,
  argvCode: string | undefined,
  argvForm: string,
  io: SecretIo = processSecretIo,
): ResolvedSecret | undefined {
  const file = values['code-file'] as string | undefined;
  const stdin = values['code-stdin'] === true || argvCode === '-';
  const argv = argvCode !== undefined && argvCode !== '-' ? argvCode : undefined;
  const given = [file !== undefined && '--code-file', stdin && '--code-stdin', argv !== undefined && argvForm].filter(Boolean);
  if (given.length > 1) throw new UsageError(`${given.join(' and ')} exclude each other: pass the setup code one way`);
  if (stdin && (values['token-stdin'] === true || values['password-stdin'] === true)) {
    throw new UsageError('--code-stdin and --token-stdin/--password-stdin exclude each other: standard input holds one secret');
  }
  if (file !== undefined) return { value: readOwnerOnlyFile(file, '--code-file', 'the setup code'), source: 'file' };
  if (stdin) return { value: oneLine(stripNewline(io.readStdin()).trim(), '--code-stdin', 'the setup code'), source: 'stdin' };
  if (argv !== undefined) {
    io.warn(
      `warning: ${argvForm} puts the setup code (a bootstrap secret) on the command line, where every local user can read it (ps, /proc/<pid>/cmdline); ` +
        `use --code-file <path> (mode 0600), --code-stdin or ${SETUP_CODE_ENV} instead`,
    );
    return { value: oneLine(argv, argvForm, 'the setup code'), source: 'argv' };
  }
  const env = io.env[SETUP_CODE_ENV];
  if (env !== undefined && env.trim() !== '') return { value: oneLine(env.trim(), SETUP_CODE_ENV, 'the setup code'), source: 'env' };
  return undefined;
}

function stripNewline(text: string): string {
  return text.replace(/\r?\n$/, '');
}

function nonEmpty(value: string, where: string, name: SecretName): string {
  return oneLine(value, where, `the ${name}`);
}

function oneLine(value: string, where: string, what: string): string {
  if (value === '') throw new UsageError(`${where}: ${what} is empty`);
  if (/[\r\n]/.test(value)) throw new UsageError(`${where}: ${what} must be one line`);
  return value;
}

/** All of standard input, read synchronously (the CLI reads it once, before anything else does). */
function readAllStdin(): string {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(64 * 1024);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, buf, 0, buf.length, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // A non-blocking stdin with nothing yet: wait a little for the writer instead of failing.
      if (code === 'EAGAIN') {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
        continue;
      }
      if (code === 'EOF') break;
      throw new UsageError(`cannot read the secret from standard input: ${code ?? (err as Error).message}`);
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString('utf8');
}
