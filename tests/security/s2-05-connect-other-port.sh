# S2: an allowed host on a port no route allows, where the upstream listens (the harness shows echo.test:8080 answers from the bundle): CONNECT, HTTPS and plain HTTP
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test port=8080
# audit-min: 3
# host-check: echo-untouched
rc=1
curl -sS -m 10 -f -p http://echo.test:8080/allowed/x && rc=0
curl -sS -m 10 -f https://echo.test:8080/allowed/x && rc=0
curl -sS -m 10 -f http://echo.test:8080/allowed/x && rc=0
exit $rc
