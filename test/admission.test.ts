/**
 * The admission decision table (PROTOCOL.md §8 Admission and pairing). `decideConnect` is checked against an
 * independent specification written here as a short list of rules, over the cartesian product
 * of every fact it sees. The test fails on any combination whose decision differs from the
 * spec, and on any outcome that is not in the listed set.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Role } from '@clawgate/protocol/frames';
import { normalizeScopes } from '@clawgate/protocol/scopes';
import { type ConnectFacts, type Credential, type Decision, decideConnect, type PendingKind } from '../src/core/admission.js';

const READ = 'operator.read';
const WRITE = 'operator.write';
const ADMIN = 'operator.admin';
const PAIRING = 'operator.pairing';

// ---------------------------------------------------------------------------------------------
// The dimensions.

type CredentialName = 'owner' | 'shared' | 'device-token' | 'bootstrap-role-in-profile' | 'bootstrap-role-not-in-profile' | 'none' | 'invalid';
const CREDENTIALS: readonly CredentialName[] = [
  'owner',
  'shared',
  'device-token',
  'bootstrap-role-in-profile',
  'bootstrap-role-not-in-profile',
  'none',
  'invalid',
];
const otherRole = (r: Role): Role => (r === 'operator' ? 'node' : 'operator');
function credentialFor(name: CredentialName, role: Role): Credential {
  switch (name) {
    case 'owner':
      return { kind: 'owner' };
    case 'shared':
      return { kind: 'shared' };
    case 'device-token':
      return { kind: 'device-token' };
    case 'bootstrap-role-in-profile':
      return { kind: 'bootstrap', roles: Object.freeze([role]) };
    case 'bootstrap-role-not-in-profile':
      return { kind: 'bootstrap', roles: Object.freeze([otherRole(role)]) };
    case 'none':
      return { kind: 'none' };
    case 'invalid':
      return { kind: 'invalid', failure: 'AUTH_TOKEN_MISMATCH' };
  }
}

const BOOLS = [true, false] as const;
const ROLES: readonly Role[] = ['operator', 'node'];
/** Requested scopes arrive normalized (admin ⇒ read + write made explicit). */
const SCOPE_ASKS: ReadonlyArray<readonly string[]> = [[], [READ], [READ, WRITE], [ADMIN], [PAIRING]].map((s) => Object.freeze(normalizeScopes(s)));
const GRANTS: ReadonlyArray<{ scopes: readonly string[] } | null> = [null, { scopes: [] }, { scopes: [READ] }, { scopes: [ADMIN] }].map((g) =>
  g ? Object.freeze({ scopes: Object.freeze([...g.scopes]) }) : null,
);

interface Combo {
  credentialName: CredentialName;
  facts: ConnectFacts;
}

function* everyCombination(): Generator<Combo> {
  for (const credentialName of CREDENTIALS)
    for (const device of BOOLS)
      for (const role of ROLES)
        for (const scopes of SCOPE_ASKS)
          for (const grant of GRANTS)
            for (const pairedOtherRole of BOOLS)
              for (const directLocal of BOOLS)
                for (const localHelperClient of BOOLS)
                  for (const autoApproveLocal of BOOLS)
                    for (const sharedSecretIsAdminOnHost of BOOLS)
                      for (const waitForApproval of BOOLS) {
                        const facts: ConnectFacts = Object.freeze({
                          credential: Object.freeze(credentialFor(credentialName, role)),
                          device,
                          role,
                          scopes,
                          grant,
                          pairedOtherRole,
                          directLocal,
                          localHelperClient,
                          autoApproveLocal,
                          sharedSecretIsAdminOnHost,
                          waitForApproval,
                        });
                        yield { credentialName, facts };
                      }
}
const COMBINATIONS = [...everyCombination()];
const EXPECTED_COUNT = CREDENTIALS.length * 2 * ROLES.length * SCOPE_ASKS.length * GRANTS.length * 2 ** 6;

