FROM busybox
RUN --mount=type=ssh git clone x
