#!/bin/bash
# A stand-in for the `claude` / `codex` CLI (tests/integration/agents_standin.rs),
# installed where the template's `npm install -g` puts the real one. It does
# what the real CLI would do with bottle's wiring and records it in
# $HOME/standin.report (names, never values of the environment):
#   ARG <word>               its argv, one word a line
#   ENV <NAME>               the names in its environment
#   FILE <path> present|absent, SKILLFILE <mode> <owner> <path>
#   TRUSTED yes|no           the workspace is trusted in the CLI's own config
#   MCP_CONFIG <path>, MCP_URL <url>, MCP_HEADERS <names>
#   MCP_NOAUTH <http code>   the MCP server without the config's headers
#   MCP_RESULT <body>        tools/call list_policy with them
#   PROVIDER <http code>, PROVIDER_BODY <body>  one HTTPS call to the provider
#   DONE
# then idles so the harness can read the report with `bottle exec`.
set -u
cli=$(basename "$0")
out="$HOME/standin.report"
tmp=$(mktemp -d)
: > "$out.partial"
say() { printf '%s\n' "$*" >> "$out.partial"; }

for a in "$@"; do say "ARG $a"; done
compgen -e | sort | while read -r n; do say "ENV $n"; done
for f in "$HOME/.claude.json" "$HOME/.bottle/mcp.json" "$HOME/.codex/config.toml" \
  "$HOME/.bottle/prompt.md"; do
  if [ -f "$f" ]; then say "FILE $f present"; else say "FILE $f absent"; fi
done
find "$HOME/.claude/skills" "$HOME/.agents/skills" -type f -printf 'SKILLFILE %m %u %p\n' \
  2>/dev/null | sort >> "$out.partial"

# The MCP config the real CLI reads: claude the `--mcp-config` file it is
# given, codex its ~/.codex/config.toml. URL and headers come from there.
headers="$tmp/headers"
: > "$headers"
chmod 600 "$headers"
case "$cli" in
  claude)
    config=""
    prev=""
    for a in "$@"; do
      [ "$prev" = "--mcp-config" ] && config="$a"
      prev="$a"
    done
    if grep -q '"hasTrustDialogAccepted": true' "$HOME/.claude.json" 2>/dev/null \
      && grep -q '"/home/agent/workspace"' "$HOME/.claude.json"; then
      say "TRUSTED yes"
    else
      say "TRUSTED no"
    fi
    url=$(perl -MJSON::PP -e '
      local $/; open my $f, "<", $ARGV[0] or exit 1; my $c = decode_json(<$f>);
      my ($s) = grep { ($_->{type} // "") eq "http" } values %{$c->{mcpServers} // {}};
      exit 1 unless $s;
      open my $h, ">", $ARGV[1] or exit 1;
      print $h "$_: $s->{headers}{$_}\n" for sort keys %{$s->{headers} // {}};
      print $s->{url};' "$config" "$headers")
    key="${ANTHROPIC_API_KEY:-}"
    provider=(https://api.anthropic.com/v1/messages -H "x-api-key: $key"
      -H 'anthropic-version: 2023-06-01')
    ;;
  codex)
    config="$HOME/.codex/config.toml"
    if grep -q '^\[projects\."/home/agent/workspace"\]' "$config" 2>/dev/null \
      && grep -q '^trust_level = "trusted"' "$config"; then
      say "TRUSTED yes"
    else
      say "TRUSTED no"
    fi
    url=$(perl -e '
      open my $f, "<", $ARGV[0] or exit 1; my ($in, $url) = (0, "");
      open my $h, ">", $ARGV[1] or exit 1;
      while (<$f>) {
        if (/^\[mcp_servers\.[^\]]+\]/) { $in = 1; next }
        if (/^\[/) { $in = 0; next }
        next unless $in;
        $url = $1 if /^url\s*=\s*"([^"]*)"/;
        if (/^http_headers\s*=\s*\{(.*)\}/) {
          my $t = $1;
          print $h "$1: $2\n" while $t =~ /"([^"]+)"\s*=\s*"([^"]*)"/g;
        }
      }
      print $url;' "$config" "$headers")
    key="${OPENAI_API_KEY:-}"
    provider=(https://api.openai.com/v1/responses -H "Authorization: Bearer $key")
    ;;
esac
say "MCP_CONFIG $config"
say "MCP_URL $url"
say "MCP_HEADERS $(cut -d: -f1 "$headers" | tr '\n' ' ')"

mcp() { # mcp <out-headers> <json>: one MCP POST with the config's headers
  curl -sS -m 10 --noproxy '*' -D "$1" -H @"$headers" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' ${sid:+-H "Mcp-Session-Id: $sid"} \
    -d "$2" "$url"
}
init='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"'"$cli"'-standin","version":"1"}}}'
say "MCP_NOAUTH $(curl -sS -m 10 --noproxy '*' -o /dev/null -w '%{http_code}' \
  -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
  -d "$init" "$url")"
sid=""
mcp "$tmp/h1" "$init" > /dev/null
sid=$(grep -i '^mcp-session-id:' "$tmp/h1" | cut -d' ' -f2 | tr -d '\r')
mcp "$tmp/h2" '{"jsonrpc":"2.0","method":"notifications/initialized"}' > /dev/null
result=$(mcp "$tmp/h3" '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_policy","arguments":{}}}')
say "MCP_RESULT $(printf '%s' "$result" | tr '\n' ' ')"

# The provider, through egress (HTTPS_PROXY, the bottle CA): retried while
# the harness attaches the test upstream to the bottle's egress network.
code=000
for _ in $(seq 1 90); do
  code=$(curl -sS -m 10 -o "$tmp/body" -w '%{http_code}' "${provider[@]}" \
    -H 'content-type: application/json' -d '{"model":"stand-in","max_tokens":1}' 2>/dev/null)
  [ "$code" = 200 ] && break
  sleep 1
done
say "PROVIDER $code"
say "PROVIDER_BODY $(tr '\n' ' ' < "$tmp/body" 2>/dev/null)"
rm -rf "$tmp"
say "DONE"
mv "$out.partial" "$out"
exec sleep infinity
