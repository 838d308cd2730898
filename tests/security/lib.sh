# Prelude sourced before every attack script (run inside the agent).
# Exported by the harness: ECHO_IP DECOY_IP GIT_IP EGRESS_GW INT_GW HOST_PORT
# UDP_PORT OTHER_BUNDLE_IP OTHER_AGENT_IP. The agent's env already has the
# proxy variables and DB_PASSWORD (a held secret the agent legitimately has).
# Convention: a script exits 0 only if the ATTACK SUCCEEDED.
set -u
MCP="http://bundle:9100/mcp"
# The bundle serves only its own agent: MCP calls carry the access
# credential the agent's wiring holds (BOTTLE_ACCESS_KEY; its proxy URL and
# git remotes carry the same credential).
AUTH="Authorization: Bearer ${BOTTLE_ACCESS_KEY:-}"
mcp_init() {
  local h
  h=$(mktemp)
  curl -sS -m 10 -D "$h" -o /dev/null -H "$AUTH" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"attacker","version":"1"}}}' \
    "$MCP" || return 1
  SID=$(grep -i '^mcp-session-id:' "$h" | cut -d' ' -f2 | tr -d '\r')
  curl -sS -m 10 -o /dev/null -H "$AUTH" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -H "Mcp-Session-Id: $SID" \
    -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' "$MCP"
}
# mcp_call <tool> <json arguments>: prints the response body
mcp_call() {
  curl -sS -m 10 -H "$AUTH" -H 'Content-Type: application/json' \
    -H 'Accept: application/json, text/event-stream' -H "Mcp-Session-Id: $SID" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"$1\",\"arguments\":$2}}" "$MCP"
}
tcp() { timeout 5 bash -c "echo x > /dev/tcp/$1/$2" 2>/dev/null; }
# An attack that cannot be carried out as designed (e.g. HTTP/2 was asked
# for and not negotiated) must not count as "refused": exit 97, which the
# harness reports as a failure of the suite, never as a held invariant.
inconclusive() { echo "INCONCLUSIVE: $*" >&2; exit 97; }
# h1h2 <curl args...>: send the same request over HTTPS through the proxy
# (the bottle's CA) twice: HTTP/1.1, then HTTP/2 (ALPN). Prints each status
# and body; OK_COUNT is how many got a 2xx. Returns 0 iff any did (the
# attack got through). Exits 97 if the protocol asked for was not the one
# spoken, or no HTTP response came back at all (TLS or CONNECT failed).
h1h2() {
  local v got code ver
  OK_COUNT=0
  for v in 1.1 2; do
    got=$(curl -sS -m 10 -o /tmp/h1h2.body -w '%{http_code} %{http_version}' "--http$v" "$@")
    code=${got% *}; ver=${got#* }
    echo "HTTP/$v -> status $code (spoke HTTP/$ver)"
    cat /tmp/h1h2.body 2>/dev/null; echo
    rm -f /tmp/h1h2.body
    [ "$ver" = "$v" ] || inconclusive "asked for HTTP/$v, spoke '$ver' (status $code)"
    case "$code" in 2??) OK_COUNT=$((OK_COUNT + 1)) ;; esac
  done
  [ "$OK_COUNT" -gt 0 ]
}