// ---------------------------------------------------------------------------------------------
// The specification, written from the product principles, not from the implementation.

/** What each granted scope lets the holder do (PROTOCOL.md §10 Dispatch), spelled out for this table. */
const IMPLIES: Record<string, readonly string[]> = {
  [READ]: [READ],
  [WRITE]: [WRITE, READ],
  [ADMIN]: [ADMIN, WRITE, READ, PAIRING],
};
const grantCovers = (granted: readonly string[], scope: string) => granted.some((g) => (IMPLIES[g] ?? [g]).includes(scope));
/** What the shared secret is worth by itself (PROTOCOL.md §What the shared secret grants). */
const SHARED_CAP = [READ, WRITE];

function spec(f: ConnectFacts): Decision {
  const c = f.credential;

  // 1. A credential that was presented and did not verify is refused with its own failure.
  if (c.kind === 'invalid') return { outcome: 'refuse', detail: c.failure };

  // 2. A node is always a device: its commands must be attributable to a key.
  if (!f.device && f.role === 'node') return { outcome: 'refuse', detail: 'DEVICE_IDENTITY_REQUIRED' };

  // 3. The shared secret is handed to devices and node hosts, so by itself it is worth read and
  //    write at most; only the owner's opt-in lifts that, and only on a direct loopback socket.
  const adminOnHost = f.sharedSecretIsAdminOnHost && f.directLocal;
  const allowedByCredential = (s: string) => c.kind !== 'shared' || adminOnHost || grantCovers(SHARED_CAP, s);

  // 4. Without a device only the owner credential and the shared secret admit anyone.
  //    The owner gets every scope. A shared-secret client keeps the scopes it asked for (within
  //    the cap of rule 3) only when it is one of the local helpers on a direct loopback socket;
  //    otherwise it gets none. Device tokens and setup codes are bound to a key, so without one
  //    they prove nothing.
  if (!f.device) {
    if (c.kind === 'owner') return { outcome: 'admit-deviceless', principal: 'owner', scopes: 'all' };
    if (c.kind === 'shared')
      return { outcome: 'admit-deviceless', principal: 'shared', scopes: f.directLocal && f.localHelperClient ? f.scopes.filter(allowedByCredential) : [] };
    return { outcome: 'refuse', detail: 'DEVICE_IDENTITY_REQUIRED' };
  }

  // 5. A device must still present some credential.
  if (c.kind === 'none') return { outcome: 'refuse', detail: 'AUTH_TOKEN_MISSING' };

  // 6. A setup code is redeemed for a role of its profile, and refused for any other role.
  if (c.kind === 'bootstrap') return c.roles.includes(f.role) ? { outcome: 'redeem-bootstrap' } : { outcome: 'refuse', detail: 'AUTH_BOOTSTRAP_TOKEN_INVALID' };

  // 7. Silent pairing: only the owner credential (anywhere), or the shared secret on a direct
  //    loopback socket with policy autoApproveLocal on. A device token never pairs silently.
  const silent = c.kind === 'owner' || (c.kind === 'shared' && f.directLocal && f.autoApproveLocal);

  // 8. A role the device does not hold: approved silently when eligible (as far as the
  //    credential allows; the rest becomes a pending scope upgrade), else held as a pending
  //    request (new device, or a role upgrade when it holds another role), refused with
  //    PAIRING_REQUIRED or kept waiting when the client asked to wait.
  if (!f.grant) {
    const kind: PendingKind = f.pairedOtherRole ? 'role-upgrade' : 'new-device';
    if (!silent) return { outcome: 'hold', kind, wait: f.waitForApproval };
    return {
      outcome: 'pair-silently',
      kind,
      grantScopes: f.scopes.filter(allowedByCredential),
      missing: f.scopes.filter((s) => !allowedByCredential(s)),
    };
  }

  // 9. A role the device holds: what the grant covers is admitted as asked.
  const granted = f.grant.scopes;
  const missing = f.scopes.filter((s) => !grantCovers(granted, s));
  if (missing.length === 0) return { outcome: 'admit', scopes: f.scopes };

  // 10. Asking more than granted never refuses: the grant is widened silently by what the
  //     credential allows when silent pairing is allowed; whatever is still missing is admitted
  //     as the covered part plus one pending scope upgrade for the rest.
  const widen = silent ? missing.filter(allowedByCredential) : [];
  if (widen.length > 0)
    return {
      outcome: 'pair-silently',
      kind: 'scope-upgrade',
      grantScopes: [...new Set([...granted, ...widen])],
      missing: missing.filter((s) => !allowedByCredential(s)),
    };
  return { outcome: 'admit-with-upgrade', scopes: f.scopes.filter((s) => grantCovers(granted, s)), missing };
}

