# S6: the Docker socket
# expect: fail
# no-audit: a local file check; no sidecar is involved
ls -la /var/run/docker.sock /run/docker.sock 2>&1
test -S /var/run/docker.sock || test -S /run/docker.sock
