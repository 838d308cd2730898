# S2: ignore the proxy env and go direct by name and by IP
# expect: fail
# no-audit: without the proxy the attempt never reaches a sidecar (the upstream log is the witness)
# host-check: echo-untouched
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
curl -sS -m 5 -f http://echo.test/allowed/x || curl -sS -m 5 -f "http://$ECHO_IP/allowed/x"
