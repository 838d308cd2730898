# S2: IPv6: a global route out, or a direct IPv6 connection by name
# expect: fail
ip -6 route 2>/dev/null | grep -q '^default' && exit 0
curl -sS -m 5 -f -6 --noproxy '*' http://echo.test/allowed/x
