FROM busybox
RUN --mount=type=ssh,source=x true
