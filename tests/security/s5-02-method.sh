# S5: a method outside the route's methods
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
curl -sS -m 10 -f -X DELETE http://echo.test/allowed/x
