# syntax=docker/dockerfile:1
# Images for docker-compose.yml (users' machines), all on Debian 12 like the
# development machines, so the library versions are the tested ones.
#
#   build     compiles ./idstream with `make` (warnings are errors)
#   idstream  runtime image: the binary and its shared libraries, non-root
#   slapd     OpenLDAP from Debian with the project's directory layout
#             (scripts/slapd-config.ldif: mdb, memberOf, refint, ppolicy)
#
#   docker build --target idstream -t idstream .
#   docker build --target slapd -t idstream-slapd .

FROM debian:bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config librdkafka-dev librocksdb-dev libavro-dev \
      libjansson-dev libldap-dev libcurl4-openssl-dev liblua5.4-dev \
      libmicrohttpd-dev libssl-dev libcsv-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j"$(nproc)" build/idstream

FROM debian:bookworm-slim AS idstream
# The run-time halves of the -dev packages above.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka1 librocksdb7.8 libavro23 libjansson4 libldap-2.5-0 libcurl4 \
      liblua5.4-0 libmicrohttpd12 libssl3 libcsv3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/idstream --create-home idstream
COPY --from=build /src/build/idstream /usr/local/bin/idstream
USER idstream
WORKDIR /var/lib/idstream
ENTRYPOINT ["/usr/local/bin/idstream"]
CMD ["--help"]

FROM debian:bookworm-slim AS slapd
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      slapd ldap-utils \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/slapd-config.ldif scripts/slapd-base.ldif /usr/share/idstream/ldap/
COPY scripts/docker-slapd.sh /usr/local/bin/docker-slapd
EXPOSE 389
VOLUME ["/var/lib/idstream-ldap"]
ENTRYPOINT ["/bin/sh", "/usr/local/bin/docker-slapd"]