/** Every outcome the table may produce. Anything else fails the test. */
const LISTED_OUTCOMES = new Set([
  'refuse:AUTH_TOKEN_MISMATCH',
  'refuse:DEVICE_IDENTITY_REQUIRED',
  'refuse:AUTH_TOKEN_MISSING',
  'refuse:AUTH_BOOTSTRAP_TOKEN_INVALID',
  'admit-deviceless:owner',
  'admit-deviceless:shared',
  'admit',
  'admit-with-upgrade',
  'pair-silently:new-device',
  'pair-silently:role-upgrade',
  'pair-silently:scope-upgrade',
  'pair-silently:new-device:with-upgrade',
  'pair-silently:role-upgrade:with-upgrade',
  'pair-silently:scope-upgrade:with-upgrade',
  'hold:new-device:refuse',
  'hold:new-device:wait',
  'hold:role-upgrade:refuse',
  'hold:role-upgrade:wait',
  'redeem-bootstrap',
]);

function label(d: Decision): string {
  switch (d.outcome) {
    case 'refuse':
      return `refuse:${d.detail}`;
    case 'admit-deviceless':
      return `admit-deviceless:${d.principal}`;
    case 'pair-silently':
      return `pair-silently:${d.kind}${d.missing.length > 0 ? ':with-upgrade' : ''}`;
    case 'hold':
      return `hold:${d.kind}:${d.wait ? 'wait' : 'refuse'}`;
    default:
      return d.outcome;
  }
}

/** Compare decisions as sets of scopes: the order of a scope list carries no meaning. */
function canonical(d: Decision): unknown {
  const sorted = (s: readonly string[] | 'all') => (s === 'all' ? s : [...s].sort());
  switch (d.outcome) {
    case 'admit-deviceless':
    case 'admit':
      return { ...d, scopes: sorted(d.scopes) };
    case 'admit-with-upgrade':
      return { ...d, scopes: sorted(d.scopes), missing: sorted(d.missing) };
    case 'pair-silently':
      return { ...d, grantScopes: sorted(d.grantScopes), missing: sorted(d.missing) };
    default:
      return d;
  }
}

function describeFacts(c: Combo): string {
  const f = c.facts;
  return JSON.stringify({ ...f, credential: c.credentialName });
}

const RESULTS = COMBINATIONS.map((c) => ({ combo: c, decision: decideConnect(c.facts) }));

// ---------------------------------------------------------------------------------------------

