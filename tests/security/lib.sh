# Prelude sourced before every attack script (run inside the agent).
# Exported by the harness: ECHO_IP DECOY_IP GIT_IP EGRESS_GW INT_GW HOST_PORT
# UDP_PORT OTHER_BUNDLE_IP OTHER_AGENT_IP. The agent's env already has the
# proxy variables and DB_PASSWORD (a held secret the agent legitimately has).
# Convention: a script exits 0 only if the ATTACK SUCCEEDED.
set -u
MCP="http://bundle:9100/mcp"
mcp_init() {
  local h
  h=$(mktemp)
  curl -sS -m 10 -D "$h" -o /dev/null -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"attacker","version":"1"}}}' \
    "$MCP" || return 1
  SID=$(grep -i '^mcp-session-id:' "$h" | cut -d' ' -f2 | tr -d '\r')
  curl -sS -m 10 -o /dev/null -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -H "Mcp-Session-Id: $SID" \
    -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' "$MCP"
}
# mcp_call <tool> <json arguments>: prints the response body
mcp_call() {
  curl -sS -m 10 -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -H "Mcp-Session-Id: $SID" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":$2}}" "$MCP"
}
tcp() { timeout 5 bash -c "echo x > /dev/tcp/$1/$2" 2>/dev/null; }
