/**
 * Approval policies: who decides a pairing request, and for how long. Pure: the config parser
 * and `decideApproval` see plain values (the request, the ordered rules, the proofs the caller
 * gathered) and never a socket, the store or a clock. The gateway's connect path and `explain`
 * both call `decideApproval`, so what a device is told and what the gateway does cannot differ.
 *
 * A rule matches a request by role, requested scopes (a subset of a list, or none), client kind
 * and proof; the first matching rule decides. No matching rule means a person decides
 * (`require-approval`), as without any policy.
 */
import { BlockList, isIP } from 'node:net';
import { CLIENT_MODES, ROLES, type Role } from '@clawgate/protocol/frames';
import { isKnownScope, normalizeScopes, scopeSatisfied } from '@clawgate/protocol/scopes';

export const PROOF_KINDS = ['proxy-user', 'ssh', 'address'] as const;
export type ProofKind = (typeof PROOF_KINDS)[number];
export const POLICY_ACTIONS = ['approve', 'require-approval', 'deny'] as const;
export type PolicyAction = (typeof POLICY_ACTIONS)[number];

export interface PolicyMatch {
  role?: Role | undefined;
  /** The requested scopes must all be in this list; an empty list matches only a scopeless request. */
  scopes?: readonly string[] | undefined;
  /** Client kinds (`client.mode`, or `client.id`) the rule applies to. */
  client?: readonly string[] | undefined;
  proof?: ProofKind | undefined;
  /** `address` proof: the direct peer must be in one of these. */
  cidrs?: readonly string[] | undefined;
  /** `proxy-user` proof: only these users (default: every user `gateway.auth.trustedProxyUser` allows). */
  users?: readonly string[] | undefined;
}

export interface PolicyRule {
  name: string;
  match: PolicyMatch;
  action: PolicyAction;
  /** `approve`: the scopes it may grant (default: what was asked). */
  scopes?: readonly string[] | undefined;
  /** `approve`: the grant lasts this long (null: until revoked). */
  ttlMs: number | null;
  /** The `ttl` text as configured, for listings. */
  ttl?: string | undefined;
}

/** How the gateway reaches a node host to check its identity (`ssh` proof). */
export interface SshProbeConfig {
  user: string;
  knownHostsFile: string;
  identityFile?: string | undefined;
  port?: number | undefined;
  /** The command run on the node host; it must print `{deviceId, publicKey}` as JSON. */
  command: string;
  timeoutMs: number;
  /** The `ssh` program (default: `ssh` on PATH). */
  program?: string | undefined;
}

export interface ApprovalsConfig {
  policies: PolicyRule[];
  ssh?: SshProbeConfig | undefined;
}

export interface TrustedProxyUserConfig {
  /** Lower-case header name the trusted proxy sets to the signed-in user. */
  header: string;
  allowUsers: readonly string[];
}

export const DEFAULT_SSH_COMMAND = 'clawgate node identity --json';
export const DEFAULT_SSH_TIMEOUT_MS = 15_000;

/** What is being asked, as the gateway files it. */
export interface ApprovalRequest {
  role: Role;
  /** The scopes the request adds (normalized). */
  scopes: readonly string[];
  kind: 'new-device' | 'role-upgrade' | 'scope-upgrade';
  client: { id: string; mode: string };
  /** The client address as attributed. */
  address: string;
  /** A direct socket (no proxy in between): only then does the address say where the device is. */
  direct: boolean;
}

/** Proofs the caller established for this request. */
export interface ApprovalProofs {
  /** The user a trusted identity-aware proxy signed in (already checked against allowUsers). */
  proxyUser?: string | undefined;
  /** The node host answered over SSH with exactly this device's id and key. */
  ssh?: { host: string; user: string } | undefined;
}

export interface ApprovalDecision {
  action: PolicyAction;
  /** The rule that decided, or null when none matched (a person decides). */
  rule: string | null;
  /** The proof the rule relied on. */
  proof: ProofKind | null;
  /** `approve`: what to grant now (a subset of the request). */
  scopes: string[];
  /** `approve`: what the rule could not grant (left for a person). */
  missing: string[];
  ttlMs: number | null;
  /** For the audit entry: what the proof showed (user, host, address). */
  evidence?: Record<string, string> | undefined;
}

const NO_RULE: ApprovalDecision = { action: 'require-approval', rule: null, proof: null, scopes: [], missing: [], ttlMs: null };

const normalizeAddress = (a: string) => (a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a);

