# featurebot, as a small image: build with cargo, run as a non-root user with git and CA
# certificates. The store and the target repository are volumes; the config comes from a file
# mounted at /config/config.toml or from FEATUREBOT__SECTION__KEY variables, secrets from the
# environment (OPENAI_API_KEY or ANTHROPIC_API_KEY, GITHUB_TOKEN).
#
#   docker build -t featurebot .
#   docker run --rm -it -v $PWD/config.toml:/config/config.toml:ro \
#     -v featurebot-data:/data -v $PWD/target-repo:/repo -e OPENAI_API_KEY featurebot console

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY src src
COPY prompts prompts
COPY tests tests
COPY benches benches
RUN cargo build --release --locked --bin featurebot

# The runtime image has git, a shell and bubblewrap. The coding agent runs your agent.format and
# agent.test commands (and an external agent, for backend = "command") inside it, each in
# bubblewrap's sandbox: build your own image FROM this one with those toolchains added. The
# sandbox needs user namespaces, which Docker's default seccomp profile refuses: run with
# --security-opt seccomp=unconfined (or a profile that allows clone/unshare of namespaces),
# or set FEATUREBOT__AGENT__SANDBOX=off to run the commands unconfined.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates libssl3 bubblewrap \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 featurebot \
 && mkdir -p /data /repo /config \
 && chown featurebot:featurebot /data /repo
COPY --from=build /src/target/release/featurebot /usr/local/bin/featurebot
USER featurebot
ENV FEATUREBOT__STORE__PATH=/data/store \
    FEATUREBOT__REPO__PATH=/repo
VOLUME ["/data", "/repo"]
# config.toml is read from the working folder when present; without it, the environment
# alone configures the bot.
WORKDIR /config
ENTRYPOINT ["featurebot"]
CMD ["check"]
