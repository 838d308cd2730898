# bottle agent image, template `claude`: Claude Code.
# Needs a Debian mirror and the npm registry at build time (it installs
# Node.js and @anthropic-ai/claude-code); on a registry-less host build it
# where a registry exists and `docker save`/`docker load` it, or use the
# `shell` template. The API key never enters this image: egress holds it
# and the agent sees only a placeholder.
FROM {{base_image}}
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/* \
 && npm install -g @anthropic-ai/claude-code \
 && npm cache clean --force
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash agent \
 && mkdir -p /home/agent/workspace \
 && chown 1000:1000 /home/agent/workspace
USER 1000:1000
WORKDIR /home/agent/workspace
ENV HOME=/home/agent
CMD ["claude"]
