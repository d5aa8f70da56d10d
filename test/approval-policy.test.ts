/**
 * The policy decision on its own (the function the connect path and explain share): first match
 * wins, what each match key means, what each proof needs, and durations.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type ApprovalRequest, decideApproval, parseApprovalsConfig, parseDuration } from '../src/core/approval-policy.js';

const policies = parseApprovalsConfig({
  policies: [
    { name: 'no-probes', match: { client: 'probe' }, action: 'deny' },
    { name: 'readers', match: { proof: 'proxy-user', role: 'operator', scopes: ['operator.read'] }, action: 'approve', ttl: '1d' },
    { name: 'team', match: { proof: 'proxy-user', users: ['ana'], role: 'operator' }, action: 'approve', scopes: ['operator.read', 'operator.write'] },
    { name: 'homelab', match: { proof: 'ssh', role: 'node' }, action: 'approve' },
    { name: 'lan', match: { proof: 'address', cidrs: ['10.0.0.0/8', 'fd00::/8'], role: 'node' }, action: 'approve', ttl: '12h' },
    { name: 'nodes-by-hand', match: { role: 'node' }, action: 'require-approval' },
  ],
  ssh: { user: 'probe', knownHostsFile: '/etc/clawgate/known_hosts' },
}).policies;

const req = (o: Partial<ApprovalRequest>): ApprovalRequest => ({
  role: 'operator',
  scopes: ['operator.read'],
  kind: 'new-device',
  client: { id: 'test', mode: 'test' },
  address: '203.0.113.1',
  direct: true,
  ...o,
});

test('first match wins: a deny before any approve; no match leaves it to a person', () => {
  assert.equal(decideApproval(req({ client: { id: 'x', mode: 'probe' } }), policies, { proxyUser: 'ana' }).rule, 'no-probes');
  const none = decideApproval(req({}), policies, {});
  assert.deepEqual([none.action, none.rule], ['require-approval', null]);
});

test('scopes: the request must be a subset; the rule grants within its own scopes and names the rest', () => {
  const reader = decideApproval(req({}), policies, { proxyUser: 'bo' });
  assert.deepEqual([reader.action, reader.rule, reader.ttlMs], ['approve', 'readers', 86_400_000]);
  // Asking for write skips `readers` (not a subset), `team` is only for ana.
  assert.equal(decideApproval(req({ scopes: ['operator.read', 'operator.write'] }), policies, { proxyUser: 'bo' }).rule, null);
  const ana = decideApproval(req({ scopes: ['operator.pairing', 'operator.read', 'operator.write'] }), policies, { proxyUser: 'ana' });
  assert.equal(ana.rule, 'team');
  assert.deepEqual(ana.scopes, ['operator.read', 'operator.write']);
  assert.deepEqual(ana.missing, ['operator.pairing']);
  assert.deepEqual(ana.evidence, { user: 'ana' });
});

test('ssh proof: only when verified, only for a first-time scopeless node on a direct socket', () => {
  const node = req({ role: 'node', scopes: [] });
  assert.equal(decideApproval(node, policies, {}).rule, 'nodes-by-hand');
  assert.equal(decideApproval(node, policies, { ssh: { host: '203.0.113.1', user: 'probe' } }).rule, 'homelab');
  assert.equal(decideApproval({ ...node, kind: 'role-upgrade' }, policies, { ssh: { host: '203.0.113.1', user: 'probe' } }).rule, 'nodes-by-hand');
  assert.equal(decideApproval({ ...node, direct: false }, policies, { ssh: { host: '203.0.113.1', user: 'probe' } }).rule, 'nodes-by-hand');
});

test('address proof: inside the CIDRs, direct, first-time scopeless node only (IPv4, IPv4-mapped and IPv6)', () => {
  const node = req({ role: 'node', scopes: [], address: '10.1.2.3' });
  const lan = decideApproval(node, policies, {});
  assert.deepEqual([lan.rule, lan.proof, lan.ttlMs], ['lan', 'address', 12 * 3_600_000]);
  assert.equal(decideApproval({ ...node, address: '::ffff:10.9.9.9' }, policies, {}).rule, 'lan');
  assert.equal(decideApproval({ ...node, address: 'fd12::1' }, policies, {}).rule, 'lan');
  assert.equal(decideApproval({ ...node, address: '11.0.0.1' }, policies, {}).rule, 'nodes-by-hand');
  assert.equal(decideApproval({ ...node, direct: false }, policies, {}).rule, 'nodes-by-hand', 'a forwarded address proves nothing');
  assert.equal(decideApproval({ ...node, kind: 'role-upgrade' }, policies, {}).rule, 'nodes-by-hand', 'never an upgrade');
});

test('durations', () => {
  assert.equal(parseDuration('8h'), 8 * 3_600_000);
  assert.equal(parseDuration('1h30m'), 90 * 60_000);
  assert.equal(parseDuration('2w'), 14 * 86_400_000);
  for (const bad of ['', '0s', '8', 'h', '1.5h', '-1h', '400d', '8 h']) assert.equal(parseDuration(bad), null, bad);
});
