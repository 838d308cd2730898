# S4: a body in a Content-Encoding the proxy cannot decode (refused, not passed)
# expect: fail
# audit: sidecar=egress decision=deny rule=body-encoding host=echo.test status=415
printf '{"p":"%s"}' "$DB_PASSWORD" | gzip -c |
  curl -sS -m 10 -f -H 'Content-Encoding: gzip, x-custom' --data-binary @- https://echo.test/allowed/enc
