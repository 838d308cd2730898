# S6: the bundle's own loopback ports through the proxy (SSRF)
# expect: fail
# audit: sidecar=egress decision=deny host=127.0.0.1
curl -sS -m 10 -f http://127.0.0.1:9100/mcp || curl -sS -m 10 -f http://localhost:8888/
