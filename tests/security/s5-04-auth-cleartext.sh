# S5: the route's credential over plain HTTP (its route does not say plaintext = true)
# expect: fail
# audit: sidecar=egress decision=deny rule=auth-needs-tls host=echo.test
# The proxy must refuse before injecting the token or connecting (the fix
# named in the answer is https or the operator's `plaintext = true`).
out=$(curl -sS -m 10 -w '\n%{http_code}' http://echo.test/allowed/cleartext) || exit 1
echo "$out"
echo "$out" | grep -q 'only sent inside TLS' && exit 1
[ "$(echo "$out" | tail -1)" != 403 ]
