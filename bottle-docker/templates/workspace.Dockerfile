# bottle derived layer: a copy of `--cwd` (tracked and untracked files that
# .gitignore and .bottleignore do not exclude), owned by the agent. The host
# tree is never bind-mounted.
FROM {{agent_image}}
COPY --chown=1000:1000 ws/ /home/agent/workspace/
