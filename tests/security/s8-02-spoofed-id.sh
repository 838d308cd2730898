# S8: ask supervise about a request id that is not ours, hoping for an approval
# expect: fail
# audit: sidecar=supervise event=status decision=deny rule=unknown-request
mcp_init || exit 1
out=$(mcp_call request_status '{"id":"req-20260101T000000Z-0123456789abcdef"}')
echo "$out"
echo "$out" | grep -q '"status":"approved"\|approved'