describe('decideConnect: the full decision table', () => {
  test(`enumerates every combination (${EXPECTED_COUNT})`, () => {
    assert.equal(COMBINATIONS.length, EXPECTED_COUNT);
    assert.equal(new Set(COMBINATIONS.map(describeFacts)).size, EXPECTED_COUNT, 'combinations are distinct');
  });

  test('every combination decides exactly as the specification says', () => {
    const wrong: string[] = [];
    for (const { combo, decision } of RESULTS) {
      try {
        assert.deepEqual(canonical(decision), canonical(spec(combo.facts)));
      } catch {
        wrong.push(`${describeFacts(combo)}\n    got      ${JSON.stringify(decision)}\n    expected ${JSON.stringify(spec(combo.facts))}`);
      }
    }
    assert.equal(wrong.length, 0, `${wrong.length} combinations differ from the spec, e.g.:\n${wrong.slice(0, 10).join('\n')}`);
  });

  test('the outcomes produced are exactly the listed set', () => {
    const produced = new Set(RESULTS.map((r) => label(r.decision)));
    const unlisted = [...produced].filter((o) => !LISTED_OUTCOMES.has(o));
    assert.deepEqual(unlisted, [], `unlisted outcomes: ${unlisted.join(', ')}`);
    const neverSeen = [...LISTED_OUTCOMES].filter((o) => !produced.has(o));
    assert.deepEqual(neverSeen, [], `listed but never produced: ${neverSeen.join(', ')}`);
    // The spec itself stays within the list too.
    for (const c of COMBINATIONS) assert.ok(LISTED_OUTCOMES.has(label(spec(c.facts))));
  });

  test('the decision is pure: same facts, same answer; facts are not mutated', () => {
    // The facts are frozen, so any mutation would already have thrown above.
    for (const { combo, decision } of RESULTS.filter((_, i) => i % 97 === 0)) assert.deepEqual(decideConnect(combo.facts), decision);
  });
});

