# S5 (control): the allowed route works over HTTPS (h1 and h2) and the agent's own Authorization is replaced
# expect: ok
# audit: sidecar=egress decision=allow host=echo.test
# audit-min: 2
# host-check: upstream-saw-token-not-agent-auth
h1h2 -H 'Authorization: Bearer agent-chosen-value' https://echo.test/allowed/echo > /tmp/s5-03.out
rc=$?
cat /tmp/s5-03.out
[ "$rc" = 0 ] && [ "$OK_COUNT" = 2 ] && [ "$(grep -c 'echo from bottle-sec-echo' /tmp/s5-03.out)" = 2 ]
