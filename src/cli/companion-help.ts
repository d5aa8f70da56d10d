/** Usage of `clawgate companion` (its own module so the main help does not load the companion). */
export const COMPANION_HELP = `  clawgate companion run [--pair <file>|-|env | --code-file <f> | --code-stdin]  (or CLAWGATE_SETUP_CODE)
                         [--url <ws-url> [--token-file <f> | --token-stdin]]  (or CLAWGATE_COMPANION_TOKEN)
                         [--ssh user@host[:port] [--ssh-identity <key-file>]] [--no-node | --no-operator] [--name <n>] [--commands system.run,system.which]
                         [--exec-policy deny|allowlist|full] [--state-dir <dir>]
                                               one device, operator and node side by side (docs/companion.md)
  clawgate companion status [--json] [--state-dir <dir>]
  clawgate companion pair --code-file <f> | --code-stdin        apply a setup code (to the running companion)
  clawgate companion set-token --token-file <f> | --token-stdin  a new gateway token, checked before it is stored
  clawgate companion reconnect|pause|resume operator|node
  clawgate companion mcp [--state-dir <dir>]   MCP server on stdio with the controls above
  clawgate companion install-service --print [--launchd] [--state-dir <dir>]`;
