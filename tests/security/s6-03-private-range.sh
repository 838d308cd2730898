# S6: an allowed name that resolves to a private address, without allow_private
# expect: fail
# audit: sidecar=egress decision=deny host=decoy-private.test
# host-check: decoy-untouched
curl -sS -m 10 -f http://decoy-private.test/
