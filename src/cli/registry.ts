/**
 * Every `clawgate` command: its words, flags, usage and examples (spec.ts), and how to run it.
 * Command modules load only when their command runs (`gateway run` starts without the client
 * commands; `--help` loads none). To add a command: write its module (exporting a function of
 * the arguments after its words), then add a spec here with `run: lazy(() => import(...))`.
 * Commands never import this file or main.ts: shared helpers live in common.ts, target.ts,
 * usage.ts and state.ts.
 */
import type { CommandSpec, FlagTable } from './spec.js';

const DEFAULT_URL = 'CLAWGATE_URL, else the running gateway recorded in the state dir, else ws://127.0.0.1:18789';

/** Where the state dir is: every command takes it. */
export const STATE_DIR_FLAG: FlagTable = {
  'state-dir': { type: 'string', value: '<dir>', description: 'the state dir', default: 'CLAWGATE_STATE_DIR, else ~/.clawgate' },
};

/** How a command reaches and authenticates to a running gateway (target.ts resolves them). */
export const CONNECTION_FLAGS: FlagTable = {
  url: { type: 'string', value: '<ws-url>', description: 'the gateway to talk to', default: DEFAULT_URL },
  'token-file': { type: 'string', value: '<file>', description: 'read the gateway token from this file (mode 0600)', default: 'CLAWGATE_TOKEN' },
  'token-stdin': { type: 'boolean', description: 'read the gateway token from standard input' },
  'password-file': { type: 'string', value: '<file>', description: 'read the gateway password from this file (mode 0600)', default: 'CLAWGATE_PASSWORD' },
  'password-stdin': { type: 'boolean', description: 'read the gateway password from standard input' },
  token: { type: 'string', value: '<token>', description: 'the token on the command line (every local user can read it: prefer --token-file)' },
  password: { type: 'string', value: '<password>', description: 'the password on the command line (prefer --password-file)' },
  ...STATE_DIR_FLAG,
  'gateway-key': {
    type: 'string',
    value: '<sha256>',
    description: 'the gateway key fingerprint the server must prove before anything is sent',
    default: "CLAWGATE_GATEWAY_KEY, else the state dir's gateway-key.pem",
  },
  'tls-fingerprint': {
    type: 'string',
    value: '<sha256>',
    description: 'pin a wss:// gateway certificate by its SHA-256 fingerprint',
    default: 'CLAWGATE_TLS_FINGERPRINT; the local gateway is pinned automatically',
  },
  'no-wait': {
    type: 'boolean',
    description: 'away from the gateway host: file the pairing request of this CLI device and exit 3 instead of waiting for the approval',
  },
};

/** `--json`: one JSON line instead of the human listing. */
export const JSON_FLAG: FlagTable = { json: { type: 'boolean', description: 'print one JSON line instead of the human listing' } };

const CONNECTION = { title: 'Connection flags', flags: CONNECTION_FLAGS };
const OUTPUT = { title: 'Output', flags: JSON_FLAG };

/** How `gateway run`, `doctor` and `gateway install-service` configure the gateway (gateway-config.ts). */
export const GATEWAY_FLAGS_SPEC: FlagTable = {
  port: { type: 'string', value: '<n>', description: 'TCP port to listen on (0 picks a free one)', default: 'CLAWGATE_PORT, else 18789' },
  bind: {
    type: 'string',
    value: 'loopback|lan|<address>',
    description: 'address to listen on; lan listens on every interface and advertises the first LAN IPv4',
    default: 'loopback',
  },
  ...STATE_DIR_FLAG,
  'token-file': {
    type: 'string',
    value: '<file>',
    description: 'the gateway token clients present (mode 0600)',
    default: 'CLAWGATE_GATEWAY_TOKEN, else generated',
  },
  'token-stdin': { type: 'boolean', description: 'read the gateway token from standard input' },
  'password-file': { type: 'string', value: '<file>', description: 'accept this gateway password (mode 0600)', default: 'CLAWGATE_GATEWAY_PASSWORD' },
  'password-stdin': { type: 'boolean', description: 'read the gateway password from standard input' },
  token: { type: 'string', value: '<token>', description: 'the token on the command line (every local user can read it: prefer --token-file)' },
  password: { type: 'string', value: '<password>', description: 'the password on the command line (prefer --password-file)' },
  config: { type: 'string', value: '<file>', description: 'a JSON config file (flags win over it; docs/operations.md)' },
  'public-url': {
    type: 'string',
    value: 'wss://host[/path]',
    description: 'the URL clients use (setup codes and links point there)',
    default: 'CLAWGATE_PUBLIC_URL',
  },
  'context-path': { type: 'string', value: '/path', description: 'serve under this URL path (behind a proxy)', default: '/' },
  tls: { type: 'boolean', description: 'serve TLS with a generated self-signed certificate' },
  'tls-cert': { type: 'string', value: '<pem>', description: 'serve TLS with this certificate (with --tls-key)' },
  'tls-key': { type: 'string', value: '<pem>', description: 'the private key of --tls-cert' },
  'trusted-proxy': { type: 'string', multiple: true, value: '<addr|cidr>', description: 'a reverse proxy whose X-Forwarded-For is believed', default: 'none' },
  store: { type: 'string', value: 'sqlite|postgres', description: 'where the state lives', default: 'sqlite in the state dir' },
  'postgres-url': { type: 'string', value: '<url>', description: 'the PostgreSQL database of --store postgres', default: 'CLAWGATE_POSTGRES_URL' },
  metrics: { type: 'boolean', description: 'serve Prometheus /metrics (loopback only unless configured)' },
};
const GATEWAY = { title: 'Gateway flags', flags: GATEWAY_FLAGS_SPEC };

