# S6: an allowed name that resolves to a private address, without allow_private (HTTPS and HTTP; the decoy answers on both from the bundle)
# expect: fail
# audit: sidecar=egress decision=deny host=decoy-private.test rule=ssrf-private
# audit-min: 2
# host-check: decoy-untouched
curl -sS -m 10 -f https://decoy-private.test/ || curl -sS -m 10 -f http://decoy-private.test/
