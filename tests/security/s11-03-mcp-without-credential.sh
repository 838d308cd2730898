# S11: call the supervise MCP server without the bottle's access credential
# expect: fail
# audit: sidecar=supervise decision=deny rule=access-credential
out=$(curl -sS -m 10 -w '\nhttp=%{http_code}' -H 'Content-Type: application/json' \
  -H 'Accept: application/json, text/event-stream' \
  -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"attacker","version":"1"}}}' \
  "$MCP")
echo "$out"
case "$out" in *http=200*) exit 0 ;; esac
exit 1
