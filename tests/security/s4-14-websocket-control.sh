# S4 (control): a WebSocket on the allowed route over HTTPS works, and its control frames (Ping, Pong, Close reason) reach the upstream
# expect: ok
# audit: sidecar=egress decision=allow host=echo.test
# upstream-must-see: WSFRAME ping ws-control-payload
# upstream-must-see: WSFRAME close ws-control-payload
[ -x /tmp/bottle-test-attack ] || inconclusive "the attack client is not in the agent"
/tmp/bottle-test-attack ws echo.test /allowed/ws ws-control-payload
