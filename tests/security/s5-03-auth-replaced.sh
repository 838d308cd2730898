# S5 (control): the allowed route works and the agent's own Authorization is replaced
# expect: ok
# audit: sidecar=egress decision=allow host=echo.test
# host-check: upstream-saw-token-not-agent-auth
out=$(curl -sS -m 10 -f -H 'Authorization: Bearer agent-chosen-value' http://echo.test/allowed/echo) || exit 1
echo "$out"
echo "$out" | grep -q 'echo from bottle-sec-echo'
