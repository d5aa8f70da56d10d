/**
 * The management policy table (core/management-policy.ts). `managementDenial` is checked against
 * an independent specification written here as a few rules, over the cartesian product of every
 * caller (kind × device binding × scopes × own device or another) and every target (role ×
 * scopes × other roles granted) for every action. The test fails on any combination whose
 * decision differs from the spec.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Role } from '@clawgate/protocol/frames';
import { normalizeScopes } from '@clawgate/protocol/scopes';
import { type ManagementAction, type ManagementCaller, managementDenial } from '../src/core/management-policy.js';
import type { PrincipalKind } from '../src/core/principal.js';

const READ = 'operator.read';
const WRITE = 'operator.write';
const ADMIN = 'operator.admin';
const PAIRING = 'operator.pairing';

// ---------------------------------------------------------------------------------------------
// The dimensions.

type CallerName = 'owner' | 'shared' | 'device-on-shared-secret' | 'device-bound' | 'internal';
const CALLERS: readonly CallerName[] = ['owner', 'shared', 'device-on-shared-secret', 'device-bound', 'internal'];
/** Every caller reaches the policy holding operator.pairing (dispatch checks it first), or admin. */
const CALLER_SCOPES: ReadonlyArray<readonly string[]> = [[PAIRING], [PAIRING, READ], [PAIRING, WRITE], [ADMIN]].map((s) => Object.freeze(normalizeScopes(s)));
const TARGET_SCOPES: ReadonlyArray<readonly string[]> = [[], [READ], [WRITE], [ADMIN], [PAIRING], [PAIRING, WRITE]].map((s) =>
  Object.freeze(normalizeScopes(s)),
);
const ROLES: readonly Role[] = ['operator', 'node'];
const BOOLS = [true, false] as const;
type ActionName = ManagementAction['action'] | 'rotate-to-scopes';
const ACTIONS: readonly ActionName[] = ['approve', 'reject', 'rotate', 'rotate-to-scopes', 'revoke', 'remove', 'rename'];

const TARGET = 'target-device';

function callerFor(name: CallerName, scopes: readonly string[], self: boolean): ManagementCaller | null {
  const kind: PrincipalKind = name === 'device-on-shared-secret' || name === 'device-bound' ? 'device' : (name as PrincipalKind);
  // Only a device session (or an automation acting for one) has a device of its own.
  const hasDevice = kind === 'device';
  if (self && !hasDevice) return null;
  return Object.freeze({
    kind,
    scopes: new Set(scopes),
    deviceId: hasDevice ? (self ? TARGET : 'caller-device') : undefined,
    deviceBound: name === 'device-bound',
  });
}

interface Combo {
  label: string;
  caller: ManagementCaller;
  what: ManagementAction;
  /** The facts the spec reads, spelled out. */
  facts: {
    callerName: CallerName;
    callerScopes: readonly string[];
    self: boolean;
    role: Role;
    targetScopes: readonly string[];
    otherRole: boolean;
    action: ActionName;
  };
}

function actionFor(action: ActionName, role: Role, targetScopes: readonly string[], otherRole: boolean): ManagementAction {
  const grant = { role, scopes: targetScopes };
  const grants = otherRole ? [grant, { role: role === 'operator' ? ('node' as Role) : ('operator' as Role), scopes: [] }] : [grant];
  switch (action) {
    case 'approve':
    case 'reject':
      return { action, request: { deviceId: TARGET, role, scopes: targetScopes } };
    case 'rotate':
      // Rotation keeping the grant's scopes: the target is the grant.
      return { action, deviceId: TARGET, role, scopes: null, grant: { role, scopes: [READ] } };
    case 'rotate-to-scopes':
      return { action: 'rotate', deviceId: TARGET, role, scopes: targetScopes, grant: { role, scopes: [READ] } };
    case 'revoke':
      return { action, deviceId: TARGET, role, scopes: null, grant };
    case 'remove':
    case 'rename':
      return { action, deviceId: TARGET, grants };
  }
}

function* everyCombination(): Generator<Combo> {
  for (const callerName of CALLERS)
    for (const callerScopes of CALLER_SCOPES)
      for (const self of BOOLS)
        for (const role of ROLES)
          for (const targetScopes of TARGET_SCOPES)
            for (const otherRole of BOOLS)
              for (const action of ACTIONS) {
                const caller = callerFor(callerName, callerScopes, self);
                if (!caller) continue;
                const facts = { callerName, callerScopes, self, role, targetScopes, otherRole, action };
                yield {
                  label: `${callerName}[${callerScopes.join(',')}]${self ? ' on itself' : ''}: ${action} ${role}[${targetScopes.join(',')}]${otherRole ? ' (+other role)' : ''}`,
                  caller,
                  what: actionFor(action, role, targetScopes, otherRole),
                  facts,
                };
              }
}
const COMBINATIONS = [...everyCombination()];

// ---------------------------------------------------------------------------------------------
// The specification, written from PROTOCOL.md §Device management, not from the implementation.

