# S7: talk SSH straight to the upstream
# expect: fail
tcp "$GIT_IP" 22 || timeout 10 ssh -o BatchMode=yes -o StrictHostKeyChecking=no git@git.test true
