/**
 * Paged device listing end to end: `device.pair.list` with limit/cursor/search over a real socket
 * (and without them, the whole list as before), and `clawgate devices list --limit/--cursor/--search`
 * as a real CLI process, following the next-page command it prints.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { connectGateway, GatewayRequestError } from '../src/client/connection.js';
import type { DeviceView } from '../src/methods/devices.js';
import type { SeedDevice } from '../src/store/types.js';
import { asOwner, cli, cliJson, runClawgate, startTestGateway, type TestGateway } from './helpers/gateway.js';

const T0 = 1_700_000_000_000;
/** Ten devices, created one millisecond apart; three of them named "kitchen …". */
const DEVICES: SeedDevice[] = Array.from({ length: 10 }, (_, i) => {
  const id = createHash('sha256').update(`device-${i}`).digest('hex');
  return {
    deviceId: id,
    publicKey: `pk-${i}`,
    meta: { displayName: i % 3 === 0 ? `Kitchen ${i}` : `Laptop ${i}` },
    createdAtMs: T0 + i,
    grants: [{ role: 'operator', scopes: ['operator.read'], approvedAtMs: T0 + i, approvedVia: 'manual' }],
    tokens: [{ role: 'operator', tokenId: `tok-${i}`, secretHash: createHash('sha256').update(`s-${i}`).digest(), createdAtMs: T0 + i }],
  };
});
const ALL_IDS = DEVICES.map((d) => d.deviceId);
const KITCHEN_IDS = DEVICES.filter((d) => d.meta.displayName?.startsWith('Kitchen')).map((d) => d.deviceId);

type ListResult = { pending: unknown[]; paired: DeviceView[]; nextCursor?: string | null };