/** A command whose module loads on demand. */
function lazy<M>(load: () => Promise<M>, pick: (m: M, args: string[]) => Promise<number> | number): (args: string[]) => Promise<number> {
  return async (args) => pick(await load(), args);
}

const devices = () => import('./devices.js');
const nodes = () => import('./nodes.js');
const automations = () => import('./automations.js');
const companion = () => import('./companion.js');
const deviceArg = '<device> is a device id, a unique prefix of one, or its name (clawgate devices list shows them)';
const nodeArg = '<node> is a node id, a unique prefix of one, or its name';

function deviceSub(name: string, summary: string, usage: string, example: string, own: FlagTable = {}, notes: string[] = []): CommandSpec {
  return {
    name,
    summary,
    usage: [usage],
    flags: [...(Object.keys(own).length > 0 ? [{ title: 'Flags', flags: own }] : []), OUTPUT, CONNECTION],
    examples: [example],
    notes,
    run: lazy(devices, (m, a) => m.devicesCommand(name, a)),
  };
}

function nodeSub(name: string, summary: string, usage: string, example: string, own: FlagTable = {}): CommandSpec {
  return {
    name,
    summary,
    usage: [usage],
    flags: [...(Object.keys(own).length > 0 ? [{ title: 'Flags', flags: own }] : []), OUTPUT, CONNECTION],
    examples: [example],
    notes: [nodeArg],
    run: lazy(nodes, (m, a) => m.nodesCommand(name, a)),
  };
}

function automationSub(
  group: 'cron' | 'channels' | 'sessions' | 'chat',
  name: string,
  summary: string,
  usage: string,
  example: string,
  own: FlagTable = {},
  connection: FlagTable = CONNECTION_FLAGS,
): CommandSpec {
  const pick = { cron: 'cronCommand', channels: 'channelsCommand', sessions: 'sessionsCommand', chat: 'chatCommand' } as const;
  return {
    name,
    summary,
    usage: [usage],
    flags: [...(Object.keys(own).length > 0 ? [{ title: 'Flags', flags: own }] : []), OUTPUT, { title: 'Connection flags', flags: connection }],
    examples: [example],
    run: lazy(automations, (m, a) => m[pick[group]](name, a)),
  };
}

const DEVICE_FLAG: FlagTable = { device: { type: 'string', value: '<device>', description: 'the device (id, unique id prefix or name)' } };
const ROLE_FLAG: FlagTable = { role: { type: 'string', value: 'operator|node', description: 'which of the device’s roles' } };
const NODE_FLAG: FlagTable = { node: { type: 'string', value: '<node>', description: 'the node (id, unique id prefix or name)' } };
const LIMIT: FlagTable = { limit: { type: 'string', value: '<n>', description: 'show at most this many' } };
const GATEWAY_URL_FLAG: FlagTable = { 'gateway-url': { type: 'string', value: '<ws-url>', description: 'the gateway to talk to (same as --url)' } };
const { url: _gatewayUrl, ...CONNECTION_WITHOUT_URL } = CONNECTION_FLAGS;

