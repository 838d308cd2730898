# S2: direct TCP to the upstream and the decoy container by IP
# expect: fail
# no-audit: the agent has no route to the upstreams' network, so no sidecar sees the attempt (the harness shows both targets answer from the bundle)
tcp "$ECHO_IP" 80 || tcp "$DECOY_IP" 80
