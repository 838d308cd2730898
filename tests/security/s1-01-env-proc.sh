# S1: read held secrets from env, /proc/*/environ and /proc/*/cmdline
# expect: no-secret
env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\0' '\n'
