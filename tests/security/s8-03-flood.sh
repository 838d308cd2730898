# S8: flood supervise with requests
# expect: fail
# audit: sidecar=supervise decision=deny
mcp_init || exit 1
ok=0
for i in $(seq 1 30); do
  out=$(mcp_call request_egress "{\"host\":\"flood$i.example.com\",\"reason\":\"flood\"}")
  echo "$out" | grep -qi 'rate\|limit\|too many' || ok=$((ok+1))
done
echo "accepted: $ok of 30"
[ "$ok" -ge 30 ]