/** What each held scope lets the holder do (PROTOCOL.md §Scopes), spelled out for this table. */
const IMPLIES: Record<string, readonly string[]> = {
  [READ]: [READ],
  [WRITE]: [WRITE, READ],
  [ADMIN]: [ADMIN, WRITE, READ, PAIRING],
  [PAIRING]: [PAIRING],
};
const holds = (held: readonly string[], scope: string) => held.some((h) => (IMPLIES[h] ?? [h]).includes(scope));
const holdsAll = (held: readonly string[], wanted: readonly string[]) => wanted.every((s) => holds(held, s));

function spec(f: Combo['facts']): 'allow' | 'deny' {
  // 1. The owner and operator.admin manage everything.
  if (f.callerName === 'owner' || f.callerScopes.includes(ADMIN)) return 'allow';
  const isDevice = f.callerName === 'device-on-shared-secret' || f.callerName === 'device-bound';
  switch (f.action) {
    case 'approve':
      // 2. No self-approval, no node role, nothing beyond what the approver holds.
      return !f.self && f.role === 'operator' && holdsAll(f.callerScopes, f.targetScopes) ? 'allow' : 'deny';
    case 'reject':
      // 3. Rejection takes nothing away: only a device session rejecting another device's node request is refused.
      return isDevice && !f.self && f.role === 'node' ? 'deny' : 'allow';
    case 'rotate':
    case 'rotate-to-scopes':
    case 'revoke': {
      // 4. Tokens: a device session only its own, operator tokens only, and never beyond the
      //    caller's scopes (a rotation's target; for a revocation only write and admin are guarded).
      if (isDevice && !f.self) return 'deny';
      if (f.role !== 'operator') return 'deny';
      const target = f.action === 'rotate' ? [READ] : f.targetScopes;
      const guarded = f.action === 'revoke' ? target.filter((s) => s === WRITE || s === ADMIN) : target;
      return holdsAll(f.callerScopes, guarded) ? 'allow' : 'deny';
    }
    case 'remove':
    case 'rename': {
      // 5. Automations manage no other device; a device-bound session only its own, and not a
      //    device with a node role; removing a device that holds admin needs admin.
      if (f.callerName === 'internal' && !f.self) return 'deny';
      if (f.callerName === 'device-bound' && !f.self) return 'deny';
      const roles = f.otherRole ? ['operator', 'node'] : [f.role];
      if (f.callerName === 'device-bound' && roles.includes('node')) return 'deny';
      const operatorScopes = f.role === 'operator' ? f.targetScopes : [];
      if (f.action === 'remove' && operatorScopes.includes(ADMIN)) return 'deny';
      return 'allow';
    }
  }
}

describe('management policy table', () => {
  test('enumerates every caller × target × action', () => {
    // 5 callers × 4 scope sets × (self only for the two device kinds) × 2 roles × 6 target scope sets × 2 × 7 actions.
    const callers = CALLERS.reduce((n, c) => n + (c.startsWith('device') ? 2 : 1), 0) * CALLER_SCOPES.length;
    assert.equal(COMBINATIONS.length, callers * ROLES.length * TARGET_SCOPES.length * 2 * ACTIONS.length);
    assert.ok(COMBINATIONS.length > 2000);
  });

  test('every decision matches the specification', () => {
    const wrong: string[] = [];
    const seen = { allow: 0, deny: 0 };
    for (const c of COMBINATIONS) {
      const why = managementDenial(c.caller, c.what);
      const got = why === null ? 'allow' : 'deny';
      if (why !== null) assert.ok(why.length > 10, `a refusal says why: ${c.label}`);
      seen[got]++;
      const want = spec(c.facts);
      if (got !== want) wrong.push(`${c.label}: expected ${want}, got ${got}${why ? ` (${why})` : ''}`);
    }
    assert.deepEqual(wrong.slice(0, 20), [], `${wrong.length} combinations differ from the spec`);
    // Both outcomes occur: a table that allowed (or denied) everything would pass nothing here.
    assert.ok(seen.allow > 100 && seen.deny > 100, JSON.stringify(seen));
  });

  test('named rows', () => {
    const pairingOnly = callerFor('shared', [PAIRING], false) as ManagementCaller;
    const remove = (scopes: string[]): ManagementAction => ({ action: 'remove', deviceId: TARGET, grants: [{ role: 'operator', scopes }] });
    assert.match(managementDenial(pairingOnly, remove(normalizeScopes([ADMIN]))) ?? '', /cannot cut off an administrator/);
    assert.equal(managementDenial(pairingOnly, remove([READ])), null);
    const ownDevice = callerFor('device-bound', [PAIRING, READ], true) as ManagementCaller;
    assert.equal(
      managementDenial(ownDevice, { action: 'approve', request: { deviceId: TARGET, role: 'operator', scopes: [READ] } }),
      'a device cannot approve its own request',
    );
  });
});
