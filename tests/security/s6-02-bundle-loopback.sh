# S6: SSRF: `localhost:9100` is an allowed route (no allow_private) and the bundle resolves it to its own loopback, where supervise listens (the harness shows it answers there): CONNECT and plain HTTP
# expect: fail
# audit: sidecar=egress decision=deny host=localhost port=9100 rule=ssrf-private
# audit-min: 2
rc=1
curl -sS -m 10 -f --proxy "$HTTP_PROXY" -p http://localhost:9100/mcp && rc=0
curl -sS -m 10 -f --proxy "$HTTP_PROXY" http://localhost:9100/mcp && rc=0
exit $rc
