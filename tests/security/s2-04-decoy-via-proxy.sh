# S2: HTTPS and HTTP to a live host that no route allows, through the proxy
# expect: fail
# audit: sidecar=egress decision=deny host=decoy.test
# host-check: decoy-untouched
curl -sS -m 10 -f -o /dev/null https://decoy.test/ || curl -sS -m 10 -f http://decoy.test/
