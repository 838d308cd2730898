# S2: direct TCP to a listener on the host via either bridge gateway
# expect: fail
tcp "$EGRESS_GW" "$HOST_PORT" || tcp "$INT_GW" "$HOST_PORT"