/** Why a CIDR entry is unusable, or null. */
function cidrProblem(raw: string): string | null {
  const [addr, bits, extra] = raw.trim().split('/');
  const family = isIP(addr ?? '');
  if (!addr || family === 0 || extra !== undefined) return `"${raw}" is not an IP address or CIDR`;
  if (bits !== undefined && (!/^\d+$/.test(bits) || Number(bits) > (family === 6 ? 128 : 32))) return `a bad prefix length in "${raw}"`;
  return null;
}

function inCidrs(address: string, cidrs: readonly string[]): boolean {
  const a = normalizeAddress(address);
  const family = isIP(a);
  if (family === 0) return false;
  const list = new BlockList();
  for (const c of cidrs) {
    const [addr = '', bits] = c.split('/');
    const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(bits), type);
  }
  return list.check(a, family === 6 ? 'ipv6' : 'ipv4');
}

/** Only a first-time, scopeless node pairing over a direct socket can be proven by where it comes from. */
export function addressProofApplies(r: ApprovalRequest): boolean {
  return r.role === 'node' && r.kind === 'new-device' && r.scopes.length === 0 && r.direct;
}

/** The SSH probe is for the same requests as the address proof: first-time scopeless nodes on a direct socket. */
export const sshProbeApplies = addressProofApplies;

function proofHolds(rule: PolicyRule, r: ApprovalRequest, proofs: ApprovalProofs): Record<string, string> | null {
  switch (rule.match.proof) {
    case undefined:
      return {};
    case 'proxy-user': {
      const user = proofs.proxyUser;
      if (user === undefined) return null;
      if (rule.match.users && !rule.match.users.includes(user)) return null;
      return { user };
    }
    case 'ssh':
      return proofs.ssh && sshProbeApplies(r) ? { host: proofs.ssh.host, sshUser: proofs.ssh.user } : null;
    case 'address':
      return addressProofApplies(r) && inCidrs(r.address, rule.match.cidrs ?? []) ? { address: r.address } : null;
  }
}

/** The first rule that matches decides; none matching leaves it to a person. */
export function decideApproval(request: ApprovalRequest, policies: readonly PolicyRule[], proofs: ApprovalProofs): ApprovalDecision {
  for (const rule of policies) {
    const m = rule.match;
    if (m.role !== undefined && m.role !== request.role) continue;
    if (m.scopes !== undefined && !request.scopes.every((s) => (m.scopes as readonly string[]).includes(s))) continue;
    if (m.client !== undefined && !m.client.includes(request.client.mode) && !m.client.includes(request.client.id)) continue;
    const evidence = proofHolds(rule, request, proofs);
    if (evidence === null) continue;
    const base = { rule: rule.name, proof: rule.match.proof ?? null, ttlMs: null, scopes: [], missing: [], evidence };
    if (rule.action !== 'approve') return { ...base, action: rule.action };
    const limit = rule.scopes;
    const scopes = limit ? request.scopes.filter((s) => scopeSatisfied(limit, s)) : [...request.scopes];
    return { ...base, action: 'approve', scopes, missing: request.scopes.filter((s) => !scopes.includes(s)), ttlMs: rule.ttlMs };
  }
  return NO_RULE;
}

/** Would an SSH check of the node host change the outcome? (The probe runs only then.) */
export function sshRuleFor(request: ApprovalRequest, policies: readonly PolicyRule[], proofs: ApprovalProofs): ApprovalDecision | null {
  if (!sshProbeApplies(request)) return null;
  const withSsh = decideApproval(request, policies, { ...proofs, ssh: { host: request.address, user: '' } });
  return withSsh.proof === 'ssh' ? withSsh : null;
}

// ------------------------------------------------------------------------------------------
// Durations and the config file
// ------------------------------------------------------------------------------------------

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 };
export const MIN_TTL_MS = 1000;
export const MAX_TTL_MS = 366 * 86_400_000;

/** `8h`, `30m`, `1h30m`, `7d`, `90s` → milliseconds; null for anything else or out of range (1 s to 366 d). */
export function parseDuration(text: string): number | null {
  const t = text.trim().toLowerCase();
  if (!/^(\d{1,6}[smhdw])+$/.test(t)) return null;
  let ms = 0;
  for (const [, n, unit] of t.matchAll(/(\d+)([smhdw])/g)) ms += Number(n) * (UNIT_MS[unit as string] as number);
  return ms >= MIN_TTL_MS && ms <= MAX_TTL_MS ? ms : null;
}

