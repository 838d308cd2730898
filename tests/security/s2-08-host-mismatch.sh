# S2: absolute-form URI for the allowed host with a Host header naming the decoy
# expect: fail
# host-check: decoy-untouched
out=$(curl -sS -m 10 -H 'Host: decoy.test' http://echo.test/allowed/x) || exit 1
echo "$out"
echo "$out" | grep -q 'echo from bottle-sec-decoy'
