FROM busybox
RUN --mount=type=secret,id=npmrc cat /run/secrets/npmrc
