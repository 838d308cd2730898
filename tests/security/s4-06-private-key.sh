# S4: a private key block in a POST body (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 2
# upstream-must-not-see: PRIVATE KEY
# host-check: echo-untouched
rm -f /tmp/k /tmp/k.pub; ssh-keygen -q -t ed25519 -N '' -f /tmp/k
h1h2 --data-binary @/tmp/k https://echo.test/allowed/k
