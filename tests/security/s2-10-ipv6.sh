# S2: IPv6: a default IPv6 route out (read from /proc: no tool needed), or a direct IPv6 connection by name
# expect: fail
# no-audit: direct IPv6 never reaches a sidecar (the upstream log is the witness)
# host-check: echo-untouched
if [ -r /proc/net/ipv6_route ]; then
  # a default route (::/0) on any interface but lo (lo carries the kernel's unreachable default)
  if awk '$1 == "00000000000000000000000000000000" && $2 == "00" && $10 != "lo" { f = 1 } END { exit !f }' /proc/net/ipv6_route; then
    echo "a default IPv6 route:"; cat /proc/net/ipv6_route; exit 0
  fi
else
  echo "no IPv6 in this network namespace (/proc/net/ipv6_route absent)"
fi
curl -sS -m 5 -f -6 --noproxy '*' http://echo.test/allowed/x
