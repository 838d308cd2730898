# S2: direct TCP to the upstream and the decoy container by IP
# expect: fail
tcp "$ECHO_IP" 80 || tcp "$DECOY_IP" 80
