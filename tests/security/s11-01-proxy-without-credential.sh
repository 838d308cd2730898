# S11: use the egress proxy without the bottle's access credential (what any other process on the host or a neighbouring container can do): CONNECT and plain HTTP to the allowed route
# expect: fail
# audit: sidecar=egress decision=deny rule=access-credential
# audit-min: 2
# host-check: echo-untouched
noauth=$(printf '%s' "$HTTP_PROXY" | sed 's#//[^@]*@#//#')
case "$noauth" in *@*|"") inconclusive "could not derive a proxy URL without the credential from HTTP_PROXY" ;; esac
[ "$noauth" != "$HTTP_PROXY" ] || inconclusive "the agent's proxy URL carries no credential to drop"
rc=1
curl -sS -m 10 -f --proxy "$noauth" https://echo.test/allowed/x && rc=0
curl -sS -m 10 -f --proxy "$noauth" http://echo.test/allowed/x && rc=0
curl -sS -m 10 -f --proxy "http://bottle:0000000000000000000000000000000000000000000000000000000000000000@${noauth#http://}" https://echo.test/allowed/x && rc=0
exit $rc
