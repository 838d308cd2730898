# S1: read held secrets from env, /proc/*/environ and /proc/*/cmdline
# expect: no-secret
# no-audit: the attack only reads inside the agent; no sidecar is involved (the harness checks the output for held secrets)
env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\0' '\n'