export class ConfigKeyError extends Error {
  constructor(
    readonly key: string,
    readonly want: string,
  ) {
    super(`config: ${key} ${want}`);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const stringList = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string' && s.length > 0);

const APPROVALS_KEYS = new Set(['policies', 'ssh', 'quorum', 'notify']);
const MATCH_KEYS = new Set(['role', 'scopes', 'client', 'proof', 'cidrs', 'users']);
const RULE_KEYS = new Set(['name', 'match', 'action', 'scopes', 'ttl']);
const SSH_KEYS = new Set(['user', 'knownHostsFile', 'identityFile', 'port', 'command', 'timeoutMs', 'program']);

/**
 * `gateway.approvals` from the config file (quorum and notify are read elsewhere). Throws
 * ConfigKeyError naming the first bad key. Unsafe rules are refused here, at startup: an
 * `approve` without a proof, and an `address` rule for anything but a scopeless node.
 */
export function parseApprovalsConfig(raw: unknown, prefix = 'gateway.approvals'): ApprovalsConfig {
  if (raw === undefined) return { policies: [] };
  if (!isObject(raw)) throw new ConfigKeyError(prefix, 'must be an object');
  // quorum and notify are read by their own modules; anything else is a typo worth stopping for.
  for (const k of Object.keys(raw))
    if (!APPROVALS_KEYS.has(k)) throw new ConfigKeyError(`${prefix}.${k}`, `is not an approvals key (${[...APPROVALS_KEYS].join(', ')})`);
  const policiesRaw = raw.policies ?? [];
  if (!Array.isArray(policiesRaw)) throw new ConfigKeyError(`${prefix}.policies`, 'must be an array of rules');
  const names = new Set<string>();
  const policies = policiesRaw.map((r, i) => parseRule(r, `${prefix}.policies[${i}]`, names));
  let ssh: SshProbeConfig | undefined;
  if (raw.ssh !== undefined) ssh = parseSsh(raw.ssh, `${prefix}.ssh`);
  const sshRule = policies.find((p) => p.match.proof === 'ssh');
  if (sshRule && !ssh)
    throw new ConfigKeyError(`${prefix}.ssh`, `is required by rule "${sshRule.name}" (proof "ssh"): set at least {"user", "knownHostsFile"}`);
  return { policies, ...(ssh ? { ssh } : {}) };
}

function parseRule(raw: unknown, key: string, names: Set<string>): PolicyRule {
  if (!isObject(raw)) throw new ConfigKeyError(key, 'must be an object {name, match, action}');
  for (const k of Object.keys(raw)) if (!RULE_KEYS.has(k)) throw new ConfigKeyError(`${key}.${k}`, 'is not a rule key (name, match, action, scopes, ttl)');
  const name = raw.name;
  if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(name))
    throw new ConfigKeyError(`${key}.name`, 'must be 1 to 64 letters, digits, ".", "_" or "-"');
  if (names.has(name)) throw new ConfigKeyError(`${key}.name`, `"${name}" is used by an earlier rule; names must be unique`);
  names.add(name);
  const action = raw.action;
  if (typeof action !== 'string' || !(POLICY_ACTIONS as readonly string[]).includes(action))
    throw new ConfigKeyError(`${key}.action`, 'must be "approve", "require-approval" or "deny"');
  const matchRaw = raw.match ?? {};
  if (!isObject(matchRaw)) throw new ConfigKeyError(`${key}.match`, 'must be an object');
  for (const k of Object.keys(matchRaw))
    if (!MATCH_KEYS.has(k)) throw new ConfigKeyError(`${key}.match.${k}`, 'is not a match key (role, scopes, client, proof, cidrs, users)');
  const match: PolicyMatch = {};
  if (matchRaw.role !== undefined) {
    if (typeof matchRaw.role !== 'string' || !(ROLES as readonly string[]).includes(matchRaw.role))
      throw new ConfigKeyError(`${key}.match.role`, 'must be "operator" or "node"');
    match.role = matchRaw.role as Role;
  }
  if (matchRaw.scopes !== undefined) {
    const s = matchRaw.scopes === 'none' ? [] : matchRaw.scopes;
    if (!stringList(s) || s.some((x) => !isKnownScope(x))) throw new ConfigKeyError(`${key}.match.scopes`, 'must be "none" or a list of known scopes');
    match.scopes = normalizeScopes(s);
  }
  if (matchRaw.client !== undefined) {
    const c = typeof matchRaw.client === 'string' ? [matchRaw.client] : matchRaw.client;
    if (!stringList(c)) throw new ConfigKeyError(`${key}.match.client`, `must be a client kind or a list of them (${CLIENT_MODES.join(', ')}, or a client id)`);
    match.client = c;
  }
  if (matchRaw.proof !== undefined) {
    if (typeof matchRaw.proof !== 'string' || !(PROOF_KINDS as readonly string[]).includes(matchRaw.proof))
      throw new ConfigKeyError(`${key}.match.proof`, 'must be "proxy-user", "ssh" or "address"');
    match.proof = matchRaw.proof as ProofKind;
  }
  if (matchRaw.cidrs !== undefined) {
    if (match.proof !== 'address') throw new ConfigKeyError(`${key}.match.cidrs`, 'is only meaningful with "proof": "address"');
    if (!stringList(matchRaw.cidrs) || matchRaw.cidrs.length === 0)
      throw new ConfigKeyError(`${key}.match.cidrs`, 'must be a non-empty list of addresses or CIDRs');
    for (const c of matchRaw.cidrs) {
      const problem = cidrProblem(c);
      if (problem) throw new ConfigKeyError(`${key}.match.cidrs`, `has ${problem}`);
    }
    match.cidrs = matchRaw.cidrs.map((c) => c.trim());
  }
  if (matchRaw.users !== undefined) {
    if (match.proof !== 'proxy-user') throw new ConfigKeyError(`${key}.match.users`, 'is only meaningful with "proof": "proxy-user"');
    if (!stringList(matchRaw.users)) throw new ConfigKeyError(`${key}.match.users`, 'must be a list of user names');
    match.users = matchRaw.users;
  }
  let scopes: string[] | undefined;
  if (raw.scopes !== undefined) {
    if (action !== 'approve') throw new ConfigKeyError(`${key}.scopes`, 'is only meaningful with "action": "approve"');
    if (!stringList(raw.scopes) && !(Array.isArray(raw.scopes) && raw.scopes.length === 0))
      throw new ConfigKeyError(`${key}.scopes`, 'must be a list of scopes');
    if ((raw.scopes as string[]).some((x) => !isKnownScope(x))) throw new ConfigKeyError(`${key}.scopes`, 'names an unknown scope');
    scopes = normalizeScopes(raw.scopes as string[]);
  }
  let ttlMs: number | null = null;
  if (raw.ttl !== undefined) {
    if (action !== 'approve') throw new ConfigKeyError(`${key}.ttl`, 'is only meaningful with "action": "approve"');
    ttlMs = typeof raw.ttl === 'string' ? parseDuration(raw.ttl) : null;
    if (ttlMs === null) throw new ConfigKeyError(`${key}.ttl`, 'must be a duration like "8h", "30m" or "7d" (1s to 366d)');
  }
  if (action === 'approve' && match.proof === undefined)
    throw new ConfigKeyError(`${key}.match.proof`, 'is required for "action": "approve" (proxy-user, ssh or address): an approval needs evidence');
  if (match.proof === 'address' || match.proof === 'ssh') {
    // Where a device connects from (or that a host answers over SSH) proves which machine it
    // is, never who may hold operator authority: only a first-time node without scopes.
    if (match.proof === 'address' && !match.cidrs) throw new ConfigKeyError(`${key}.match.cidrs`, 'is required with "proof": "address"');
    if (match.role !== 'node')
      throw new ConfigKeyError(`${key}.match.role`, `must be "node" with "proof": "${match.proof}" (operator scopes are never approved by ${match.proof})`);
    if (match.scopes && match.scopes.length > 0) throw new ConfigKeyError(`${key}.match.scopes`, `must be "none" with "proof": "${match.proof}"`);
    if (scopes && scopes.length > 0) throw new ConfigKeyError(`${key}.scopes`, `must be empty with "proof": "${match.proof}" (nodes hold no scopes)`);
  }
  return {
    name,
    match,
    action: action as PolicyAction,
    ...(scopes ? { scopes } : {}),
    ttlMs,
    ...(typeof raw.ttl === 'string' ? { ttl: raw.ttl } : {}),
  };
}

function parseSsh(raw: unknown, key: string): SshProbeConfig {
  if (!isObject(raw)) throw new ConfigKeyError(key, 'must be an object {user, knownHostsFile}');
  for (const k of Object.keys(raw)) if (!SSH_KEYS.has(k)) throw new ConfigKeyError(`${key}.${k}`, `is not an ssh key (${[...SSH_KEYS].join(', ')})`);
  // Both go on the ssh command line: a value that could read as an option is refused.
  const safe = (v: unknown) => typeof v === 'string' && v.length > 0 && !v.startsWith('-') && !/[\s\0]/.test(v);
  if (!safe(raw.user) || !/^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$/.test(raw.user as string)) throw new ConfigKeyError(`${key}.user`, 'must be a user name');
  if (typeof raw.knownHostsFile !== 'string' || !raw.knownHostsFile.startsWith('/'))
    throw new ConfigKeyError(`${key}.knownHostsFile`, 'must be an absolute path to a known_hosts file (host keys are checked strictly)');
  if (raw.identityFile !== undefined && (typeof raw.identityFile !== 'string' || !raw.identityFile.startsWith('/')))
    throw new ConfigKeyError(`${key}.identityFile`, 'must be an absolute path');
  if (raw.port !== undefined && (!Number.isInteger(raw.port) || (raw.port as number) < 1 || (raw.port as number) > 65535))
    throw new ConfigKeyError(`${key}.port`, 'must be a port number');
  if (raw.command !== undefined && (typeof raw.command !== 'string' || raw.command.trim() === ''))
    throw new ConfigKeyError(`${key}.command`, 'must be a command line');
  if (raw.timeoutMs !== undefined && (!Number.isInteger(raw.timeoutMs) || (raw.timeoutMs as number) < 100 || (raw.timeoutMs as number) > 120_000))
    throw new ConfigKeyError(`${key}.timeoutMs`, 'must be a whole number of milliseconds from 100 to 120000');
  if (raw.program !== undefined && (typeof raw.program !== 'string' || !raw.program.startsWith('/')))
    throw new ConfigKeyError(`${key}.program`, 'must be an absolute path');
  return {
    user: raw.user as string,
    knownHostsFile: raw.knownHostsFile,
    ...(raw.identityFile !== undefined ? { identityFile: raw.identityFile as string } : {}),
    ...(raw.port !== undefined ? { port: raw.port as number } : {}),
    command: (raw.command as string | undefined) ?? DEFAULT_SSH_COMMAND,
    timeoutMs: (raw.timeoutMs as number | undefined) ?? DEFAULT_SSH_TIMEOUT_MS,
    ...(raw.program !== undefined ? { program: raw.program as string } : {}),
  };
}

/** `gateway.auth.trustedProxyUser`: which header carries the signed-in user, and who may sign in. */
export function parseTrustedProxyUser(raw: unknown, key = 'gateway.auth.trustedProxyUser'): TrustedProxyUserConfig | undefined {
  if (raw === undefined) return undefined;
  if (!isObject(raw)) throw new ConfigKeyError(key, 'must be an object {header, allowUsers}');
  for (const k of Object.keys(raw)) if (k !== 'header' && k !== 'allowUsers') throw new ConfigKeyError(`${key}.${k}`, 'is not a key here (header, allowUsers)');
  if (typeof raw.header !== 'string' || !/^[A-Za-z0-9-]{1,64}$/.test(raw.header))
    throw new ConfigKeyError(`${key}.header`, 'must be a header name like "X-Forwarded-User"');
  const hop = raw.header.toLowerCase();
  if (['host', 'origin', 'cookie', 'authorization', 'x-forwarded-for', 'forwarded', 'x-real-ip'].includes(hop))
    throw new ConfigKeyError(`${key}.header`, `cannot be "${raw.header}" (it carries something else)`);
  if (!stringList(raw.allowUsers) || raw.allowUsers.length === 0) throw new ConfigKeyError(`${key}.allowUsers`, 'must be a non-empty list of user names');
  return { header: hop, allowUsers: [...raw.allowUsers] };
}

/** Startup check of a whole configuration (the CLI, and gateways built by tests). */
export function checkApprovalsConfig(
  trustedProxies: readonly string[],
  proxyUser: TrustedProxyUserConfig | undefined,
  approvals: ApprovalsConfig | undefined,
): void {
  if (proxyUser && trustedProxies.length === 0)
    throw new ConfigKeyError('gateway.auth.trustedProxyUser', 'needs gateway.trustedProxies: the user header is believed only from a trusted proxy');
  const needsProxyUser = approvals?.policies.find((p) => p.match.proof === 'proxy-user');
  if (needsProxyUser && !proxyUser)
    throw new ConfigKeyError('gateway.auth.trustedProxyUser', `is required by rule "${needsProxyUser.name}" (proof "proxy-user")`);
}
