# S2: hand-written HTTP/1.0 absolute-form request for the decoy to the proxy port
# expect: fail
# audit: sidecar=egress decision=deny host=decoy.test
# host-check: decoy-untouched
exec 3<>/dev/tcp/bundle/8888 || exit 1
printf 'GET http://decoy.test/ HTTP/1.0\r\nHost: echo.test\r\n\r\n' >&3
reply=$(timeout 10 cat <&3)
echo "$reply" | head -5
echo "$reply" | grep -q '^HTTP/1\.[01] 200'