describe('decideConnect: security properties over every combination', () => {
  const where = (pred: (c: Combo) => boolean) => RESULTS.filter((r) => pred(r.combo));

  test('a remote process without the owner credential never pairs silently or widens a grant', () => {
    const rows = where((c) => !c.facts.directLocal && c.credentialName !== 'owner');
    assert.ok(rows.length > 0);
    for (const { combo, decision } of rows) assert.notEqual(decision.outcome, 'pair-silently', describeFacts(combo));
  });

  test('nothing pairs silently except the owner, or the shared secret on a direct local socket with autoApproveLocal', () => {
    for (const { combo, decision } of RESULTS) {
      if (decision.outcome !== 'pair-silently') continue;
      const f = combo.facts;
      const ok = combo.credentialName === 'owner' || (combo.credentialName === 'shared' && f.directLocal && f.autoApproveLocal);
      assert.ok(ok, describeFacts(combo));
      assert.ok(f.device, 'silent pairing needs a device');
    }
    // And the converse: with autoApproveLocal off only the owner pairs silently.
    for (const { combo, decision } of where((c) => !c.facts.autoApproveLocal && c.credentialName !== 'owner')) {
      assert.notEqual(decision.outcome, 'pair-silently', describeFacts(combo));
    }
    for (const { combo, decision } of where((c) => c.credentialName === 'device-token')) {
      assert.notEqual(decision.outcome, 'pair-silently', describeFacts(combo));
    }
  });

  test('admitted device scopes never exceed the grant unless paired silently', () => {
    for (const { combo, decision } of RESULTS) {
      const g = combo.facts.grant;
      if (decision.outcome === 'admit' || decision.outcome === 'admit-with-upgrade') {
        assert.ok(g && combo.facts.device, describeFacts(combo));
        for (const s of decision.scopes) assert.ok(grantCovers(g.scopes, s), `${s} beyond grant: ${describeFacts(combo)}`);
      }
      if (decision.outcome === 'admit-with-upgrade') {
        assert.ok(decision.missing.length > 0);
        assert.deepEqual([...decision.scopes, ...decision.missing].sort(), [...combo.facts.scopes].sort());
        for (const s of decision.missing) assert.ok(!grantCovers((g as { scopes: readonly string[] }).scopes, s));
      }
    }
  });

  test('a paired device asking more than granted is never refused or held', () => {
    const rows = where(
      (c) =>
        c.facts.device &&
        c.facts.grant !== null &&
        ['owner', 'shared', 'device-token'].includes(c.credentialName) &&
        c.facts.scopes.some((s) => !grantCovers((c.facts.grant as { scopes: readonly string[] }).scopes, s)),
    );
    assert.ok(rows.length > 0);
    for (const { combo, decision } of rows) assert.ok(['admit-with-upgrade', 'pair-silently'].includes(decision.outcome), describeFacts(combo));
  });

  test('a device asking for a role it does not hold is held (or waits) unless silent-eligible', () => {
    const rows = where((c) => c.facts.device && c.facts.grant === null && ['shared', 'device-token'].includes(c.credentialName));
    for (const { combo, decision } of rows) {
      const f = combo.facts;
      if (combo.credentialName === 'shared' && f.directLocal && f.autoApproveLocal) continue;
      assert.equal(decision.outcome, 'hold', describeFacts(combo));
      if (decision.outcome === 'hold') assert.equal(decision.wait, f.waitForApproval);
    }
  });

  test('a node without a device is always refused', () => {
    for (const { combo, decision } of where((c) => c.facts.role === 'node' && !c.facts.device)) {
      assert.equal(decision.outcome, 'refuse', describeFacts(combo));
    }
  });

  test('a device-less shared client keeps scopes only as a direct local helper, at most read+write unless opted in; the owner gets all', () => {
    for (const { combo, decision } of RESULTS) {
      if (decision.outcome !== 'admit-deviceless') continue;
      const f = combo.facts;
      assert.equal(f.device, false);
      if (decision.principal === 'owner') assert.equal(decision.scopes, 'all');
      else if (!(f.directLocal && f.localHelperClient)) assert.deepEqual(decision.scopes, [], describeFacts(combo));
      else if (f.sharedSecretIsAdminOnHost) assert.deepEqual(decision.scopes, f.scopes);
      else
        assert.deepEqual(
          decision.scopes,
          f.scopes.filter((s) => s === READ || s === WRITE),
          describeFacts(combo),
        );
    }
  });

  test('the shared secret alone never yields admin or pairing, unless opted in on a direct loopback socket', () => {
    const rows = where((c) => c.credentialName === 'shared' && !(c.facts.sharedSecretIsAdminOnHost && c.facts.directLocal));
    assert.ok(rows.length > 0);
    for (const { combo, decision } of rows) {
      const held = combo.facts.grant?.scopes ?? [];
      const gained =
        decision.outcome === 'admit-deviceless' && decision.scopes !== 'all'
          ? decision.scopes
          : decision.outcome === 'pair-silently'
            ? decision.grantScopes.filter((s) => !held.includes(s))
            : [];
      assert.ok(decision.outcome !== 'admit-deviceless' || decision.scopes !== 'all', describeFacts(combo));
      for (const s of gained) assert.ok(s === READ || s === WRITE, `${s} from the shared secret alone: ${describeFacts(combo)}`);
    }
    // And the opt-in does restore it: a local device asking admin is paired with admin.
    const optedIn = where(
      (c) =>
        c.credentialName === 'shared' &&
        c.facts.device &&
        c.facts.directLocal &&
        c.facts.autoApproveLocal &&
        c.facts.sharedSecretIsAdminOnHost &&
        c.facts.grant === null &&
        c.facts.scopes.includes(ADMIN),
    );
    assert.ok(optedIn.length > 0);
    for (const { combo, decision } of optedIn) {
      assert.equal(decision.outcome, 'pair-silently', describeFacts(combo));
      if (decision.outcome === 'pair-silently') assert.ok(decision.grantScopes.includes(ADMIN) && decision.missing.length === 0);
    }
  });

  test('a silent pairing that could not grant everything leaves the rest to a pending upgrade', () => {
    for (const { combo, decision } of RESULTS) {
      if (decision.outcome !== 'pair-silently') continue;
      const f = combo.facts;
      const after = decision.grantScopes;
      for (const s of f.scopes) assert.ok(grantCovers(after, s) !== decision.missing.includes(s), `${s}: ${describeFacts(combo)}`);
      if (decision.missing.length > 0) assert.equal(combo.credentialName, 'shared', describeFacts(combo));
    }
  });

  test('invalid credentials are refused with their own failure, whatever else is true', () => {
    for (const { combo, decision } of where((c) => c.credentialName === 'invalid')) {
      assert.deepEqual(decision, { outcome: 'refuse', detail: 'AUTH_TOKEN_MISMATCH' }, describeFacts(combo));
    }
  });

  test('waitForApproval only decides whether a held connect waits', () => {
    const byKey = new Map<string, Decision>();
    for (const { combo, decision } of RESULTS) byKey.set(JSON.stringify({ ...combo.facts, credential: combo.credentialName }), decision);
    for (const { combo, decision } of RESULTS.filter((r) => r.combo.facts.waitForApproval)) {
      const twin = byKey.get(JSON.stringify({ ...combo.facts, credential: combo.credentialName, waitForApproval: false })) as Decision;
      if (decision.outcome === 'hold') assert.deepEqual(twin, { ...decision, wait: false });
      else assert.deepEqual(twin, decision);
    }
  });
});