describe('paged device list', () => {
  let tg: TestGateway;
  before(async () => {
    tg = await startTestGateway();
    const r = await tg.store.seedPairedDevices({ devices: DEVICES, audit: { atMs: T0, actor: 'owner', action: 'devices.seeded' } });
    assert.ok(r.ok);
  });
  after(async () => {
    await tg?.stop();
  });

  test('device.pair.list: no params lists every device as before; limit/cursor/search page through them', async () => {
    const o = await connectGateway({ url: tg.url, ...asOwner(tg), client: { id: 'cli', mode: 'cli' } });
    try {
      const whole = await o.request<ListResult>('device.pair.list', {});
      assert.deepEqual(
        whole.paired.map((d) => d.deviceId),
        ALL_IDS,
      );
      assert.equal('nextCursor' in whole, false, 'an unpaged answer keeps its old shape');

      const seen: string[] = [];
      let cursor: string | undefined;
      for (let i = 0; i < 10; i++) {
        const page = await o.request<ListResult>('device.pair.list', { limit: 4, ...(cursor ? { cursor } : {}) });
        assert.ok(page.paired.length <= 4);
        seen.push(...page.paired.map((d) => d.deviceId));
        // Each paged device carries its grants and tokens, as in the whole list.
        for (const d of page.paired)
          assert.deepEqual(
            d,
            whole.paired.find((w) => w.deviceId === d.deviceId),
          );
        if (!page.nextCursor) break;
        cursor = page.nextCursor;
      }
      assert.deepEqual(seen, ALL_IDS);

      const kitchen = await o.request<ListResult>('device.pair.list', { search: 'kitchen' });
      assert.deepEqual(
        kitchen.paired.map((d) => d.deviceId),
        KITCHEN_IDS,
      );
      assert.equal(kitchen.nextCursor, null);
      const byId = await o.request<ListResult>('device.pair.list', { search: ALL_IDS[3]?.slice(0, 10) as string, limit: 1 });
      assert.deepEqual(
        byId.paired.map((d) => d.deviceId),
        [ALL_IDS[3]],
      );

      const fail = async (params: unknown, detail: string, message?: RegExp) => {
        const e = await o.request('device.pair.list', params).catch((x: unknown) => x);
        assert.ok(e instanceof GatewayRequestError, `${JSON.stringify(params)} should fail`);
        assert.equal(e.detailCode, detail, e.message);
        if (message) assert.match(e.message, message);
      };
      await fail({ limit: 0 }, 'INVALID_PARAMS');
      await fail({ limit: 501 }, 'INVALID_PARAMS');
      await fail({ limit: 2.5 }, 'INVALID_PARAMS');
      await fail({ cursor: 'not-a-cursor' }, 'INVALID_PARAMS', /cursor is not one this gateway issued/);
      await fail({ search: '' }, 'INVALID_PARAMS');
      await fail({ search: 'a\u202eb' }, 'TEXT_NOT_PRINTABLE');
      await fail({ page: 2 }, 'INVALID_PARAMS');
    } finally {
      o.close();
    }
  });

  test('clawgate devices list --limit pages, printing the command of the next page, which runs as printed', async () => {
    const json = await cliJson<ListResult>(tg, 'devices', 'list', '--limit', '4', '--json');
    assert.deepEqual(
      json.paired.map((d) => d.deviceId),
      ALL_IDS.slice(0, 4),
    );
    assert.equal(typeof json.nextCursor, 'string');

    const seen: string[] = [];
    let r = await cli(tg, 'devices', 'list', '--limit', '4');
    for (let i = 0; ; i++) {
      assert.equal(r.code, 0, r.stderr);
      seen.push(...ALL_IDS.filter((id) => r.stdout.includes(id)));
      const next = /^more devices: (clawgate .*)$/m.exec(r.stdout)?.[1];
      if (!next) break;
      assert.ok(i < 5, 'the walk ends');
      assert.match(next, new RegExp(`--url ${tg.url.replace(/[.]/g, '\\.')} `), 'the hint carries the gateway URL');
      const words = next.split(' ').slice(1);
      r = await runClawgate(words, { CLAWGATE_STATE_DIR: tg.stateDir });
    }
    assert.deepEqual(seen, ALL_IDS);

    const searched = await cli(tg, 'devices', 'list', '--search', 'Kitchen', '--limit', '2');
    assert.equal(searched.code, 0, searched.stderr);
    assert.match(searched.stdout, /Paired \(2\)/);
    assert.match(searched.stdout, /more devices: clawgate devices list --url \S+ --limit 2 --search Kitchen --cursor \S+$/m);

    const tooMany = await cli(tg, 'devices', 'list', '--limit', '501');
    assert.equal(tooMany.code, 2);
    assert.match(tooMany.stderr, /--limit must be at most 500/);
    const badCursor = await cli(tg, 'devices', 'list', '--cursor', 'zzz');
    assert.notEqual(badCursor.code, 0);
    assert.match(badCursor.stderr, /cursor is not one this gateway issued/);
  });
});

describe('naming a device on the command line among many', () => {
  let tg: TestGateway;
  const many: SeedDevice[] = Array.from({ length: 601 }, (_, i) => ({
    deviceId: createHash('sha256').update(`desk-${i}`).digest('hex'),
    publicKey: `pk-desk-${i}`,
    // 600 devices whose names start with "Desk", then the one named exactly "Desk", paired last.
    meta: { displayName: i < 600 ? `Desk ${i}` : 'Desk' },
    createdAtMs: T0 + i,
    grants: [{ role: 'operator', scopes: ['operator.read'], approvedAtMs: T0 + i, approvedVia: 'manual' }],
    tokens: [],
  }));
  before(async () => {
    tg = await startTestGateway();
    for (let i = 0; i < many.length; i += 300) {
      const r = await tg.store.seedPairedDevices({ devices: many.slice(i, i + 300), audit: { atMs: T0, actor: 'owner', action: 'devices.seeded' } });
      assert.ok(r.ok);
    }
  });
  after(async () => {
    await tg?.stop();
  });

  test('a name is found among more matches than one page holds', async () => {
    const r = await cli(tg, 'devices', 'rename', 'Desk', 'the desk');
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await tg.store.getDevice(many[600]?.deviceId as string))?.label, 'the desk');
    assert.equal((await tg.store.getDevice(many[0]?.deviceId as string))?.label, undefined);
  });
});
