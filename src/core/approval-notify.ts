/**
 * Approve from anywhere (`gateway.approvals.notify`): every new pairing or node surface request,
 * and its resolution, is posted to the named webhook channels through the persisted delivery
 * outbox (automations/webhook.ts), so a target that is down delays the message and never the
 * request: the request is filed first, the notification is queued after, retried with backoff
 * and dead-lettered like any other delivery.
 *
 * A request's message carries a one-time link (`#request=cga1_…` in the URL fragment) that opens
 * the Control UI on that request once its reader has signed in. The link is no credential: the
 * UI redeems it with `approval.link.open`, a method only a signed-in operator.pairing session
 * may call, and it works once and expires (state in the store's meta table, consumed by
 * compare-and-set, so once means once across instances too).
 *
 * Names and other strings from clients are escaped for each target: Discord and Slack render
 * markdown and turn `@everyone`, `<!channel>`, `<@id>` into pings, so those are broken up and
 * the bodies ask the target to resolve no mentions at all.
 */
import { cleanText } from '@clawgate/protocol/text';
import { SIGN_IN_LINK_META_PREFIX } from '../store/retention-shared.js';
import type { Store } from '../store/types.js';
import type { Clock, Random } from './env.js';
import { hashSecret, mintToken, parseToken, secretMatchesHash } from './secrets.js';

export type NotifyFormat = 'json' | 'discord' | 'slack' | 'ntfy';

/** One entry of `gateway.approvals.notify`: a channel name, or `{channel, format?, topic?}`. */
export interface NotifyTarget {
  channel: string;
  /** Absent: chosen from the channel URL (Discord and Slack webhook hosts), else `json`. */
  format?: NotifyFormat | undefined;
  /** ntfy only: the topic (the channel URL is then the ntfy server's root, which takes JSON). */
  topic?: string | undefined;
}

const FORMATS: readonly NotifyFormat[] = ['json', 'discord', 'slack', 'ntfy'];
const TOPIC_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** How long a notification's link can be opened. */
export const APPROVAL_LINK_TTL_MS = 24 * 3600_000;

/**
 * Validate `gateway.approvals.notify` against the configured webhook channel names; returns the
 * targets, or the problem naming the bad entry.
 */
export function parseNotifyTargets(raw: unknown, channelNames: readonly string[]): NotifyTarget[] | string {
  const where = 'gateway.approvals.notify';
  if (!Array.isArray(raw)) return `${where} must be a list of channel names from automations.channels.webhooks`;
  const out: NotifyTarget[] = [];
  for (const [i, entry] of raw.entries()) {
    const at = `${where}[${i}]`;
    const t: Record<string, unknown> = typeof entry === 'string' ? { channel: entry } : (entry as Record<string, unknown>);
    if (typeof t !== 'object' || t === null || Array.isArray(t)) return `${at} must be a channel name or {"channel", "format", "topic"}`;
    for (const k of Object.keys(t)) if (!['channel', 'format', 'topic'].includes(k)) return `${at}.${k} is not a notify setting (channel, format, topic)`;
    if (typeof t.channel !== 'string' || !channelNames.includes(t.channel))
      return `${at}: ${JSON.stringify(t.channel)} is not a channel of automations.channels.webhooks (${channelNames.join(', ') || 'none configured'})`;
    if (t.format !== undefined && !FORMATS.includes(t.format as NotifyFormat)) return `${at}.format must be one of ${FORMATS.join(', ')}`;
    if (t.format === 'ntfy' && (typeof t.topic !== 'string' || !TOPIC_RE.test(t.topic)))
      return `${at}.topic must be an ntfy topic (1-64 letters, digits, '_' or '-') for format ntfy`;
    if (t.format !== 'ntfy' && t.topic !== undefined) return `${at}.topic is for format ntfy only`;
    out.push({ channel: t.channel, ...(t.format ? { format: t.format as NotifyFormat } : {}), ...(t.topic ? { topic: t.topic as string } : {}) });
  }
  return out;
}

/** The format for a target: as configured, else by the webhook URL's host. */
export function formatOf(target: NotifyTarget, url: string): NotifyFormat {
  if (target.format) return target.format;
  let host = '';
  try {
    host = new URL(url).hostname.toLowerCase();
  } catch {}
  if (host === 'discord.com' || host === 'discordapp.com' || host.endsWith('.discord.com')) return 'discord';
  if (host === 'hooks.slack.com') return 'slack';
  return 'json';
}

