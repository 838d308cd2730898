# S8: find and edit the live policy or the queue from the agent
# expect: fail
# no-audit: a local filesystem search; no sidecar is involved
found=$(find / -xdev \( -name routes.toml -o -name gate.toml -o -name sv.toml -o -name '*.decision.json' -o -name decision.key \) 2>/dev/null)
echo "found: $found"
[ -n "$found" ] && for f in $found; do echo '[[routes]]' >> "$f" && exit 0; done
exit 1
