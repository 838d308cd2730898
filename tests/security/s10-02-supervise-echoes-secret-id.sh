# S10: refused supervise calls whose arguments are the held secret (request_status id, request_git_push remote): the refusal's audit line must not quote the value
# expect: fail
# audit: sidecar=supervise event=status decision=deny rule=unknown-request id~[redacted
# The agent cannot see the record, so it reports the call as refused
# (exit 1); what fails today is the audit line (`id` is the raw value)
# and the harness's closing S10 scan of the audit log.
mcp_init || exit 1
mcp_call request_status "{\"id\":\"$DB_PASSWORD\"}" >/dev/null
mcp_call request_git_push "{\"remote\":\"$DB_PASSWORD\",\"ref_pattern\":\"refs/heads/bot/x\",\"reason\":\"r\"}" >/dev/null
exit 1