describe('decideConnect: readable examples', () => {
  const base: ConnectFacts = {
    credential: { kind: 'shared' },
    device: true,
    role: 'operator',
    scopes: [READ],
    grant: null,
    pairedOtherRole: false,
    directLocal: false,
    localHelperClient: false,
    autoApproveLocal: true,
    sharedSecretIsAdminOnHost: false,
    waitForApproval: false,
  };
  const ASK_ADMIN = normalizeScopes([ADMIN]);
  const cases: Array<[string, Partial<ConnectFacts>, Decision]> = [
    ['remote new device with the shared token is held', {}, { outcome: 'hold', kind: 'new-device', wait: false }],
    ['…and waits when it asked to', { waitForApproval: true }, { outcome: 'hold', kind: 'new-device', wait: true }],
    [
      'local new device with the shared token pairs silently',
      { directLocal: true },
      { outcome: 'pair-silently', kind: 'new-device', grantScopes: [READ], missing: [] },
    ],
    [
      'a local new device with the shared token asking admin is paired with read+write; admin waits for the owner',
      { directLocal: true, scopes: ASK_ADMIN },
      { outcome: 'pair-silently', kind: 'new-device', grantScopes: [READ, WRITE], missing: [ADMIN] },
    ],
    [
      '…and asking only pairing is paired with nothing, pairing pending',
      { directLocal: true, scopes: [PAIRING] },
      { outcome: 'pair-silently', kind: 'new-device', grantScopes: [], missing: [PAIRING] },
    ],
    [
      'the opt-in sharedSecretIsAdminOnHost restores admin on a direct loopback socket',
      { directLocal: true, scopes: ASK_ADMIN, sharedSecretIsAdminOnHost: true },
      { outcome: 'pair-silently', kind: 'new-device', grantScopes: ASK_ADMIN, missing: [] },
    ],
    ['…but not from elsewhere', { scopes: ASK_ADMIN, sharedSecretIsAdminOnHost: true }, { outcome: 'hold', kind: 'new-device', wait: false }],
    [
      'a paired local device asking pairing with the shared token gets a pending upgrade',
      { directLocal: true, grant: { scopes: [READ, WRITE] }, scopes: [PAIRING, READ] },
      { outcome: 'admit-with-upgrade', scopes: [READ], missing: [PAIRING] },
    ],
    ['…but not when autoApproveLocal is off', { directLocal: true, autoApproveLocal: false }, { outcome: 'hold', kind: 'new-device', wait: false }],
    [
      'the owner credential pairs silently from anywhere',
      { credential: { kind: 'owner' }, scopes: ASK_ADMIN },
      { outcome: 'pair-silently', kind: 'new-device', grantScopes: ASK_ADMIN, missing: [] },
    ],
    [
      'a device token asking for a new role is a role upgrade, held',
      { credential: { kind: 'device-token' }, role: 'node', scopes: [], pairedOtherRole: true, directLocal: true },
      { outcome: 'hold', kind: 'role-upgrade', wait: false },
    ],
    [
      'a paired device within its grant is admitted',
      { credential: { kind: 'device-token' }, grant: { scopes: [ADMIN] } },
      { outcome: 'admit', scopes: [READ] },
    ],
    [
      'a paired device asking more is admitted with its grant plus a pending upgrade',
      { credential: { kind: 'device-token' }, grant: { scopes: [READ] }, scopes: [READ, WRITE] },
      { outcome: 'admit-with-upgrade', scopes: [READ], missing: [WRITE] },
    ],
    [
      'a local shared-secret device asking more is widened silently',
      { directLocal: true, grant: { scopes: [READ] }, scopes: [READ, WRITE] },
      { outcome: 'pair-silently', kind: 'scope-upgrade', grantScopes: [READ, WRITE], missing: [] },
    ],
    [
      '…by read+write at most: the rest is a pending upgrade',
      { directLocal: true, grant: { scopes: [READ] }, scopes: ASK_ADMIN },
      { outcome: 'pair-silently', kind: 'scope-upgrade', grantScopes: [READ, WRITE], missing: [ADMIN] },
    ],
    [
      'a device-less local cli keeps its scopes',
      { device: false, directLocal: true, localHelperClient: true },
      { outcome: 'admit-deviceless', principal: 'shared', scopes: [READ] },
    ],
    [
      'a device-less local cli asking admin and pairing with the shared token keeps only read+write',
      { device: false, directLocal: true, localHelperClient: true, scopes: normalizeScopes([ADMIN, PAIRING]) },
      { outcome: 'admit-deviceless', principal: 'shared', scopes: [READ, WRITE] },
    ],
    [
      '…all of it with the opt-in',
      { device: false, directLocal: true, localHelperClient: true, scopes: normalizeScopes([ADMIN, PAIRING]), sharedSecretIsAdminOnHost: true },
      { outcome: 'admit-deviceless', principal: 'shared', scopes: normalizeScopes([ADMIN, PAIRING]) },
    ],
    ['a device-less remote client gets no scopes', { device: false }, { outcome: 'admit-deviceless', principal: 'shared', scopes: [] }],
    ['a device-less node is refused', { device: false, role: 'node' }, { outcome: 'refuse', detail: 'DEVICE_IDENTITY_REQUIRED' }],
    ['a device with no credential is refused', { credential: { kind: 'none' } }, { outcome: 'refuse', detail: 'AUTH_TOKEN_MISSING' }],
    ['a setup code for the asked role is redeemed', { credential: { kind: 'bootstrap', roles: ['operator'] } }, { outcome: 'redeem-bootstrap' }],
    [
      'a setup code for another role is refused',
      { credential: { kind: 'bootstrap', roles: ['node'] } },
      { outcome: 'refuse', detail: 'AUTH_BOOTSTRAP_TOKEN_INVALID' },
    ],
    [
      'a wrong token is refused even for the owner-looking local cli',
      { credential: { kind: 'invalid', failure: 'AUTH_TOKEN_MISMATCH' }, directLocal: true, device: false, localHelperClient: true },
      { outcome: 'refuse', detail: 'AUTH_TOKEN_MISMATCH' },
    ],
  ];
  for (const [name, over, expected] of cases) {
    test(name, () => {
      const facts = { ...base, ...over };
      assert.deepEqual(canonical(decideConnect(facts)), canonical(expected));
      assert.deepEqual(canonical(spec(facts)), canonical(expected), 'the spec agrees');
    });
  }
});
