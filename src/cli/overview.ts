/**
 * The overview `clawgate help` prints: every command on a line or two, and how the CLI finds its
 * state dir, its gateway and its credential. Per-command flags are in registry.ts.
 */

export const NODE_RUN_HELP = `  clawgate node run [--url <ws-url> [--token-file <f> | --token-stdin | --password-file <f> | --password-stdin]
                     | --code-file <f> | --code-stdin]  (or CLAWGATE_SETUP_CODE; --pair <setup-code> works but shows it to every local user)
                    [--name <name>] [--commands system.run,system.which]
                    [--exec-policy deny|allowlist|full] [--state-dir <dir>] [--tls-fingerprint <sha256>]
                    [--gateway-key <sha256>]
                                               run a headless node host (state: ~/.clawgate-node)
  clawgate node identity [--state-dir <dir>] [--json]
                                               print this node's device id and public key (what a
                                               gateway's SSH approval rule compares)`;

export const OVERVIEW = `clawgate — a self-hosted gateway for pairing and authorizing devices

Usage:
  clawgate gateway run [--port 18789] [--bind loopback|lan|<address>] [--state-dir <dir>]
                       [--token-file <f> | --token-stdin] [--password-file <f> | --password-stdin]
                       [--config <file>]
                       [--public-url wss://host[/path]] [--context-path /path]
                       [--tls | --tls-cert <pem> --tls-key <pem>] [--trusted-proxy <addr|cidr>…]
                       [--store sqlite|postgres] [--postgres-url <url>] [--metrics]
  clawgate gateway token [--state-dir <dir>]     print the gateway token the running gateway accepts
  clawgate gateway key [--state-dir <dir>] [--json]
                                               print the gateway key fingerprint (clients pass it
                                               as --gateway-key to know they reached this gateway)
  clawgate gateway install-service --print [gateway run flags] [--user <u>]
                                               print a systemd unit for this gateway
  clawgate doctor [gateway run flags] [--tls-fingerprint <sha256>] [--json]
                                               check config, store, TLS, trusted proxies, and that
                                               the advertised URL reaches the gateway
  clawgate call <method> [--params <json>] [--url <ws-url>] [--token-file <f> | --token-stdin] [--json]
  clawgate devices list [--json]
  clawgate devices approve <requestId|device> [--ttl <duration>] | reject <requestId> | remove <device>
                                               --ttl 8h: the approval lasts that long, then the
                                               added scopes (or the role) are withdrawn live
  clawgate devices extend <device> --role operator|node --ttl <duration>
                                               a time-bound grant now ends <duration> from now
  clawgate devices rename <device> <name>       <device> is an id, a unique id prefix or a name
  clawgate devices rotate --device <device> --role operator|node [--scope <s>…]
                                               a connected device gets the new token pushed live
  clawgate devices revoke --device <device> --role operator|node
  clawgate explain <device|requestId> [--method <m>] [--params <json>] [--json]
                                               what a device holds, what is pending and what
                                               approving it needs; whether a call would pass
  clawgate audit [--json] [--limit <n>]
  clawgate audit --verify [--state-dir <dir>] [--store postgres --postgres-url <url>] [--json]
                                               check the log against the head signed into the
                                               state dir (reads the store; no gateway needed)
  clawgate nodes list | pending | approve <requestId|node> | reject <requestId|node> [--json]
  clawgate nodes describe <node> | rename <node> <name> | remove <node> [--json]
  clawgate nodes invoke --node <node> --command <cmd> [--params <json>] [--timeout <ms>] [--json]
                                               <node> is a node id, a unique id prefix or its name
  clawgate qr [--profile operator|node|operator+node] [--scopes <s>…] [--label <name>] [--ttl 10m]
              [--url <gateway-url>] [--public-url <url>] [--json]
                                               mint a setup code (QR) that pairs one new device
  clawgate qr --list | --revoke <setupId> [--json]
  clawgate dashboard [--ttl 2m] [--json]         print a one-time sign-in link for the Control UI
  clawgate pair --code-file <f> | --code-stdin | - [--name <n>] [--node] [--url <gateway-url>] [--json]
                                               redeem a setup code (or oc-pair:// link) on this machine
                                               (client side); also CLAWGATE_SETUP_CODE. \`pair <code>\` works
                                               but shows the code to every local user (ps)
  clawgate status --client [--offline] [--json]  stored gateways, roles, scopes and connection state
  clawgate cron add --name <n> (--cron "<m h dom mon dow>" [--tz <zone>] | --every <10s|5m|1h>)
                    (--send <channel> --content <text> | --session <key> --text <text> [--spawn])
  clawgate cron list | remove <job> | run <job> | runs <job> [--json]
  clawgate channels add webhook --name <n> --url <webhook-url> [--username <u>] [--gateway-url <ws-url>]
                                               (here --url is the webhook's; the gateway is --gateway-url)
  clawgate channels remove <name>
  clawgate channels list | deliveries [--channel <n>] [--status <s>] | dead-letters [--json]
  clawgate sessions list | create [<key>] | spawn <parentKey> [<key>] [--json]
  clawgate chat send <sessionKey> <text> [--idempotency-key <k>] | history <sessionKey> [--limit <n>] [--before <seq>] [--json]
${NODE_RUN_HELP}
  clawgate companion run [--pair <file>|-|env | --code-file <f> | --code-stdin]  (or CLAWGATE_SETUP_CODE)
                         [--url <ws-url> [--token-file <f> | --token-stdin]]  (or CLAWGATE_COMPANION_TOKEN)
                         [--ssh user@host[:port] [--ssh-identity <key-file>]] [--no-node | --no-operator] [--name <n>] [--commands system.run,system.which]
                         [--exec-policy deny|allowlist|full] [--state-dir <dir>]
                                               one device, operator and node side by side (docs/companion.md)
  clawgate companion status [--json] [--state-dir <dir>]
  clawgate companion pair --code-file <f> | --code-stdin        apply a setup code (to the running companion)
  clawgate companion set-token --token-file <f> | --token-stdin  a new gateway token, checked before it is stored
  clawgate companion reconnect|pause|resume operator|node
  clawgate companion mcp [--state-dir <dir>]   MCP server on stdio with the controls above
  clawgate companion install-service --print [--launchd] [--state-dir <dir>]
  clawgate import openclaw [--from <openclaw-state-dir>] [--dry-run] [--merge] [--json]
                          [--store sqlite|postgres] [--postgres-url <url>]
                                               take over OpenClaw's paired devices, their tokens (hashed),
                                               approved node commands and gateway token/password
  clawgate migrate --to postgres --postgres-url <url> [--json]
                                               copy the SQLite state dir into an empty PostgreSQL database
  clawgate help [<command> [<subcommand>]]     flags, defaults and an example of one command
                                               (also: clawgate <command> [<subcommand>] --help)

Every command takes --state-dir (else CLAWGATE_STATE_DIR, else ~/.clawgate).
Commands that talk to a gateway use --url > CLAWGATE_URL > the running gateway recorded in the
state dir > ws://127.0.0.1:18789, and authenticate with --token-file <f> / --token-stdin (or the
--password-… forms) > CLAWGATE_TOKEN > CLAWGATE_PASSWORD > the owner credential in the state dir.
Secrets never belong on a command line (every local user can read it): --token <t> and
--password <p> still work but print a warning. \`gateway run\` reads CLAWGATE_GATEWAY_TOKEN /
CLAWGATE_GATEWAY_PASSWORD (or gateway.auth in --config). The gateway token alone grants
operator.read and operator.write; admin and pairing need the owner credential or an approved device.
Before sending anything they check that the server proves the gateway key: --gateway-key
<fingerprint> > CLAWGATE_GATEWAY_KEY > the state dir's gateway-key.pem (a remote gateway needs
--gateway-key). The owner credential is never sent, only proven.
For a wss:// gateway with a self-signed certificate pass
--tls-fingerprint <sha256> (or CLAWGATE_TLS_FINGERPRINT); the local gateway's is pinned automatically.
\`node run\` is a client of a gateway, not its operator: its own state dir (--state-dir, else
CLAWGATE_NODE_STATE_DIR, else ~/.clawgate-node), the gateway token only from --token-file,
--token-stdin or CLAWGATE_NODE_TOKEN (password: CLAWGATE_NODE_PASSWORD), never the owner
credential (docs/node-host.md).
Away from the gateway host the CLI is a device: its key and device tokens live in <state-dir>/client/
(\`clawgate pair\` stores them too). A gateway token for a remote gateway files a pairing request; the
CLI prints its id, confirmation code and approve command and waits (--no-wait: exit 3); later
commands use the stored device token.
A setup code carries a bootstrap token: \`pair\` and \`node run\` read it from --code-file (mode 0600),
--code-stdin or CLAWGATE_SETUP_CODE, so it never needs the command line.`;
