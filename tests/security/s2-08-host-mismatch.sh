# S2: a request for the allowed host whose Host header (HTTP/1.1) or :authority (HTTP/2) names the decoy: HTTPS h1 and h2, and plain absolute-form HTTP
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test rule=host-mismatch
# audit-min: 3
# host-check: decoy-untouched
# host-check: echo-untouched
h1h2 -H 'Host: decoy.test' https://echo.test/allowed/x > /tmp/s2-08.out
curl -sS -m 10 -H 'Host: decoy.test' http://echo.test/allowed/x >> /tmp/s2-08.out 2>&1
cat /tmp/s2-08.out
grep -q 'echo from bottle-sec-decoy' /tmp/s2-08.out
