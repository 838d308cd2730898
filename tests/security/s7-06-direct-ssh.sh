# S7: talk SSH straight to the upstream
# expect: fail
# no-audit: direct SSH never passes a sidecar (the harness shows the sshd answers from the bundle)
tcp "$GIT_IP" 22 || timeout 10 ssh -o BatchMode=yes -o StrictHostKeyChecking=no git@git.test true
