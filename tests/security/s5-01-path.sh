# S5: a path outside the route's paths
# expect: fail
# audit: sidecar=egress decision=deny host=echo.test
curl -sS -m 10 -f http://echo.test/forbidden/x