export const COMMANDS: CommandSpec[] = [
  {
    name: 'gateway',
    summary: 'run the gateway, and read what it keeps in its state dir',
    defaultSub: 'run',
    subcommands: [
      {
        name: 'run',
        summary: 'start the gateway in the foreground (SIGINT/SIGTERM stop it cleanly)',
        usage: ['[--port 18789] [--bind loopback|lan|<address>] [--token-file <f>] [--tls] [--public-url wss://host] [--store sqlite|postgres] …'],
        flags: [GATEWAY],
        examples: ['clawgate gateway run', 'clawgate gateway run --bind lan --token-file ~/.clawgate-token --tls'],
        notes: ['A non-loopback bind needs authentication you chose (--token-file, --password-file or CLAWGATE_GATEWAY_TOKEN).'],
        run: lazy(
          () => import('./gateway-run.js'),
          (m, a) => m.gatewayRun(a),
        ),
      },
      {
        name: 'token',
        summary: 'print the gateway token the running gateway accepts',
        usage: ['[--state-dir <dir>]'],
        flags: [{ title: 'Flags', flags: STATE_DIR_FLAG }],
        examples: ['clawgate gateway token', 'OPENCLAW_GATEWAY_TOKEN="$(clawgate gateway token)" openclaw gateway call health --json'],
        notes: [
          'When the gateway runs with a token from --token-file or its config file, that token is printed; one from the',
          'environment or standard input cannot be read back, and the command says where it came from instead (exit 1).',
        ],
        run: lazy(
          () => import('./gateway-run.js'),
          (m, a) => m.gatewayToken(a),
        ),
      },
      {
        name: 'key',
        summary: 'print the gateway key fingerprint (clients pass it as --gateway-key)',
        usage: ['[--state-dir <dir>] [--json]'],
        flags: [{ title: 'Flags', flags: { ...STATE_DIR_FLAG, ...JSON_FLAG } }],
        examples: ['clawgate gateway key --json'],
        run: lazy(
          () => import('./gateway-run.js'),
          (m, a) => m.gatewayKey(a),
        ),
      },
      {
        name: 'install-service',
        summary: 'print a systemd unit that runs this gateway',
        usage: ['--print [gateway run flags] [--user <u>] [--description <text>]'],
        flags: [
          {
            title: 'Flags',
            flags: {
              print: { type: 'boolean', description: 'print the unit to standard output (nothing is ever written to system files)' },
              user: { type: 'string', value: '<user>', description: 'the account the service runs as', default: 'the current user' },
              description: { type: 'string', value: '<text>', description: 'the unit’s Description=' },
            },
          },
          GATEWAY,
        ],
        examples: ['clawgate gateway install-service --print --token-file /etc/clawgate/token | sudo tee /etc/systemd/system/clawgate.service'],
        run: lazy(
          () => import('./remote.js'),
          (m, a) => m.installServiceCommand(a),
        ),
      },
    ],
  },
  {
    name: 'doctor',
    summary: 'check config, store, TLS, trusted proxies, and that the advertised URL reaches the gateway',
    usage: ['[gateway run flags] [--tls-fingerprint <sha256>] [--timeout <ms>] [--json]'],
    flags: [
      {
        title: 'Flags',
        flags: {
          'tls-fingerprint': { type: 'string', value: '<sha256>', description: 'the certificate expected at the public URL' },
          timeout: { type: 'string', value: '<ms>', description: 'how long each reachability probe waits', default: '5000' },
          ...JSON_FLAG,
        },
      },
      GATEWAY,
    ],
    examples: ['clawgate doctor --config /etc/clawgate.json'],
    run: lazy(
      () => import('./remote.js'),
      (m, a) => m.doctorCommand(a),
    ),
  },
  {
    name: 'call',
    summary: 'call one gateway method and print its result as JSON',
    usage: ['<method> [--params <json>] [--timeout <ms>] [--json]'],
    flags: [
      {
        title: 'Flags',
        flags: {
          params: { type: 'string', value: '<json>', description: 'the method’s parameters as JSON', default: 'none' },
          timeout: { type: 'string', value: '<ms>', description: 'how long to wait for the answer', default: '30000' },
        },
      },
      { title: 'Output', flags: { json: { type: 'boolean', description: 'print the result on one line' } } },
      CONNECTION,
    ],
    examples: ['clawgate call health', 'clawgate call node.list --json'],
    notes: ['Without a token or owner credential, `call` uses the device credentials `clawgate pair` stored in <state-dir>/client/.'],
    run: lazy(
      () => import('./call.js'),
      (m, a) => m.call(a),
    ),
  },
  {
    name: 'devices',
    summary: 'list, approve and manage paired devices',
    subcommands: [
      deviceSub(
        'list',
        'list pending pairing requests and paired devices (all, or a page at a time)',
        '[--limit <n>] [--search <prefix>] [--cursor <c>] [--json]',
        'clawgate devices list --limit 100 --search kitchen',
        {
          limit: { type: 'string', value: '<n>', description: 'devices per page, 1 to 500; prints the command of the next page', default: 'every device' },
          search: { type: 'string', value: '<prefix>', description: 'only devices whose id or name starts with it' },
          cursor: { type: 'string', value: '<c>', description: 'the page after the one that printed it' },
        },
        ['Any of --limit, --search or --cursor lists one page (100 devices unless --limit says otherwise).'],
      ),
      deviceSub(
        'approve',
        'approve a pending pairing request (or a device’s pending request)',
        '<requestId|device> [--ttl <duration>] [--json]',
        'clawgate devices approve 3f9c2a --ttl 8h',
        {
          ttl: {
            type: 'string',
            value: '<duration>',
            description: 'the approval lasts this long (8h, 30m, 1h30m, 7d; 1s to 366d), then the added scopes or the role are withdrawn live',
            default: 'until revoked',
          },
        },
        [
          'No implicit "latest": name what you approve. A request id, or a device (id, unique id prefix or name).',
          'Under a quorum the ttl of the approval that completes it applies (docs/approvals.md).',
        ],
      ),
      deviceSub(
        'extend',
        'move the end of a time-bound grant to <duration> from now (a connected device is told)',
        '<device> --role operator|node --ttl <duration> [--json]',
        'clawgate devices extend 3f9c2a --role operator --ttl 4h',
        {
          ...DEVICE_FLAG,
          ...ROLE_FLAG,
          ttl: { type: 'string', value: '<duration>', description: 'how long from now the grant lasts (8h, 30m, 7d; 1s to 366d)' },
        },
        [deviceArg, 'Only a grant approved with a ttl can be extended (GRANT_NOT_TIME_BOUND otherwise); a device never extends its own grant.'],
      ),
      deviceSub(
        'reject',
        'reject a pending pairing request (or a device’s pending request)',
        '<requestId|device> [--json]',
        'clawgate devices reject 5d1e7b20-…',
      ),
      deviceSub('remove', 'remove a paired device (its live connections close)', '<device> [--json]', 'clawgate devices remove "Ana’s laptop"', DEVICE_FLAG, [
        deviceArg,
      ]),
      deviceSub(
        'rename',
        'give a paired device a label',
        '<device> <name> [--json]',
        'clawgate devices rename 3f9c2a "build box"',
        { ...DEVICE_FLAG, name: { type: 'string', value: '<name>', description: 'the new label' } },
        [deviceArg],
      ),
      deviceSub(
        'rotate',
        'issue a new token for one role of a device (a connected device gets it pushed live)',
        '--device <device> --role operator|node [--scope <s>…] [--json]',
        'clawgate devices rotate --device 3f9c2a --role operator --scope operator.read',
        {
          ...DEVICE_FLAG,
          ...ROLE_FLAG,
          scope: { type: 'string', multiple: true, value: '<scope>', description: 'narrow the new token to these scopes', default: 'the scopes it holds' },
        },
        [deviceArg],
      ),
      deviceSub(
        'revoke',
        'revoke one role’s token of a device (its live connections close)',
        '--device <device> --role operator|node [--json]',
        'clawgate devices revoke --device 3f9c2a --role node',
        { ...DEVICE_FLAG, ...ROLE_FLAG },
        [deviceArg],
      ),
    ],
  },
  {
    name: 'explain',
    summary: 'what a device holds, what is pending and what approving it needs; whether a call would pass',
    usage: ['<device|requestId> [--method <method>] [--params <json>] [--json]'],
    flags: [
      {
        title: 'Flags',
        flags: {
          method: { type: 'string', value: '<method>', description: 'also say whether this device may call this method, and if not what would fix it' },
          params: { type: 'string', value: '<json>', description: 'the parameters of --method as JSON' },
        },
      },
      OUTPUT,
      CONNECTION,
    ],
    examples: ['clawgate explain build-box --method node.invoke'],
    notes: ['<device> is a device id or its name (the gateway resolves it); a pending request id works too.'],
    run: lazy(
      () => import('./explain.js'),
      (m, a) => m.explainCommand(a),
    ),
  },
  {
    name: 'audit',
    summary: 'print the audit log, or verify it against the head signed into the state dir',
    usage: ['[--limit <n>] [--json]', '--verify [--state-dir <dir>] [--store postgres --postgres-url <url>] [--json]'],
    flags: [
      {
        title: 'Flags',
        flags: {
          ...LIMIT,
          verify: { type: 'boolean', description: 'read the store itself (no gateway needed) and check the chain and its signed head' },
          store: { type: 'string', value: 'sqlite|postgres', description: 'with --verify: where the log lives', default: 'sqlite' },
          'postgres-url': { type: 'string', value: '<url>', description: 'with --verify --store postgres: the database' },
          config: { type: 'string', value: '<file>', description: 'with --verify: the gateway config file naming the store' },
        },
      },
      OUTPUT,
      CONNECTION,
    ],
    examples: ['clawgate audit --limit 20', 'clawgate audit --verify'],
    run: lazy(devices, (m, a) => m.auditCommand(a)),
  },
  {
    name: 'nodes',
    summary: 'list, approve and invoke node hosts',
    subcommands: [
      nodeSub('list', 'list paired nodes and their commands', '[--json]', 'clawgate nodes list'),
      nodeSub('pending', 'list node command surfaces waiting for approval', '[--json]', 'clawgate nodes pending'),
      nodeSub('approve', 'approve a node’s pending command surface', '<requestId|node> [--json]', 'clawgate nodes approve build-box'),
      nodeSub('reject', 'reject a node’s pending command surface', '<requestId|node> [--json]', 'clawgate nodes reject build-box'),
      nodeSub('describe', 'show one node: declared and approved commands, caps', '<node> [--json]', 'clawgate nodes describe build-box', NODE_FLAG),
      nodeSub('rename', 'rename a node', '<node> <name> [--json]', 'clawgate nodes rename build-box ci-runner', NODE_FLAG),
      nodeSub('remove', 'remove a node (its node connections close)', '<node> [--json]', 'clawgate nodes remove build-box', NODE_FLAG),
      nodeSub(
        'invoke',
        'run one command on a node and print its result',
        '--node <node> --command <cmd> [--params <json>] [--timeout <ms>] [--json]',
        'clawgate nodes invoke --node build-box --command system.which --params \'{"name":"git"}\'',
        {
          ...NODE_FLAG,
          command: { type: 'string', value: '<cmd>', description: 'the node command, e.g. system.run' },
          params: { type: 'string', value: '<json>', description: 'its parameters as JSON' },
          timeout: { type: 'string', value: '<ms>', description: 'how long the gateway waits for the node', default: '30000' },
        },
      ),
    ],
  },
  {
    name: 'qr',
    summary: 'mint a setup code (QR) that pairs one new device; list or revoke setup codes',
    usage: [
      '[--profile operator|node|operator+node] [--scopes <s>…] [--label <name>] [--ttl 10m] [--public-url <url>] [--json]',
      '--list [--json]',
      '--revoke <setupId> [--json]',
    ],
    flags: [
      {
        title: 'Flags',
        flags: {
          profile: { type: 'string', value: 'operator|node|operator+node', description: 'what the paired device may be', default: 'operator' },
          scopes: { type: 'string', multiple: true, value: '<s>', description: 'operator scopes (repeat, comma-separate, or list words after it)' },
          scope: { type: 'string', multiple: true, value: '<s>', description: 'same as --scopes' },
          label: { type: 'string', value: '<name>', description: 'a label for the code and the device it pairs' },
          ttl: { type: 'string', value: '<duration>', description: 'how long the code stays redeemable (10s to 24h)', default: '10m' },
          'public-url': {
            type: 'string',
            value: '<url>',
            description: 'the gateway URL the code carries',
            default: "the gateway's public URL, else the URL dialled",
          },
          list: { type: 'boolean', description: 'list setup codes and who redeemed them' },
          revoke: { type: 'string', value: '<setupId>', description: 'cancel a setup code' },
        },
      },
      OUTPUT,
      CONNECTION,
    ],
    examples: ['clawgate qr --label "Ana’s phone" --ttl 5m', 'clawgate qr --profile node'],
    run: lazy(
      () => import('./qr.js'),
      (m, a) => m.qrCommand(a),
    ),
  },
  {
    name: 'dashboard',
    summary: 'print a one-time sign-in link for the Control UI',
    usage: ['[--ttl 2m] [--json]'],
    flags: [
      { title: 'Flags', flags: { ttl: { type: 'string', value: '<duration>', description: 'how long the link works', default: '2m' } } },
      OUTPUT,
      CONNECTION,
    ],
    examples: ['clawgate dashboard'],
    run: lazy(
      () => import('./dashboard.js'),
      (m, a) => m.dashboardCommand(a),
    ),
  },
  {
    name: 'pair',
    summary: 'redeem a setup code (or oc-pair:// link) on this machine (client side)',
    usage: ['--code-file <f> | --code-stdin | - [--name <n>] [--node] [--url <gateway-url>] [--json]'],
    flags: [
      {
        title: 'Flags',
        flags: {
          'code-file': { type: 'string', value: '<file>', description: 'read the setup code from this file (mode 0600)', default: 'CLAWGATE_SETUP_CODE' },
          'code-stdin': { type: 'boolean', description: 'read the setup code from standard input (also `-`)' },
          name: { type: 'string', value: '<name>', description: 'the display name this device asks for', default: 'the host name' },
          node: { type: 'boolean', description: 'connect as a node (role node) instead of an operator' },
          url: { type: 'string', value: '<gateway-url>', description: 'dial this URL instead of the one in the code' },
          timeout: { type: 'string', value: '<ms>', description: 'how long to wait for the gateway', default: '30000' },
          ...STATE_DIR_FLAG,
          ...JSON_FLAG,
        },
      },
    ],
    examples: ['clawgate pair --code-file ~/setup-code.txt --name "Ana’s laptop"'],
    notes: ['`pair <code>` works but shows the code (a bootstrap secret) to every local user (ps).'],
    run: lazy(
      () => import('./client.js'),
      (m, a) => m.pairCommand(a),
    ),
  },
  {
    name: 'status',
    summary: 'stored gateways, roles, scopes and connection state of this machine as a client',
    usage: ['--client [--offline] [--timeout <ms>] [--json]'],
    flags: [
      {
        title: 'Flags',
        flags: {
          client: { type: 'boolean', description: 'show this machine’s client credentials (the gateway itself: clawgate call status)' },
          offline: { type: 'boolean', description: 'do not connect: show only what is stored' },
          timeout: { type: 'string', value: '<ms>', description: 'how long each connection check waits', default: '5000' },
          ...STATE_DIR_FLAG,
          ...JSON_FLAG,
        },
      },
    ],
    examples: ['clawgate status --client'],
    run: lazy(
      () => import('./client.js'),
      (m, a) => m.statusCommand(a),
    ),
  },
  {
    name: 'cron',
    summary: 'scheduled jobs: add, list, remove, run now, show runs',
    subcommands: [
      automationSub(
        'cron',
        'add',
        'add a job: a schedule (--cron or --every) and an action (--send, --session or --node)',
        '--name <n> (--cron "<m h dom mon dow>" [--tz <zone>] | --every <10s|5m|1h>) (--send <channel> --content <text> | --session <key> --text <text> [--spawn] | --node <node> --command <cmd>)',
        'clawgate cron add --name nightly --cron "0 3 * * *" --send ops --content "backup done?"',
        {
          name: { type: 'string', value: '<name>', description: 'the job’s name' },
          cron: { type: 'string', value: '"<m h dom mon dow>"', description: 'a cron schedule' },
          tz: { type: 'string', value: '<zone>', description: 'time zone of --cron', default: 'UTC' },
          every: { type: 'string', value: '<duration>', description: 'a fixed interval, like 10s, 5m, 1h' },
          send: { type: 'string', value: '<channel>', description: 'action: post to this channel' },
          content: { type: 'string', value: '<text>', description: 'what --send posts' },
          username: { type: 'string', value: '<name>', description: 'the name --send posts as' },
          session: { type: 'string', value: '<key>', description: 'action: post to this chat session' },
          text: { type: 'string', value: '<text>', description: 'what --session posts' },
          spawn: { type: 'boolean', description: 'with --session: spawn a child session per run' },
          'spawn-label': { type: 'string', value: '<label>', description: 'the label of spawned sessions (implies --spawn)' },
          node: { type: 'string', value: '<node>', description: 'action: invoke a command on this node' },
          command: { type: 'string', value: '<cmd>', description: 'the node command of --node' },
          params: { type: 'string', value: '<json>', description: 'its parameters as JSON' },
          disabled: { type: 'boolean', description: 'add the job disabled' },
        },
      ),
      automationSub('cron', 'list', 'list jobs with their next and last run', '[--json]', 'clawgate cron list'),
      automationSub('cron', 'remove', 'remove a job', '<job> [--json]', 'clawgate cron remove nightly'),
      automationSub('cron', 'run', 'run a job now', '<job> [--json]', 'clawgate cron run nightly'),
      automationSub('cron', 'runs', 'show a job’s recent runs', '<job> [--limit <n>] [--json]', 'clawgate cron runs nightly --limit 5', LIMIT),
    ],
  },
  {
    name: 'channels',
    summary: 'outgoing webhook channels and their deliveries',
    subcommands: [
      automationSub(
        'channels',
        'add',
        'add a webhook channel (here --url is the webhook’s; the gateway is --gateway-url)',
        'webhook --name <n> --url <webhook-url> [--username <u>] [--gateway-url <ws-url>] [--json]',
        'clawgate channels add webhook --name ops --url https://hooks.example.com/T0/B0/x',
        {
          name: { type: 'string', value: '<name>', description: 'the channel’s name' },
          url: { type: 'string', value: '<webhook-url>', description: 'the webhook’s http(s) URL' },
          username: { type: 'string', value: '<name>', description: 'the name messages are posted as' },
          ...GATEWAY_URL_FLAG,
        },
        CONNECTION_WITHOUT_URL,
      ),
      automationSub('channels', 'remove', 'remove a channel', '<name> [--json]', 'clawgate channels remove ops', {
        name: { type: 'string', value: '<name>', description: 'the channel (instead of the argument)' },
        ...GATEWAY_URL_FLAG,
      }),
      automationSub('channels', 'list', 'list channels', '[--json]', 'clawgate channels list', GATEWAY_URL_FLAG),
      automationSub(
        'channels',
        'deliveries',
        'list webhook deliveries',
        '[--channel <n>] [--status <s>] [--limit <n>] [--json]',
        'clawgate channels deliveries --status failed',
        {
          channel: { type: 'string', value: '<name>', description: 'only this channel' },
          status: { type: 'string', value: '<status>', description: 'only deliveries in this state (pending, delivered, failed)' },
          ...LIMIT,
          ...GATEWAY_URL_FLAG,
        },
      ),
      automationSub('channels', 'dead-letters', 'list deliveries that gave up', '[--channel <n>] [--limit <n>] [--json]', 'clawgate channels dead-letters', {
        channel: { type: 'string', value: '<name>', description: 'only this channel' },
        ...LIMIT,
        ...GATEWAY_URL_FLAG,
      }),
    ],
  },
  {
    name: 'sessions',
    summary: 'chat sessions: list, create, spawn children',
    subcommands: [
      automationSub('sessions', 'list', 'list sessions', '[--parent <key>] [--limit <n>] [--json]', 'clawgate sessions list', {
        parent: { type: 'string', value: '<key>', description: 'only children of this session' },
        ...LIMIT,
      }),
      automationSub('sessions', 'create', 'create a session', '[<key>] [--label <l>] [--json]', 'clawgate sessions create desk-1', {
        label: { type: 'string', value: '<label>', description: 'a label' },
      }),
      automationSub('sessions', 'spawn', 'create a child session', '<parentKey> [<key>] [--label <l>] [--json]', 'clawgate sessions spawn desk-1', {
        label: { type: 'string', value: '<label>', description: 'a label' },
      }),
    ],
  },
  {
    name: 'chat',
    summary: 'send to and read a chat session',
    subcommands: [
      automationSub('chat', 'send', 'post a message', '<sessionKey> <text> [--idempotency-key <k>] [--json]', 'clawgate chat send desk-1 "deploy finished"', {
        'idempotency-key': { type: 'string', value: '<key>', description: 'send at most once per key' },
      }),
      automationSub('chat', 'history', 'read messages', '<sessionKey> [--limit <n>] [--before <seq>] [--json]', 'clawgate chat history desk-1 --limit 20', {
        ...LIMIT,
        before: { type: 'string', value: '<seq>', description: 'only messages before this sequence number' },
      }),
    ],
  },
  {
    name: 'node',
    summary: 'run this machine as a node host of a gateway',
    subcommands: [
      {
        name: 'run',
        summary: 'run a headless node host (its own state dir: ~/.clawgate-node)',
        usage: [
          '--code-file <f> | --code-stdin [--name <name>] [--commands system.run,system.which] [--exec-policy deny|allowlist|full]',
          '--url <ws-url> --token-file <f> [--name <name>] …',
        ],
        flags: [
          {
            title: 'Flags',
            flags: {
              'code-file': {
                type: 'string',
                value: '<file>',
                description: 'pair with the setup code in this file (mode 0600)',
                default: 'CLAWGATE_SETUP_CODE',
              },
              'code-stdin': { type: 'boolean', description: 'read the setup code from standard input' },
              pair: { type: 'string', value: '<setup-code>', description: 'the setup code on the command line (every local user can read it)' },
              url: {
                type: 'string',
                value: '<ws-url>',
                description: 'the gateway (with a token or password)',
                default: 'the URL the setup code or the last pairing named',
              },
              'token-file': { type: 'string', value: '<file>', description: 'the gateway token (mode 0600)', default: 'CLAWGATE_NODE_TOKEN' },
              'token-stdin': { type: 'boolean', description: 'read the gateway token from standard input' },
              'password-file': { type: 'string', value: '<file>', description: 'the gateway password (mode 0600)', default: 'CLAWGATE_NODE_PASSWORD' },
              'password-stdin': { type: 'boolean', description: 'read the gateway password from standard input' },
              token: { type: 'string', value: '<token>', description: 'the token on the command line (prefer --token-file)' },
              password: { type: 'string', value: '<password>', description: 'the password on the command line (prefer --password-file)' },
              name: { type: 'string', value: '<name>', description: 'the node’s display name', default: 'the host name' },
              commands: { type: 'string', value: '<list>', description: 'the commands offered, comma-separated', default: 'every supported one' },
              'exec-policy': { type: 'string', value: 'deny|allowlist|full', description: 'what system.run may run', default: 'allowlist' },
              'state-dir': { type: 'string', value: '<dir>', description: 'the node’s state dir', default: 'CLAWGATE_NODE_STATE_DIR, else ~/.clawgate-node' },
              'tls-fingerprint': { type: 'string', value: '<sha256>', description: 'pin the gateway certificate', default: 'the pin the setup code carries' },
              'gateway-key': {
                type: 'string',
                value: '<sha256>',
                description: 'the gateway key the server must prove',
                default: 'the key the setup code carries',
              },
            },
          },
        ],
        examples: ['clawgate node run --code-file ~/node-setup-code.txt --name build-box'],
        notes: ['A node host never uses the owner credential or CLAWGATE_TOKEN (docs/node-host.md).'],
        run: lazy(
          () => import('./node-run.js'),
          (m, a) => m.nodeCommand('run', a),
        ),
      },
      {
        name: 'identity',
        summary: 'print this node’s device id and public key (what a gateway’s SSH approval rule compares)',
        usage: ['[--state-dir <dir>] [--json]'],
        flags: [
          {
            title: 'Flags',
            flags: {
              'state-dir': { type: 'string', value: '<dir>', description: 'the node’s state dir', default: 'CLAWGATE_NODE_STATE_DIR, else ~/.clawgate-node' },
              json: { type: 'boolean', description: 'print {"deviceId", "publicKey"} as JSON' },
            },
          },
        ],
        examples: ['clawgate node identity --json'],
        notes: ['Never prints the private key and never creates an identity (exit 1 before the first `clawgate node run`).'],
        run: lazy(
          () => import('./node-run.js'),
          (m, a) => m.nodeIdentityCommand(a),
        ),
      },
    ],
  },
  {
    name: 'companion',
    summary: 'one device that is an operator and a node side by side (docs/companion.md)',
    subcommands: [
      {
        name: 'run',
        summary: 'the long-running companion: an operator and a node lifecycle on one device identity',
        usage: [
          '--pair <file>|-|env [--name <n>] [--no-node | --no-operator] [--commands system.run,system.which] [--exec-policy deny|allowlist|full]',
          '--url <ws-url> --token-file <f> [--no-node | --no-operator] …',
          '--ssh user@host[:port] [--ssh-identity <key-file>] --pair <file> …',
        ],
        flags: [
          {
            title: 'Pairing',
            flags: {
              pair: {
                type: 'string',
                value: '<file>|-|env',
                description: 'where the setup code is: a file (mode 0600), - for standard input, env for CLAWGATE_SETUP_CODE (never the code itself)',
              },
              'code-file': { type: 'string', value: '<file>', description: 'the setup code in this file (mode 0600)', default: 'CLAWGATE_SETUP_CODE' },
              'code-stdin': { type: 'boolean', description: 'read the setup code from standard input' },
              url: {
                type: 'string',
                value: '<ws-url>',
                description: 'the gateway (with --token-file), or where to reach the code’s gateway',
                default: 'the code’s URL, else the last run’s',
              },
              'token-file': {
                type: 'string',
                value: '<file>',
                description: 'the gateway token (mode 0600); checked first when it replaces one',
                default: 'CLAWGATE_COMPANION_TOKEN',
              },
              'token-stdin': { type: 'boolean', description: 'read the gateway token from standard input' },
              token: { type: 'string', value: '<token>', description: 'the token on the command line (every local user can read it: prefer --token-file)' },
            },
          },
          {
            title: 'Sides',
            flags: {
              'no-node': { type: 'boolean', description: 'run the operator side only' },
              'no-operator': { type: 'boolean', description: 'run the node side only' },
              name: { type: 'string', value: '<name>', description: 'the device’s display name', default: 'the host name' },
              commands: { type: 'string', value: '<list>', description: 'the node side’s commands, comma-separated', default: 'system.run,system.which' },
              'exec-policy': {
                type: 'string',
                value: 'deny|allowlist|full',
                description: 'what system.run may run',
                default: 'allowlist (<state-dir>/companion/exec-allowlist.json)',
              },
            },
          },
          {
            title: 'SSH transport',
            flags: {
              ssh: {
                type: 'string',
                value: 'user@host[:port]',
                description: 'reach the gateway through a supervised ssh -L forward (host key from <state-dir>/companion/known_hosts)',
              },
              'ssh-identity': { type: 'string', value: '<key-file>', description: 'the ssh private key to use', default: 'ssh’s own' },
            },
          },
          { title: 'State', flags: STATE_DIR_FLAG },
        ],
        examples: ['clawgate companion run --pair ~/setup-code.txt --name laptop', 'clawgate companion run --ssh me@gw.example.com --pair - < setup-code.txt'],
        notes: ['Never uses CLAWGATE_TOKEN or the owner credential. SIGINT/SIGTERM stop both sides (exit 0).'],
        run: lazy(companion, (m, a) => m.companionCommand('run', a)),
      },
      {
        name: 'status',
        summary: 'both sides: state, scopes, credential, pending request id + confirmation code, last error, next step',
        usage: ['[--json]'],
        flags: [{ title: 'Flags', flags: { ...STATE_DIR_FLAG, ...JSON_FLAG } }],
        examples: ['clawgate companion status --json'],
        notes: ['Asks the running companion over its control socket; reads the store when none runs.'],
        run: lazy(companion, (m, a) => m.companionCommand('status', a)),
      },
      {
        name: 'pair',
        summary: 'apply a setup code (to the running companion, else stored for the next run)',
        usage: ['--code-file <f> | --code-stdin'],
        flags: [
          {
            title: 'Flags',
            flags: {
              'code-file': { type: 'string', value: '<file>', description: 'the setup code in this file (mode 0600)', default: 'CLAWGATE_SETUP_CODE' },
              'code-stdin': { type: 'boolean', description: 'read the setup code from standard input' },
              url: { type: 'string', value: '<ws-url>', description: 'connect here instead of the code’s URL (only when none runs)' },
              ...STATE_DIR_FLAG,
            },
          },
        ],
        examples: ['clawgate companion pair --code-file ~/setup-code.txt'],
        run: lazy(companion, (m, a) => m.companionCommand('pair', a)),
      },
      {
        name: 'set-token',
        summary: 'use a gateway token: tried on an isolated connection first, device tokens kept',
        usage: ['--token-file <f> | --token-stdin'],
        flags: [
          {
            title: 'Flags',
            flags: {
              'token-file': { type: 'string', value: '<file>', description: 'the gateway token (mode 0600)', default: 'CLAWGATE_COMPANION_TOKEN' },
              'token-stdin': { type: 'boolean', description: 'read the gateway token from standard input' },
              token: { type: 'string', value: '<token>', description: 'the token on the command line (prefer --token-file)' },
              url: { type: 'string', value: '<ws-url>', description: 'the gateway (only when no companion runs)' },
              ...STATE_DIR_FLAG,
            },
          },
        ],
        examples: ['clawgate companion set-token --token-file ~/gateway-token'],
        run: lazy(companion, (m, a) => m.companionCommand('set-token', a)),
      },
      ...(['reconnect', 'pause', 'resume'] as const).map(
        (op): CommandSpec => ({
          name: op,
          summary: {
            reconnect: 'reconnect one side now (also leaves a paused state)',
            pause: 'disconnect one side and keep it so',
            resume: 'connect a paused side again',
          }[op],
          usage: ['operator|node'],
          flags: [{ title: 'Flags', flags: STATE_DIR_FLAG }],
          examples: [`clawgate companion ${op} node`],
          run: lazy(companion, (m, a) => m.companionCommand(op, a)),
        }),
      ),
      {
        name: 'mcp',
        summary: 'an MCP server on stdio with the companion’s controls (status, pairing, token, reconnect, pause/resume), local only',
        usage: [''],
        flags: [{ title: 'Flags', flags: STATE_DIR_FLAG }],
        examples: ['clawgate companion mcp --state-dir ~/.clawgate'],
        run: lazy(companion, (m, a) => m.companionCommand('mcp', a)),
      },
      {
        name: 'install-service',
        summary: 'a systemd user unit (or a launchd plist) that runs the companion',
        usage: ['[--print] [--launchd]'],
        flags: [
          {
            title: 'Flags',
            flags: {
              print: { type: 'boolean', description: 'print it instead of writing it' },
              launchd: { type: 'boolean', description: 'a launchd plist (macOS) instead of a systemd unit' },
              ...STATE_DIR_FLAG,
            },
          },
        ],
        examples: ['clawgate companion install-service --print'],
        run: lazy(companion, (m, a) => m.companionCommand('install-service', a)),
      },
    ],
  },
  {
    name: 'import',
    summary: 'take over another gateway’s state',
    subcommands: [
      {
        name: 'openclaw',
        summary: 'import OpenClaw’s paired devices, their tokens (hashed), approved node commands and gateway token/password',
        usage: ['[--from <openclaw-state-dir>] [--dry-run] [--merge] [--store sqlite|postgres] [--postgres-url <url>] [--json]'],
        flags: [
          {
            title: 'Flags',
            flags: {
              from: { type: 'string', value: '<dir>', description: 'the OpenClaw state dir', default: 'OPENCLAW_STATE_DIR, else ~/.openclaw' },
              'dry-run': { type: 'boolean', description: 'report what would happen; write nothing' },
              merge: { type: 'boolean', description: 'add to a clawgate state that already holds other devices' },
              store: { type: 'string', value: 'sqlite|postgres', description: 'the clawgate store', default: 'sqlite' },
              'postgres-url': { type: 'string', value: '<url>', description: 'the database of --store postgres', default: 'CLAWGATE_POSTGRES_URL' },
              ...STATE_DIR_FLAG,
              ...JSON_FLAG,
            },
          },
        ],
        examples: ['clawgate import openclaw --dry-run'],
        run: lazy(
          () => import('./import.js'),
          (m, a) => m.importCommand('openclaw', a),
        ),
      },
    ],
  },
  {
    name: 'migrate',
    summary: 'copy the SQLite state dir into an empty PostgreSQL database',
    usage: ['--to postgres --postgres-url <url> [--json]'],
    flags: [
      {
        title: 'Flags',
        flags: {
          to: { type: 'string', value: 'postgres', description: 'the target store (postgres is the only one)' },
          'postgres-url': { type: 'string', value: '<url>', description: 'the empty target database', default: 'CLAWGATE_POSTGRES_URL' },
          ...STATE_DIR_FLAG,
          ...JSON_FLAG,
        },
      },
    ],
    examples: ['clawgate migrate --to postgres --postgres-url postgres://clawgate@db/clawgate'],
    run: lazy(
      () => import('./postgres.js'),
      (m, a) => m.migrateCommand(a),
    ),
  },
];

/** The root of the tree: `clawgate` itself. */
export const ROOT: CommandSpec = { name: 'clawgate', summary: 'a self-hosted gateway for pairing and authorizing devices', subcommands: COMMANDS };

/** Every runnable command with its words, depth first (tests enumerate it). */
export function allCommands(spec: CommandSpec = ROOT, path: string[] = []): Array<{ path: string[]; spec: CommandSpec }> {
  const here = path.length > 0 ? [{ path, spec }] : [];
  return [...here, ...(spec.subcommands ?? []).flatMap((s) => allCommands(s, [...path, s.name]))];
}