/** What a notification says, before it is shaped for a target. Strings from clients are raw here. */
export interface ApprovalMessage {
  phase: 'requested' | 'resolved';
  /** `device`: a device pairing request; `node`: a node's command surface. */
  kind: 'device' | 'node';
  requestId: string;
  deviceId: string;
  name: string | null;
  platform: string | null;
  address: string | null;
  role: string;
  /** Scopes (device) or commands (node) approving adds. */
  adds: string[];
  confirmationCode: string | null;
  approveCommand: string;
  link: string | null;
  linkExpiresAtMs: number | null;
  approvals: { received: number; required: number } | null;
  decision: string | null;
}

const MAX_FIELD = 80;

/** Printable, one line, bounded: every target gets at least this. */
function plain(s: string | null | undefined): string {
  const t = cleanText(String(s ?? '')).replace(/[\r\n\t]+/g, ' ');
  return t.length > MAX_FIELD ? `${t.slice(0, MAX_FIELD - 1)}…` : t;
}

const ZWSP = '\u200b';

/** Discord: markdown escaped and mentions (`@everyone`, `<@id>`, `<#id>`) broken up. */
export function escapeDiscord(s: string | null | undefined): string {
  return plain(s)
    .replace(/[\\*_~`|>#[\]()-]/g, (c) => `\\${c}`)
    .replace(/@/g, `@${ZWSP}`)
    .replace(/</g, `<${ZWSP}`);
}

/** Slack mrkdwn: the three control characters as entities (so `<!channel>` is text), formatting and `@` broken up. */
export function escapeSlack(s: string | null | undefined): string {
  return plain(s)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/[*_~`]/g, (c) => `${c}${ZWSP}`)
    .replace(/@/g, `@${ZWSP}`);
}

function describe(m: ApprovalMessage, esc: (s: string | null) => string, code: (s: string) => string): { title: string; lines: string[] } {
  const who = `${esc(m.name ?? m.deviceId.slice(0, 12))}${m.platform ? ` (${esc(m.platform)})` : ''}`;
  const what = m.kind === 'node' ? 'node commands' : 'pairing';
  if (m.phase === 'resolved') {
    const progress = m.approvals && m.approvals.required > 1 ? ` after ${m.approvals.received}/${m.approvals.required} approvals` : '';
    return {
      title: `clawgate: ${what} request ${m.decision ?? 'resolved'}`,
      lines: [`${who}: request ${code(m.requestId)} was ${esc(m.decision)}${progress}.`],
    };
  }
  const adds = m.adds.length > 0 ? m.adds.map((a) => esc(a)).join(', ') : 'no scopes';
  const lines = [
    `${who}${m.address ? ` from ${esc(m.address)}` : ''} asks for ${m.kind === 'node' ? 'node commands' : `role ${esc(m.role)}`}, adding: ${adds}.`,
  ];
  if (m.confirmationCode) lines.push(`Confirmation code: ${code(m.confirmationCode)} (compare it with the one the device shows).`);
  if (m.approvals && m.approvals.required > 1) lines.push(`Needs ${m.approvals.required} approvals from distinct approvers (${m.approvals.received} so far).`);
  lines.push(`Approve on the gateway host: ${code(m.approveCommand)}`);
  return { title: `clawgate: new ${what} request`, lines };
}

