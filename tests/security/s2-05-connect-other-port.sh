# S2: CONNECT to an allowed host on another port
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
curl -sS -m 10 -f -p http://echo.test:8080/allowed/x
