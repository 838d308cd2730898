# S1: search the whole filesystem and mounts for key material and tokens
# expect: no-secret
# no-audit: the attack only reads the agent's own filesystem; no sidecar is involved (the harness checks the output for held secrets)
cat /proc/mounts
ls -la / /bottle /run/secrets /var/run/secrets 2>&1 | head -50
grep -rIl -e 'PRIVATE KEY' -e 'route-' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr --exclude-dir=dev 2>/dev/null | head -20 | while read -r f; do echo "== $f"; head -c 400 "$f"; done
