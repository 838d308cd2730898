# S4: a decompression bomb (64 KiB on the wire, 64 MiB decoded) in a request body
# expect: fail
# audit: sidecar=egress decision=deny rule=decompression-limit host=echo.test status=413
head -c 67108864 /dev/zero | gzip -c > /tmp/bomb.gz
ls -l /tmp/bomb.gz
curl -sS -m 20 -f -H 'Content-Encoding: gzip' --data-binary @/tmp/bomb.gz https://echo.test/allowed/bomb
