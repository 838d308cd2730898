# S4: a held secret in WebSocket control frames over HTTPS: a Ping payload, a Pong payload, a Close reason (each on its own connection)
# expect: fail
# audit: sidecar=egress decision=deny method=WEBSOCKET rule~held:
# audit-min: 3
# upstream-must-not-see: DB_PASSWORD
[ -x /tmp/bottle-test-attack ] || inconclusive "the attack client is not in the agent"
rc=1
for kind in ping pong; do
  /tmp/bottle-test-attack "ws-$kind" echo.test /allowed/ws "x-$DB_PASSWORD-x"
  r=$?; [ "$r" = 97 ] && exit 97; [ "$r" = 0 ] && rc=0
done
# After a Close the connection ends either way, so its exit status cannot
# tell a refusal from a normal end: the third audit line (a refusal) and
# the upstream (never saw it) decide.
/tmp/bottle-test-attack ws-close echo.test /allowed/ws "x-$DB_PASSWORD-x"
[ $? = 97 ] && exit 97
exit $rc
