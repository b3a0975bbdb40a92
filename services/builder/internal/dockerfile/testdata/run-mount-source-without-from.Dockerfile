FROM busybox
RUN --mount=type=cache,target=/x,source=/y echo
