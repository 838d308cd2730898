# S8: flood egress with idle connections past max_connections
# expect: fail
# audit: sidecar=egress decision=deny rule=conn-limit status=503
# The cap must answer 503 while flooded, and egress must serve again after.
fds=()
for i in $(seq 1 530); do
  exec {fd}<>/dev/tcp/bundle/8888 || break
  fds+=("$fd")
done
echo "opened ${#fds[@]} connections"
# a refused CONNECT is curl's http_connect code (http_code stays 000)
during=$(curl -s -o /dev/null -w '%{http_connect}' -m 10 https://echo.test/allowed/flood)
echo "while flooded: $during"
for fd in "${fds[@]}"; do exec {fd}>&-; done
after=000
for i in 1 2 3 4 5 6 7 8 9 10; do
  after=$(curl -s -o /dev/null -w '%{http_code}' -m 10 https://echo.test/allowed/after)
  [ "$after" = 200 ] && break
  sleep 1
done
echo "after: $after"
[ "$during" != 503 ] || [ "$after" != 200 ]