/** The JSON body posted for `m` in `format` (`topic` for ntfy). */
export function notifyBody(format: NotifyFormat, m: ApprovalMessage, topic?: string): Record<string, unknown> {
  const linkLine = m.link ? `Open in the Control UI (sign in first; the link works once): ${m.link}` : null;
  if (format === 'discord') {
    const d = describe(m, escapeDiscord, (s) => `\`${s.replace(/`/g, '')}\``);
    return {
      content: [`**${d.title}**`, ...d.lines, ...(linkLine ? [linkLine] : [])].join('\n'),
      // Whatever the text holds, Discord pings nobody for it.
      allowed_mentions: { parse: [] },
    };
  }
  if (format === 'slack') {
    const d = describe(m, escapeSlack, (s) => `\`${s.replace(/`/g, '')}\``);
    const text = [`*${d.title}*`, ...d.lines, ...(m.link ? [`<${m.link}|Open in the Control UI> (sign in first; the link works once)`] : [])].join('\n');
    return { text, blocks: [{ type: 'section', text: { type: 'mrkdwn', text } }], unfurl_links: false, link_names: false };
  }
  if (format === 'ntfy') {
    // ntfy shows the message as plain text (markdown is off unless asked for).
    const d = describe(m, plain, (s) => s);
    return {
      topic,
      title: d.title,
      message: d.lines.join('\n'),
      tags: [m.phase === 'requested' ? 'key' : m.decision === 'approved' ? 'white_check_mark' : 'x'],
      priority: m.phase === 'requested' ? 4 : 3,
      ...(m.link ? { click: m.link, actions: [{ action: 'view', label: 'Open in Control UI', url: m.link, clear: true }] } : {}),
    };
  }
  const d = describe(m, plain, (s) => s);
  return {
    event: m.phase === 'requested' ? 'approval.requested' : 'approval.resolved',
    text: [d.title, ...d.lines, ...(linkLine ? [linkLine] : [])].join('\n'),
    request: {
      kind: m.kind,
      requestId: m.requestId,
      deviceId: m.deviceId,
      name: m.name === null ? null : plain(m.name),
      platform: m.platform === null ? null : plain(m.platform),
      address: m.address,
      role: m.role,
      adds: m.adds,
      confirmationCode: m.confirmationCode,
      approveCommand: m.approveCommand,
      approvals: m.approvals,
      decision: m.decision,
    },
    ...(m.link ? { link: m.link, linkExpiresAtMs: m.linkExpiresAtMs } : {}),
  };
}

// --- one-time links ---------------------------------------------------------------------------

interface StoredLink {
  hash: string;
  requestId: string;
  kind: 'device' | 'node';
  createdAtMs: number;
  expiresAtMs: number;
  usedAtMs?: number;
}

/**
 * Kept beside the Control UI sign-in links (same record shape: `usedAtMs`, `expiresAtMs`), so
 * the retention prune of sign-in links removes them too. A sign-in token's id is 16 hex digits
 * and can never name one of these keys.
 */
/** What the links use of the gateway. */
export interface LinkDeps {
  store: Pick<Store, 'getMeta' | 'setMeta' | 'setMetaIf'>;
  clock: Clock;
  random: Random;
}

const linkKey = (id: string) => `${SIGN_IN_LINK_META_PREFIX}approval.${id}`;

export async function mintRequestLink(gw: LinkDeps, requestId: string, kind: 'device' | 'node'): Promise<{ token: string; expiresAtMs: number }> {
  const minted = mintToken('approval-link', gw.random);
  const now = gw.clock.now();
  const rec: StoredLink = { hash: minted.secretHash.toString('hex'), requestId, kind, createdAtMs: now, expiresAtMs: now + APPROVAL_LINK_TTL_MS };
  await gw.store.setMeta(linkKey(minted.id), JSON.stringify(rec));
  return { token: minted.token, expiresAtMs: rec.expiresAtMs };
}

export type LinkOpen = { ok: true; requestId: string; kind: 'device' | 'node' } | { ok: false; reason: 'is not valid' | 'was used already' | 'has expired' };

/** Consume a link: succeeds once for a live, matching link (across instances: compare-and-set). */
export async function openRequestLink(gw: LinkDeps, token: string): Promise<LinkOpen> {
  const parsed = parseToken('approval-link', token);
  if (!parsed) return { ok: false, reason: 'is not valid' };
  const key = linkKey(parsed.id);
  const text = await gw.store.getMeta(key);
  if (!text) {
    hashSecret(parsed.secret); // the same work as a known id
    return { ok: false, reason: 'is not valid' };
  }
  const rec = JSON.parse(text) as StoredLink;
  if (!secretMatchesHash(parsed.secret, Buffer.from(rec.hash, 'hex'))) return { ok: false, reason: 'is not valid' };
  if (rec.usedAtMs !== undefined) return { ok: false, reason: 'was used already' };
  const now = gw.clock.now();
  if (now >= rec.expiresAtMs) return { ok: false, reason: 'has expired' };
  const used = JSON.stringify({ ...rec, usedAtMs: now });
  if (!(await gw.store.setMetaIf(key, text, used))) return { ok: false, reason: 'was used already' };
  return { ok: true, requestId: rec.requestId, kind: rec.kind };
}

/** `ws(s)://host[:port][/path]` → `http(s)://host[:port][/path]/` (where the Control UI is served). */
export function controlUiBase(wsUrl: string): string {
  const u = new URL(wsUrl);
  const scheme = u.protocol === 'wss:' || u.protocol === 'https:' ? 'https:' : 'http:';
  const path = u.pathname.replace(/\/+$/, '');
  return `${scheme}//${u.host}${path}/`;
}
