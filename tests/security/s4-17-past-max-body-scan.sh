# S4: held secret placed past max_body_scan (1 MiB) in a plain POST body: the unscanned rest must not leave (HTTPS, h1 and h2)
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
# audit-min: 2
# upstream-must-not-see: DB_PASSWORD
# The body is scanned as it streams: the upstream gets the request head
# and the clean bytes before the secret, then the request is aborted, so
# echo.test logs an aborted request (no `echo-untouched`); it never sees
# the secret in any encoding.
# 3 MiB of filler, then the secret: well beyond the scanned prefix (the
# frame that crosses the 1 MiB mark is still scanned, so go far past it).
f=/tmp/s4-17.body
head -c 3145728 /dev/zero | tr '\0' 'a' > "$f"
printf '\np=%s\n' "$DB_PASSWORD" >> "$f"
h1h2 -H 'Content-Type: text/plain' --data-binary "@$f" https://echo.test/allowed/big
rc=$?
rm -f "$f"
exit $rc
