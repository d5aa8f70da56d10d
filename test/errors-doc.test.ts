/**
 * docs/errors.md must mirror the error catalogue (packages/protocol/src/errors.ts): one table with the
 * columns `details.code | error.code | message | close | next step`, one row per entry, with the
 * same error.code, message template, close code (`—` = the socket stays open) and next step.
 * On failure the message prints the row to paste.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CATALOGUE, type CatalogueEntry, CLOSE, ERROR_CODES } from '@clawgate/protocol/errors';

const HEADER = ['details.code', 'error.code', 'message', 'close', 'next step'];

// Tests run from dist/test; the docs live at the repo root.
const docPath = fileURLToPath(new URL('../../docs/errors.md', import.meta.url));
const doc = readFileSync(docPath, 'utf8');

/** Split a markdown table row on unescaped pipes; `\|` inside a cell is a literal pipe. */
function cells(line: string): string[] {
  const body = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  return body.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

/** Remove one layer of code-span backticks: `` `x` `` → `x`. */
function unquote(cell: string): string {
  const m = /^`([^`]*)`$/.exec(cell);
  return m ? (m[1] as string) : cell;
}

function rowFor(detail: string, e: CatalogueEntry): string {
  const esc = (s: string) => s.replace(/\|/g, '\\|');
  return `| \`${detail}\` | \`${e.code}\` | \`${esc(e.message)}\` | ${e.close ?? '—'} | ${esc(e.next)} |`;
}

interface DocRow {
  line: number;
  detail: string;
  code: string;
  message: string;
  close: string;
  next: string;
}

function parseTable(): DocRow[] {
  const lines = doc.split('\n');
  const headers = lines.flatMap((l, i) => (l.trim().startsWith('|') && cells(l).join('|') === HEADER.join('|') ? [i] : []));
  assert.equal(headers.length, 1, `docs/errors.md must hold exactly one table with the header | ${HEADER.join(' | ')} |`);
  const start = headers[0] as number;
  assert.match(lines[start + 1] ?? '', /^\|(\s*:?-{3,}:?\s*\|){5}\s*$/, 'the header is followed by a separator row');
  const rows: DocRow[] = [];
  for (let i = start + 2; i < lines.length && (lines[i] ?? '').trim().startsWith('|'); i++) {
    const c = cells(lines[i] as string);
    assert.equal(c.length, 5, `docs/errors.md line ${i + 1} must have 5 cells: ${lines[i]}`);
    const [detail, code, message, close, next] = c as [string, string, string, string, string];
    rows.push({ line: i + 1, detail: unquote(detail), code: unquote(code), message: unquote(message), close, next });
  }
  return rows;
}

const rows = parseTable();
const entries = Object.entries(CATALOGUE) as Array<[string, CatalogueEntry]>;

test('every catalogue entry has a row in docs/errors.md', () => {
  const documented = new Set(rows.map((r) => r.detail));
  const missing = entries.filter(([d]) => !documented.has(d));
  assert.deepEqual(
    missing.map(([d]) => d),
    [],
    `add these rows to docs/errors.md:\n${missing.map(([d, e]) => rowFor(d, e)).join('\n')}`,
  );
});

test('docs/errors.md documents no code the catalogue lacks, and none twice', () => {
  const extra = rows.filter((r) => !(r.detail in CATALOGUE));
  assert.deepEqual(
    extra.map((r) => `line ${r.line}: ${r.detail}`),
    [],
    'remove these rows (or add the entries to packages/protocol/src/errors.ts)',
  );
  const seen = new Set<string>();
  const dupes = rows.filter((r) => (seen.has(r.detail) ? true : (seen.add(r.detail), false)));
  assert.deepEqual(
    dupes.map((r) => `line ${r.line}: ${r.detail}`),
    [],
  );
});

test('each row matches its catalogue entry (error.code, message template, close, next step)', () => {
  const problems: string[] = [];
  for (const r of rows) {
    const e = CATALOGUE[r.detail as keyof typeof CATALOGUE];
    if (!e) continue;
    const want = { code: e.code, message: e.message, close: e.close === null ? '—' : String(e.close), next: e.next };
    const got = { code: r.code, message: r.message, close: r.close, next: r.next };
    for (const k of Object.keys(want) as Array<keyof typeof want>) {
      if (want[k] !== got[k]) problems.push(`line ${r.line} ${r.detail} ${k}: doc ${JSON.stringify(got[k])} ≠ code ${JSON.stringify(want[k])}`);
    }
  }
  const fixes = rows.filter((r) => r.detail in CATALOGUE).map((r) => rowFor(r.detail, CATALOGUE[r.detail as keyof typeof CATALOGUE]));
  assert.deepEqual(problems, [], `expected rows:\n${fixes.join('\n')}`);
});

test('the table follows the catalogue order', () => {
  const order = entries.map(([d]) => d).filter((d) => rows.some((r) => r.detail === d));
  assert.deepEqual(
    rows.map((r) => r.detail).filter((d) => d in CATALOGUE),
    order,
  );
});

test('every error.code used is one of the closed OpenClaw codes', () => {
  for (const r of rows) assert.ok((ERROR_CODES as readonly string[]).includes(r.code), `${r.detail}: ${r.code}`);
});

test('the close-code section lists every close code and the HTTP 403 upgrade refusal', () => {
  const at = doc.search(/^## Close codes\s*$/m);
  assert.ok(at >= 0, 'docs/errors.md has a "## Close codes" section');
  const section = doc.slice(at);
  for (const code of [1000, ...Object.values(CLOSE)]) {
    assert.match(section, new RegExp(`^\\| ${code} \\|`, 'm'), `close code ${code} is listed`);
  }
  assert.match(section, /HTTP 403/);
  assert.match(section, /proxy_attribution_required/);
});
