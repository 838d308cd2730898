# S2: IP literal of the allowed host through the proxy (and its IPv4-mapped IPv6 form)
# expect: fail
# audit: sidecar=egress decision=deny host~ECHO_IP
curl -sS -m 10 -f "http://$ECHO_IP/allowed/x" || curl -sS -m 10 -f -g "http://[::ffff:$ECHO_IP]/allowed/x"
