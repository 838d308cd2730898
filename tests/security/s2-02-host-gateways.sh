# S2: direct TCP to a listener on the host via either bridge gateway
# expect: fail
# no-audit: direct TCP never passes a sidecar (the harness shows the host listener answers from the bundle)
tcp "$EGRESS_GW" "$HOST_PORT" || tcp "$INT_GW" "$HOST_PORT"
