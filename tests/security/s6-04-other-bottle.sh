# S6: another bottle's bundle and agent, directly and through the proxy
# expect: fail
# audit: sidecar=egress decision=deny host~OTHER_BUNDLE_IP
tcp "$OTHER_BUNDLE_IP" 8888 || tcp "$OTHER_BUNDLE_IP" 9100 || tcp "$OTHER_AGENT_IP" 22 \
  || curl -sS -m 10 -f "http://$OTHER_BUNDLE_IP:9100/mcp"
