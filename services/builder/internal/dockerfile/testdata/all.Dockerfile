# escape=\
ARG BASE=busybox
ARG V=1
FROM ${BASE}:latest AS build
ARG V
ARG W=two
ENV A=1 B="x y" \
    C=$V-${W}
ENV LEGACY old style
MAINTAINER someone <s@example.com>
LABEL version=$V "quoted key"=val
EXPOSE 80 53/udp 8000-8001
USER nobody:nogroup
VOLUME /data
VOLUME ["/logs", "/cache"]
STOPSIGNAL SIGQUIT
WORKDIR /srv
WORKDIR app
ONBUILD RUN echo triggered
HEALTHCHECK --interval=5m --timeout=3s --retries=3 CMD wget -q -O- http://localhost/ || exit 1
SHELL ["/bin/sh", "-ec"]
RUN echo "$A $C" \
    && echo done
RUN ["echo", "exec form"]
RUN <<EOF
echo from a heredoc
EOF
COPY --chown=1:2 --chmod=0644 a.txt b/ /dst/
ADD https://example.com/x.tgz /x/
ENTRYPOINT ["/bin/app"]
CMD exec run --verbose
FROM scratch
COPY --from=build /srv/app /app
CMD ["/app"]
